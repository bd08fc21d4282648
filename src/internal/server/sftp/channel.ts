/**
 * The SFTP subsystem on an SSH session channel: our own SFTP server (`server.ts`) on the raw
 * channel ssh2 hands over for `subsystem sftp` — not ssh2's server-mode SFTP, which answers
 * without extensions and without flow control (see FACTS.md).
 *
 * How the channel ends matters to OpenSSH clients: when the client ends its side (EOF), every
 * outstanding request is answered, then the server sends `exit-status 0` (`scp` in SFTP mode
 * fails without it), EOF and CLOSE (`sftp` waits at `bye` until the server closes).
 *
 * File operations run as the login user, as OpenSSH runs `sftp-server` as the logged-in user: the
 * sandbox's `fileSystemFor(user)` is acquired for the life of the channel. When it cannot be had
 * (an unknown user, a transport that refuses that user), the channel gets the reason on stderr and
 * `exit-status 1`, and the connection lives on.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as ssh2 from "ssh2"
import type { Sandbox, SandboxFileSystem } from "../../../Sandbox.js"
import { flushed } from "../../transport/writable.js"
import { channelClosed } from "../channel.js"
import * as ChannelInput from "../channelInput.js"
import { serve } from "./server.js"

/** @internal */
export interface SftpChannelOptions {
  /** The transport's default file operations, used when `fileSystemFor` is absent. */
  readonly fs: SandboxFileSystem
  /**
   * The sandbox's `fileSystemFor`: the session's file operations are `fileSystemFor(user)`.
   * Transports without users of their own lack it (`MemorySandbox`, whose files have no
   * permissions to check); their sessions use `fs` whoever logged in.
   */
  readonly fileSystemFor?: Sandbox["fileSystemFor"]
  /** The login user the session belongs to; kept in the logs too. */
  readonly user: string
  readonly maxInFlight?: number | undefined
  readonly maxHandles?: number | undefined
}

/**
 * Serves SFTP on `channel` until the client ends it or closes it. Never fails: a malformed packet
 * or a failed channel is logged and closes the channel.
 *
 * @internal
 */
export const serveChannel = (channel: ssh2.ServerChannel, options: SftpChannelOptions): Effect.Effect<void> =>
  Effect.gen(function*() {
    const fs = yield* Effect.either(
      options.fileSystemFor === undefined ? Effect.succeed(options.fs) : options.fileSystemFor(options.user)
    )
    if (fs._tag === "Left") {
      // as sshd when sftp-server cannot start: a reason on stderr, a failed exit, the channel ends
      yield* Effect.logWarning("SFTP session refused", fs.left)
      channel.stderr.write(`sandbox-ssh: ${fs.left.message}\n`)
      yield* flushed(channel.stderr)
      channel.exit(1)
      channel.end()
      return
    }
    // ssh2's channel copies each write into its packets before it calls back; what it reads are
    // views lent by the buffers they arrived in (`channelInput.ts`)
    ChannelInput.lendTo(channel)
    yield* serve(channel, channel, {
      ...options,
      fs: fs.right,
      outputCopiesWrites: true,
      releaseInput: (chunk) => {
        // only when the server is the channel's one reader: no one else has seen the bytes yet
        if (channel.listenerCount("data") === 1) ChannelInput.giveBack(chunk)
      }
    }).pipe(
      Effect.matchCauseEffect({
        onSuccess: () =>
          Effect.sync(() => {
            channel.exit(0)
            channel.end()
          }),
        onFailure: (cause) =>
          Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logWarning("SFTP session closed", cause)
      })
    )
  }).pipe(
    Effect.raceFirst(channelClosed(channel)),
    Effect.ensuring(Effect.sync(() => channel.close())),
    // the user's file operations are released after the channel closed: the client is not kept
    // waiting for them
    Effect.scoped,
    Effect.withLogSpan("sandbox-ssh.sftp"),
    Effect.annotateLogs({ subsystem: "sftp", user: options.user })
  )
