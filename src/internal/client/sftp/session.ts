/**
 * One SFTP channel: opening it, its state (open, closed by us, lost), requests as Effects, and
 * the file handles it has open (closed before the channel ends).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type * as Scope from "effect/Scope"
import type * as ssh2 from "ssh2"
import { ChannelError, ConnectionError, SftpError, type SftpErrorReason, type SshError } from "../../../SshError.js"
import type { ClientState } from "../process.js"
import { fromSsh2Error } from "./attributes.js"
import * as DataViews from "./dataViews.js"
import { internalsOf } from "./ssh2Internals.js"

/**
 * Requests of one transfer in flight at once. With requests of the server's size (255 KiB from our
 * server) 16 keep 4 MiB outstanding, twice the SSH channel's 2 MiB window, which stays full
 * (OpenSSH's sftp keeps 64 × 32 KiB = 2 MiB). 64 requests went no faster and kept the rest
 * queued in ssh2: +112 MiB RSS over a 1 GiB `writeSink`, against +56 MiB with 16.
 *
 * @internal
 */
export const MAX_IN_FLIGHT = 16

/** ssh2's default request size without `limits@openssh.com` (its `_maxReadLen`), a safe fallback. */
const FALLBACK_REQUEST_LENGTH = 34000 - 2048

/** @internal */
export interface Session {
  readonly sftp: ssh2.SFTPWrapper
  readonly maxReadLength: number
  readonly maxWriteLength: number
  readonly extensions: Readonly<Record<string, string>>
  /** Why the session can take no more requests, if it cannot. */
  readonly gone: () => SftpErrorReason | undefined
  /** An ssh2 callback error as an `SftpError`. */
  readonly error: (error: unknown, operation: string, path?: string) => SftpError
  /** Fails when the session can take no more requests. */
  readonly ensureOpen: (operation: string, path?: string) => Effect.Effect<void, SftpError>
  /** Sends one request; `send` must call back exactly once (ssh2 does, even when the channel ends). */
  readonly request: <A = void>(
    operation: string,
    path: string | undefined,
    send: (callback: (error: Error | null | undefined, value?: A) => void) => void
  ) => Effect.Effect<A, SftpError>
  /** Opens a file handle that is closed with the scope (or with the session). */
  readonly openHandle: (path: string, flags: number, mode?: number) => Effect.Effect<Buffer, SftpError, Scope.Scope>
  /** Opens a directory handle that is closed with the scope (or with the session). */
  readonly openDirectory: (path: string) => Effect.Effect<Buffer, SftpError, Scope.Scope>
  /** Closes a handle opened by this session, once; later calls do nothing. */
  readonly closeHandle: (handle: Buffer, path: string) => Effect.Effect<void, SftpError>
  /** Closes every handle and ends the channel. Idempotent, never fails. */
  readonly close: Effect.Effect<void>
}

const requestLength = (value: unknown): number =>
  typeof value === "number" && Number.isFinite(value) && value > 0 ? value : FALLBACK_REQUEST_LENGTH

const openChannel = (state: ClientState): Effect.Effect<ssh2.SFTPWrapper, SshError> =>
  Effect.async<ssh2.SFTPWrapper, SshError>((resume) => {
    let cancelled = false
    try {
      state.client.sftp((error, sftp) => {
        if (cancelled) {
          sftp?.end()
          return
        }
        if (!error) return resume(Effect.succeed(sftp))
        const lost = state.lostReason()
        if (lost !== undefined) return resume(Effect.fail(lost))
        if (/^Unable to start subsystem/.test(error.message)) {
          return resume(Effect.fail(
            new SftpError({
              reason: "Unsupported",
              operation: "open session",
              detail: "the server refused the sftp subsystem (SFTP is disabled for this client)",
              cause: error
            })
          ))
        }
        if (/Channel open failure/.test(error.message)) {
          return resume(Effect.fail(new ChannelError({ reason: "Refused", detail: error.message, cause: error })))
        }
        resume(Effect.fail(
          new SftpError({ reason: "NoConnection", operation: "open session", detail: error.message, cause: error })
        ))
      })
    } catch (error) {
      resume(Effect.fail(
        state.lostReason() ??
          new ConnectionError({ reason: "Closed", detail: "the client is not connected", cause: error })
      ))
    }
    return Effect.sync(() => {
      cancelled = true
    })
  })

const channelClosed = (sftp: ssh2.SFTPWrapper): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (internalsOf(sftp).incoming?.state === "closed") return resume(Effect.void)
    const done = () => resume(Effect.void)
    sftp.once("close", done)
    return Effect.sync(() => sftp.removeListener("close", done))
  })

/**
 * Opens the SFTP channel; closing the scope closes the session.
 *
 * @internal
 */
export const openSession = (state: ClientState): Effect.Effect<Session, SshError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* state.ensureOpen
    const session = yield* Effect.acquireRelease(
      Effect.map(openChannel(state), (sftp) => makeSession(sftp, state)),
      (session) => session.close
    )
    return session
  })

const makeSession = (sftp: ssh2.SFTPWrapper, state: ClientState): Session => {
  const internals = internalsOf(sftp)
  // reads take their replies' bytes as views of the packets that carried them (dataViews.ts)
  DataViews.install(sftp)
  let closed = false
  let lost: string | undefined = undefined
  const handles = new Set<Buffer>()
  const onClose = () => {
    lost ??= "the SFTP channel closed"
  }
  const onError = (error: Error) => {
    lost ??= error.message
  }
  // Kept for the channel's life: an "error" event without a listener would throw.
  sftp.on("close", onClose)
  sftp.on("error", onError)

  // Closed by us (the session, or the whole client): NoConnection. Ended by anything else:
  // ConnectionLost. ssh2 marks the channel closed before it fails the outstanding requests.
  const gone = (): SftpErrorReason | undefined => {
    if (closed || state.lostReason()?.reason === "Closed") return "NoConnection"
    if (
      lost !== undefined || state.lostReason() !== undefined || internals.outgoing?.state !== "open" ||
      internals.incoming?.state === "closed"
    ) return "ConnectionLost"
    return undefined
  }

  const goneError = (operation: string, path: string | undefined): SftpError | undefined => {
    const reason = gone()
    if (reason === undefined) return undefined
    return new SftpError({
      reason,
      operation,
      path,
      detail: closed
        ? "the SFTP session was closed"
        : state.lostReason()?.detail ?? lost ?? "the SFTP channel is closed"
    })
  }

  const error = (cause: unknown, operation: string, path?: string) => fromSsh2Error(cause, operation, path, gone)

  const ensureOpen = (operation: string, path?: string) =>
    Effect.suspend(() => {
      const failure = goneError(operation, path)
      return failure === undefined ? Effect.void : Effect.fail(failure)
    })

  const request = <A = void>(
    operation: string,
    path: string | undefined,
    send: (callback: (error: Error | null | undefined, value?: A) => void) => void
  ): Effect.Effect<A, SftpError> =>
    Effect.async<A, SftpError>((resume) => {
      const failure = goneError(operation, path)
      if (failure !== undefined) return resume(Effect.fail(failure))
      try {
        send((cause, value) => {
          if (cause) resume(Effect.fail(error(cause, operation, path)))
          else resume(Effect.succeed(value as A))
        })
      } catch (cause) {
        // ssh2 throws synchronously for requests the server did not announce (extensions).
        const message = cause instanceof Error ? cause.message : String(cause)
        if (/not support/i.test(message)) {
          resume(Effect.fail(new SftpError({ reason: "Unsupported", operation, path, detail: message, cause })))
        } else {
          resume(Effect.die(cause))
        }
      }
    })

  const closeHandle = (handle: Buffer, path: string): Effect.Effect<void, SftpError> =>
    Effect.suspend(() => {
      if (!handles.delete(handle)) return Effect.void
      return request<void>("close", path, (cb) => sftp.close(handle, cb))
    })

  const release = (handle: Buffer, path: string) =>
    closeHandle(handle, path).pipe(Effect.ignore, Effect.timeoutOption("5 seconds"), Effect.asVoid)

  const openHandle = (path: string, flags: number, mode?: number) =>
    Effect.acquireRelease(
      Effect.tap(
        request<Buffer>("open", path, (cb) => sftp.open(path, flags, mode === undefined ? {} : { mode }, cb)),
        (handle) => Effect.sync(() => handles.add(handle))
      ),
      (handle) => release(handle, path)
    )

  const openDirectory = (path: string) =>
    Effect.acquireRelease(
      Effect.tap(
        request<Buffer>("opendir", path, (cb) => sftp.opendir(path, cb)),
        (handle) => Effect.sync(() => handles.add(handle))
      ),
      (handle) => release(handle, path)
    )

  // The first close does the work; concurrent and later ones wait for it.
  const closeDone = Deferred.unsafeMake<void>(FiberId.none)
  let closing = false
  const close = Effect.suspend(() => {
    if (closing) return Deferred.await(closeDone)
    closing = true
    const closeAll = Effect.forEach([...handles], (handle) => release(handle, "<open handle>"), {
      concurrency: "unbounded",
      discard: true
    })
    return closeAll.pipe(
      Effect.zipRight(Effect.sync(() => {
        closed = true
        sftp.end()
      })),
      Effect.zipRight(channelClosed(sftp).pipe(Effect.timeoutOption("2 seconds"))),
      Effect.ensuring(Effect.sync(() => {
        closed = true
        Deferred.unsafeDone(closeDone, Exit.void)
      })),
      Effect.asVoid
    )
  }).pipe(Effect.uninterruptible)

  const extensions = internals._extensions
  return {
    sftp,
    maxReadLength: requestLength(internals._maxReadLen),
    maxWriteLength: requestLength(internals._maxWriteLen),
    extensions: typeof extensions === "object" && extensions !== null
      ? { ...(extensions as Record<string, string>) }
      : {},
    gone,
    error,
    ensureOpen,
    request,
    openHandle,
    openDirectory,
    closeHandle,
    close
  }
}
