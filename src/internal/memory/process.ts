/**
 * The command runner: a spawned process is a fiber running the matched handler, with mailboxes
 * for its stdin, stdout and stderr.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as MemorySandbox from "../../MemorySandbox.js"
import * as Sandbox from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import { commandLine, type CompiledHandler } from "./command.js"
import { makeFileSystem, type MemoryTree, runSync } from "./fileSystem.js"
import * as Pipe from "./pipe.js"

/** Linux signal numbers; the memory sandbox behaves as a Linux host whatever the host is. */
const SIGNALS: Readonly<Record<string, number>> = {
  HUP: 1,
  INT: 2,
  QUIT: 3,
  ILL: 4,
  TRAP: 5,
  ABRT: 6,
  BUS: 7,
  FPE: 8,
  KILL: 9,
  USR1: 10,
  SEGV: 11,
  USR2: 12,
  PIPE: 13,
  ALRM: 14,
  TERM: 15
}

/** @internal */
export const signalNumber = (signal: string): number | undefined => SIGNALS[signal.replace(/^SIG/, "")]

const FINALIZER_TIMEOUT = Duration.seconds(5)
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/** What processes share with their sandbox. @internal */
export interface Runner {
  readonly tree: MemoryTree
  readonly shell: string
  readonly workdir: string
  readonly user: string
  readonly env: Readonly<Record<string, string>>
  readonly handlers: ReadonlyArray<CompiledHandler>
  readonly fallback: "not-found" | MemorySandbox.HandlerFn
  /** The sandbox's scope: every process is interrupted when it closes. */
  readonly scope: Scope.Scope
  readonly nextPid: () => number
  readonly isClosed: () => boolean
}

const notFound = (program: string): MemorySandbox.HandlerResult =>
  // `sh -c ""` does nothing, successfully.
  program === "" ? { exitCode: 0 } : { stderr: `sh: 1: ${program}: not found\n`, exitCode: 127 }

const toExit = (result: MemorySandbox.HandlerResult): Sandbox.ProcessExit => {
  if (result.signal !== undefined) {
    const n = signalNumber(result.signal)
    if (n === undefined) throw new Error(`MemorySandbox: a handler returned an unknown signal ${result.signal}`)
    return Sandbox.ProcessExit.Signaled({ signal: result.signal, code: 128 + n, coreDumped: false })
  }
  return Sandbox.ProcessExit.Exited({ code: (result.exitCode ?? 0) & 0xff })
}

const spawnFailed = (detail: string, path?: string) =>
  new SandboxError({ reason: "SpawnFailed", operation: "spawn", detail, ...(path === undefined ? {} : { path }) })

/** @internal */
export const spawn = (
  runner: Runner,
  options: Sandbox.SpawnOptions
): Effect.Effect<Sandbox.SandboxProcess, SandboxError, Scope.Scope> =>
  Effect.gen(function*() {
    if (runner.isClosed()) {
      return yield* new SandboxError({ reason: "Closed", operation: "spawn", detail: "the sandbox is closed" })
    }
    const requested = options.cwd ?? runner.workdir
    const cwd = yield* Effect.try({
      try: () => runSync("spawn", requested, () => runner.tree.workingDirectory(requested, runner.workdir)),
      catch: (error) =>
        spawnFailed(
          `cannot change to the working directory: ${error instanceof SandboxError ? error.detail : String(error)}`,
          requested
        )
    })

    const command = commandLine(runner.shell, options)
    const user = options.user ?? runner.user
    const run = runner.handlers.find((handler) => handler.matches(command.line))?.run
      ?? (runner.fallback === "not-found" ? notFound(command.program) : runner.fallback)

    // The signal that interrupts the handler; closing the spawn's scope kills.
    let signal: Sandbox.SignalName = "KILL"
    // Writing to a pipe nobody reads any more kills the writer, as SIGPIPE does.
    const brokenPipe = Effect.zipRight(
      Effect.sync(() => {
        signal = "PIPE"
      }),
      Effect.interrupt
    )
    const stdin = yield* Pipe.make(Effect.void)
    const stdout = yield* Pipe.make(brokenPipe)
    const stderr = options.pty === undefined ? yield* Pipe.make(brokenPipe) : stdout
    const exit = yield* Deferred.make<Sandbox.ProcessExit, SandboxError>()
    const size = options.pty === undefined
      ? undefined
      : yield* SubscriptionRef.make<Sandbox.WindowSize>({ cols: options.pty.cols, rows: options.pty.rows })

    const context: MemorySandbox.HandlerContext = {
      command: command.line,
      args: command.args,
      env: {
        PATH: DEFAULT_PATH,
        HOME: runner.workdir,
        USER: user,
        LOGNAME: user,
        SHELL: runner.shell,
        ...(options.pty === undefined ? {} : { TERM: options.pty.term }),
        ...runner.env,
        PWD: cwd,
        ...options.env
      },
      cwd,
      user,
      stdin: stdin.readEnd,
      stdout: stdout.write,
      stderr: stderr.write,
      pty: options.pty === undefined || size === undefined
        ? undefined
        : { term: options.pty.term, size: SubscriptionRef.get(size), sizes: size.changes },
      fs: makeFileSystem(runner.tree, cwd)
    }

    const program = Effect.gen(function*() {
      const result = typeof run === "function"
        ? yield* Effect.suspend(() => run(context)).pipe(
          Effect.catchAll((error) =>
            Effect.as(context.stderr(`${command.program || runner.shell}: ${error.message}\n`), { exitCode: 1 })
          )
        )
        : run
      const outcome: MemorySandbox.HandlerResult = result ?? {}
      if (outcome.stdout !== undefined) yield* context.stdout(outcome.stdout)
      if (outcome.stderr !== undefined) yield* context.stderr(outcome.stderr)
      return toExit(outcome)
    })

    const finish = (result: Exit.Exit<Sandbox.ProcessExit>) =>
      Effect.gen(function*() {
        yield* stdout.mailbox.end
        yield* stderr.mailbox.end
        yield* stdin.mailbox.shutdown
        if (Exit.isSuccess(result)) {
          yield* Deferred.succeed(exit, result.value)
        } else if (Cause.isInterruptedOnly(result.cause)) {
          const n = signalNumber(signal) ?? 9
          yield* Deferred.succeed(exit, Sandbox.ProcessExit.Signaled({ signal, code: 128 + n, coreDumped: false }))
        } else {
          yield* Deferred.failCause(exit, result.cause)
        }
      })

    const fiber = yield* Effect.acquireRelease(
      // The outcome reaches `exit` through `finish`. The fork would inherit the acquisition's
      // uninterruptibility, and a process must stay killable.
      program.pipe(Effect.interruptible, Effect.onExit(finish), Effect.exit, Effect.forkIn(runner.scope)),
      (fiber) => Fiber.interrupt(fiber).pipe(Effect.timeoutOption(FINALIZER_TIMEOUT), Effect.asVoid)
    )

    const process: Sandbox.SandboxProcess = {
      pid: runner.nextPid(),
      stdin: stdin.inputSink,
      stdout: stdout.readEnd,
      stderr: options.pty === undefined ? stderr.readEnd : Stream.empty,
      exit: Deferred.await(exit),
      signal: (name) =>
        Effect.gen(function*() {
          if (signalNumber(name) === undefined) {
            return yield* new SandboxError({
              reason: "InvalidArgument",
              operation: "signal",
              detail: `unknown signal ${name}`
            })
          }
          if (yield* Deferred.isDone(exit)) return
          signal = name.replace(/^SIG/, "")
          yield* Fiber.interrupt(fiber)
        }),
      resize: (windowSize) =>
        size === undefined
          ? Effect.fail(
            new SandboxError({ reason: "Unsupported", operation: "resize", detail: "the process has no terminal" })
          )
          : SubscriptionRef.set(size, { cols: windowSize.cols, rows: windowSize.rows })
    }
    return process
  })
