/**
 * One exec'd process of a container as a `SandboxProcess`: `POST /containers/{id}/exec`, then
 * `POST /exec/{id}/start` hijacked into a raw stream (stdin in, stdout/stderr out; multiplexed
 * without a TTY), exit code from `/exec/{id}/json`, resize through `/exec/{id}/resize`, signals
 * from the host to the exec's host pid (see `host.ts`).
 *
 * The Engine reports a death by signal as exit code `128 + n`, like a shell. When we delivered
 * signal `n` ourselves and the code is `128 + n`, the exit is reported as `Signaled`; a process that
 * died by a signal from anyone else is indistinguishable from one that exited with that code, and
 * is reported as `Exited` (what `docker exec` reports too).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Net from "node:net"
import type { PassThrough } from "node:stream"
import { ProcessExit, type SandboxProcess, type SignalName, type WindowSize } from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import * as ReadableStream from "../readableStream.js"
import { checkResize, notStartedProcess, stdinError, streamError } from "../sandboxProcess.js"
import type { Engine } from "./engine.js"
import * as Host from "./host.js"
import * as Streams from "./streams.js"

/** What the process runs against. @internal */
export interface Target {
  readonly engine: Engine
  /** Container id. */
  readonly container: string
  /** As the user named it, for messages. */
  readonly name: string
  /** Engine API version as a number, e.g. `1.41`. */
  readonly apiVersion: number
  /** The daemon's processes are visible here (it runs on this host): signals can be sent. */
  readonly local: boolean
  /** Called with the host pid and start time of each started command (process group leader). */
  readonly started: (pid: number, startTime: number) => void
  /** Called when that group has no members left. */
  readonly ended: (pid: number) => void
}

/** @internal */
export interface ExecOptions {
  readonly argv: ReadonlyArray<string>
  readonly env: ReadonlyArray<string>
  readonly user?: string | undefined
  readonly cwd?: string | undefined
  readonly pty?: WindowSize | undefined
  /** For messages: the command as the caller named it. */
  readonly command: string
  /** Bytes of stdout buffered here before the stream pushes back on the daemon. Default 1 MiB. */
  readonly outputBuffer?: number | undefined
}

interface ExecInspect {
  readonly Running: boolean
  readonly ExitCode: number | null
  readonly Pid: number
}

/** A command the runtime could not start, reported as a shell would: 127 not found, else 126. */
const notStarted = (message: string): SandboxProcess => {
  const text = message.trim()
  return notStartedProcess(text, /not found|no such file/i.test(text) ? 127 : 126)
}

/** Resolves once the socket's output ended or it closed. */
const whenEnded = (socket: Net.Socket, ended: Deferred.Deferred<void>) => {
  const done = () => Deferred.unsafeDone(ended, Effect.void)
  if (socket.readableEnded || socket.destroyed) return done()
  socket.once("end", done)
  socket.once("close", done)
}

/** Resolves at the first output (or end) of the socket, or after `millis`. */
const firstActivity = (socket: Net.Socket, millis: number) =>
  Effect.async<void>((resume) => {
    if (socket.readableEnded || socket.destroyed) return resume(Effect.void)
    const done = () => {
      cleanup()
      resume(Effect.void)
    }
    const timer = setTimeout(done, millis)
    const cleanup = () => {
      clearTimeout(timer)
      socket.removeListener("data", done)
      socket.removeListener("end", done)
      socket.removeListener("close", done)
    }
    socket.once("data", done)
    socket.once("end", done)
    socket.once("close", done)
    return Effect.sync(cleanup)
  })

/**
 * A started exec with its raw Node streams, for the transport's own helpers (file transfers, the
 * file agent) that parse its output themselves.
 *
 * @internal
 */
export interface Started {
  readonly _tag: "Started"
  readonly pid: number
  readonly tty: boolean
  readonly socket: Net.Socket
  readonly stdout: PassThrough
  readonly stderr: PassThrough
  /** Resolves when the output stream ended (the process is gone, or closed its output). */
  readonly ended: Deferred.Deferred<void>
  readonly exit: Effect.Effect<ProcessExit, SandboxError>
  readonly signal: (signal: SignalName) => Effect.Effect<void, SandboxError>
  readonly resize: (size: WindowSize) => Effect.Effect<void, SandboxError>
}

/** @internal */
export interface NotStarted {
  readonly _tag: "NotStarted"
  readonly message: string
}

/**
 * Starts a process in the current scope. It returns once the runtime started the command (its
 * host pid is known) or failed to. Closing the scope kills the command's process tree if it still
 * runs.
 *
 * @internal
 */
export const start = (
  target: Target,
  options: ExecOptions
): Effect.Effect<Started | NotStarted, SandboxError, Scope.Scope> =>
  Effect.gen(function*() {
    const { engine } = target
    const tty = options.pty !== undefined
    const consoleSize = options.pty !== undefined && target.apiVersion >= 1.42
      ? [options.pty.rows, options.pty.cols]
      : undefined
    const created = yield* engine.json<{ readonly Id: string }>({
      method: "POST",
      path: `/containers/${encodeURIComponent(target.container)}/exec`,
      operation: "spawn",
      subject: target.name,
      body: {
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: tty,
        Cmd: options.argv,
        Env: options.env,
        ...(options.user === undefined ? {} : { User: options.user }),
        ...(options.cwd === undefined ? {} : { WorkingDir: options.cwd }),
        ...(consoleSize === undefined ? {} : { ConsoleSize: consoleSize })
      }
    })
    const id = created.Id
    const inspect = engine.json<ExecInspect>({
      method: "GET",
      path: `/exec/${id}/json`,
      operation: "spawn",
      subject: target.name
    })
    const socket = yield* engine.hijack({
      method: "POST",
      path: `/exec/${id}/start`,
      operation: "spawn",
      subject: target.name,
      body: { Detach: false, Tty: tty, ...(consoleSize === undefined ? {} : { ConsoleSize: consoleSize }) }
    })
    const { stderr, stdout } = Streams.outputs(socket, tty, options.outputBuffer)
    const ended = yield* Deferred.make<void>()
    whenEnded(socket, ended)

    // Wait until the runtime started the command (a pid) or gave up (not running, no pid).
    let state = yield* Effect.zipRight(firstActivity(socket, 40), inspect)
    while (state.Pid <= 0 && state.Running) {
      state = yield* Effect.zipRight(firstActivity(socket, 10), inspect)
    }
    if (state.Pid <= 0) {
      const message = yield* Streams.readAll(stdout)
      return {
        _tag: "NotStarted",
        message: message.toString("utf8") || `${options.command}: could not be started`
      } satisfies NotStarted
    }
    const pid = state.Pid
    // -1: the command already ended (its group may live on in background jobs)
    const startTime = Host.startTime(pid) ?? -1
    target.started(pid, startTime)
    const alive = () => startTime >= 0 && Host.startTime(pid) === startTime

    const sent = new Set<number>()
    const exited = yield* Deferred.make<ProcessExit, SandboxError>()
    // a command that is already done (e.g. `true`) needs no second look
    const known = state.Running ? undefined : state
    const awaitExit = Effect.gen(function*() {
      yield* Deferred.await(ended)
      const final = known ?? (yield* inspect.pipe(
        Effect.filterOrFail((info) => !info.Running, () => "running" as const),
        Effect.retry({
          schedule: Schedule.exponential(Duration.millis(2), 1.5).pipe(
            Schedule.union(Schedule.spaced(Duration.millis(250)))
          ),
          while: (error) => error === "running"
        }),
        Effect.catchIf((error): error is "running" => error === "running", () =>
          Effect.fail(
            new SandboxError({ reason: "TransportFailed", operation: "process exit", detail: "still running" })
          ))
      ))
      if (final.ExitCode === null) {
        return yield* Effect.fail(
          new SandboxError({
            reason: "TransportFailed",
            operation: "process exit",
            path: target.name,
            detail: "the Docker Engine reported no exit code for the process"
          })
        )
      }
      const code = final.ExitCode
      const signal = code > 128 && sent.has(code - 128) ? Host.signalName(code - 128) : undefined
      return signal === undefined
        ? ProcessExit.Exited({ code })
        : ProcessExit.Signaled({ signal, code, coreDumped: false })
    })
    // not tied to the scope: closing it kills the command, and `exit` then reports that death
    yield* Effect.forkDaemon(Effect.intoDeferred(awaitExit, exited))

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const done = yield* Deferred.isDone(ended)
        if (!done && alive()) {
          sent.add(Host.signalNumber("KILL")!)
          Host.killTree(pid)
        }
        // nobody reads the output once the scope closes: unread output must not hold the end back
        socket.destroy()
        stdout.destroy()
        stderr.destroy()
        yield* Effect.timeoutOption(Effect.ignore(Deferred.await(exited)), Duration.seconds(5))
        if (!Host.groupHasMembers(pid)) target.ended(pid)
      })
    )

    const signal = (name: SignalName): Effect.Effect<void, SandboxError> =>
      Effect.suspend(() => {
        const number = Host.signalNumber(name)
        if (number === undefined) {
          return Effect.fail(
            new SandboxError({ reason: "InvalidArgument", operation: "signal", detail: `unknown signal ${name}` })
          )
        }
        if (!target.local) {
          return Effect.fail(
            new SandboxError({
              reason: "Unsupported",
              operation: "signal",
              path: target.name,
              detail: "the Engine API cannot signal an exec'd process, and the Docker daemon does not run on this " +
                "host (its container processes are not visible here), so it cannot be signalled from here either"
            })
          )
        }
        return Effect.flatMap(Deferred.isDone(ended), (done) => {
          if (done || !alive()) return Effect.void
          sent.add(number)
          const result = Host.signalGroup(pid, `SIG${name}` as NodeJS.Signals)
          return result === "denied"
            ? Effect.fail(
              new SandboxError({
                reason: "PermissionDenied",
                operation: "signal",
                path: target.name,
                detail: `not allowed to signal host pid ${pid} of the container's process ` +
                  "(signals are sent from this host: run as root or as the Docker daemon's user)"
              })
            )
            : Effect.void
        })
      })

    const resize = (size: WindowSize): Effect.Effect<void, SandboxError> =>
      Effect.zipRight(
        checkResize(tty, size),
        engine.request({
          method: "POST",
          path: `/exec/${id}/resize`,
          query: { h: size.rows, w: size.cols },
          operation: "resize",
          subject: target.name
        }).pipe(
          Effect.asVoid,
          // a process that just ended cannot be resized; that is not the caller's error
          Effect.catchIf((error) => error.reason === "Closed" || error.reason === "NotFound", () => Effect.void)
        )
      )

    return {
      _tag: "Started",
      pid,
      tty,
      socket,
      stdout,
      stderr,
      ended,
      exit: Deferred.await(exited),
      signal,
      resize
    } satisfies Started
  })

/**
 * Starts a process in the current scope as a `SandboxProcess`. A command the runtime could not
 * start exits 127 (not found) or 126 with the runtime's message on stderr, as a shell reports it.
 *
 * @internal
 */
export const spawn = (target: Target, options: ExecOptions): Effect.Effect<SandboxProcess, SandboxError, Scope.Scope> =>
  Effect.map(
    start(target, options),
    (started): SandboxProcess =>
      started._tag === "NotStarted" ? notStarted(started.message) : {
        pid: started.pid,
        stdin: Streams.inputSink(started.socket, stdinError, { tty: started.tty }),
        stdout: ReadableStream.fromReadable(() => started.stdout, streamError("process stdout")),
        stderr: ReadableStream.fromReadable(() => started.stderr, streamError("process stderr")),
        exit: started.exit,
        signal: started.signal,
        resize: started.resize
      }
  )
