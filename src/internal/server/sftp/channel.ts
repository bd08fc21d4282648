/**
 * The SFTP subsystem on an SSH session channel: our own SFTP server (`server.ts`) on the raw
 * channel ssh2 hands over for `subsystem sftp` — not ssh2's server-mode SFTP, which answers
 * without extensions and without flow control (see FACTS.md).
 *
 * How the channel ends matters to OpenSSH clients: when the client ends its side (EOF), every
 * outstanding request is answered, then the server sends `exit-status 0` (`scp` in SFTP mode
 * fails without it), EOF and CLOSE (`sftp` waits at `bye` until the server closes).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as ssh2 from "ssh2"
import type { SandboxFileSystem } from "../../../Sandbox.js"
import { serve } from "./server.js"

/** @internal */
export interface SftpChannelOptions {
  readonly fs: SandboxFileSystem
  /**
   * The login user the session belongs to. `SandboxFileSystem` has no notion of a user: file
   * operations run with the transport's own identity (the host process's user for a
   * non-isolated `LocalSandbox`, root for a `MemorySandbox`). The user is kept in the logs.
   */
  readonly user: string
  readonly maxInFlight?: number | undefined
  readonly maxHandles?: number | undefined
}

const isClosed = (channel: ssh2.ServerChannel): boolean =>
  (channel as unknown as { incoming?: { state?: string } }).incoming?.state === "closed"

const channelClosed = (channel: ssh2.ServerChannel): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (isClosed(channel)) return resume(Effect.void)
    const done = () => resume(Effect.void)
    channel.once("close", done)
    return Effect.sync(() => channel.removeListener("close", done))
  })

/**
 * Serves SFTP on `channel` until the client ends it or closes it. Never fails: a malformed packet
 * or a failed channel is logged and closes the channel.
 *
 * @internal
 */
export const serveChannel = (channel: ssh2.ServerChannel, options: SftpChannelOptions): Effect.Effect<void> =>
  serve(channel, channel, options).pipe(
    Effect.matchCauseEffect({
      onSuccess: () =>
        Effect.sync(() => {
          channel.exit(0)
          channel.end()
        }),
      onFailure: (cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logWarning("SFTP session closed", cause)
    }),
    Effect.raceFirst(channelClosed(channel)),
    Effect.ensuring(Effect.sync(() => channel.close())),
    Effect.withLogSpan("sandbox-ssh.sftp"),
    Effect.annotateLogs({ subsystem: "sftp", user: options.user })
  )
