/**
 * What every CLI entry shares: logs on stderr (stdout may be an SSH transport), failures reported
 * as one line a person can act on, SIGHUP handled like SIGTERM, and the Node runtime.
 *
 * @internal
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"

/** Effect's default logger writes to stdout; the CLI's stdout may carry SSH bytes. @internal */
export const StderrLogger = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))

/** @internal */
export const withLogging = (verbose: boolean) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Logger.withMinimumLogLevel(verbose ? LogLevel.Debug : LogLevel.Warning))

/** A person-readable line for a failure: the message of our typed errors, else the whole cause. */
const report = (cause: Cause.Cause<unknown>, silent: (error: unknown) => boolean): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    if (silent(error)) return ""
    if (error instanceof Error) return `sandbox-ssh: ${error.message}`
  }
  return `sandbox-ssh: ${Cause.pretty(cause)}`
}

/**
 * Runs a CLI program to completion: exit code 1 with a one-line report on failure (`silent` marks
 * failures already reported, e.g. the parser's own messages). `interruptOnHangup` makes SIGHUP
 * run the finalizers (the sandbox's runtime directory is removed) and exit with 129.
 *
 * @internal
 */
export const runCli = <E>(
  program: Effect.Effect<void, E>,
  options: { readonly silent?: (error: unknown) => boolean; readonly interruptOnHangup: boolean }
): void => {
  const silent = options.silent ?? (() => false)
  // OpenSSH ends a ProxyCommand with SIGHUP: treat it like SIGTERM (which runMain turns into
  // interruption), so `serve --stdio` runs its finalizers and leaves no sandbox directory behind.
  // The exit status still says "hung up" (128 + 1), as for a program the signal killed.
  if (options.interruptOnHangup) {
    process.once("SIGHUP", () => {
      process.once("exit", () => {
        process.exitCode = 129
      })
      process.emit("SIGTERM", "SIGTERM")
    })
  }
  program.pipe(
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause) ? Effect.void : Effect.sync(() => {
        const line = report(cause, silent)
        if (line !== "") process.stderr.write(`${line}\n`)
        process.exitCode = 1
      })
    ),
    NodeRuntime.runMain({ disableErrorReporting: true })
  )
}
