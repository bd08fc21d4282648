/**
 * Pieces every transport's `SandboxProcess` shares: error mapping for its streams, window-size
 * validation (and the `resize` checks built on it), and the process a command that could not start
 * becomes.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { ProcessExit, type SandboxProcess, type WindowSize } from "../Sandbox.js"
import { SandboxError } from "../SshError.js"

/** @internal */
export const streamError = (operation: string) => (cause: unknown) =>
  new SandboxError({
    reason: "TransportFailed",
    operation,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

/** @internal */
export const stdinError = (cause: unknown) =>
  new SandboxError({
    reason: "Closed",
    operation: "process stdin",
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

/** @internal */
export const isValidSize = (size: WindowSize): boolean =>
  Number.isInteger(size.cols) && Number.isInteger(size.rows) && size.cols > 0 && size.rows > 0 &&
  size.cols <= 65535 && size.rows <= 65535

/**
 * Why a `resize` cannot be done: the process has no terminal, or the size is not a valid one;
 * `Effect.void` when it can.
 *
 * @internal
 */
export const checkResize = (hasTerminal: boolean, size: WindowSize): Effect.Effect<void, SandboxError> => {
  if (!hasTerminal) {
    return Effect.fail(
      new SandboxError({ reason: "Unsupported", operation: "resize", detail: "the process has no terminal" })
    )
  }
  if (!isValidSize(size)) {
    return Effect.fail(
      new SandboxError({
        reason: "InvalidArgument",
        operation: "resize",
        detail: `terminal size must be positive integers, got ${size.cols}x${size.rows}`
      })
    )
  }
  return Effect.void
}

/**
 * A command that could not be started, reported as a shell would: the reason on stderr (unless
 * a terminal was asked for) and `code` (127 not found, 126 otherwise).
 *
 * @internal
 */
export const notStartedProcess = (reason: string, code: number, showReason = true): SandboxProcess => ({
  pid: -1,
  stdin: Sink.drain,
  stdout: Stream.empty,
  stderr: showReason ? Stream.make(new TextEncoder().encode(`sandbox-ssh: ${reason}\n`)) : Stream.empty,
  exit: Effect.succeed(ProcessExit.Exited({ code })),
  signal: () => Effect.void,
  resize: () => Effect.void
})
