/**
 * One host child process presented as a `SandboxProcess`: stdio as Effect streams/sinks, exit as an
 * Effect, signals to the command's process group, and a scope finalizer that kills the whole tree.
 * Both isolation modes launch through here; they differ only in the {@link Launch} they build.
 *
 * @internal
 */
import type * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import type { Readable, Writable } from "node:stream"
import { ProcessExit, type SandboxProcess, type SignalName, type WindowSize } from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import { withNodeStdio } from "../nodeStdio.js"
import * as Procfs from "../procfs.js"
import * as ReadableStream from "../readableStream.js"
import { checkResize, notStartedProcess, stdinError, streamError } from "../sandboxProcess.js"
import { signalNumber } from "../signals.js"
import { writeChunk } from "../transport/writable.js"

/**
 * What to start on the host, and how to reach the command it runs.
 *
 * @internal
 */
export interface Launch {
  readonly file: string
  readonly args: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
  /** Host working directory of the launched program (non-isolated mode). */
  readonly cwd?: string | undefined
  /** The program is the terminal helper: fd 3 carries its control protocol. */
  readonly pty: boolean
  /**
   * The host pid of the command's process group leader, once it is running. The launched program
   * may be a wrapper (`nsenter` forks the command), so this can differ from the launched pid.
   */
  readonly commandGroup: (launchedPid: number) => number | undefined
  /**
   * When the launched program cannot be started: `"exit"` reports it as a shell would (exit 127 or
   * 126 with the reason on stderr), `"fail"` fails with `SpawnFailed` (the launcher itself is
   * missing, which is the transport's fault, not the command's).
   */
  readonly onStartFailure: "exit" | "fail"
  /** The command as the user asked for it, for messages. */
  readonly command: string
}

type RawExit = readonly [code: number | null, signal: NodeJS.Signals | null]

interface ControlExit {
  readonly code?: number
  readonly signal?: string
  readonly coreDumped?: boolean
}

const toProcessExit = ([code, signal]: RawExit, control: ControlExit | undefined): ProcessExit => {
  if (control !== undefined) {
    if (typeof control.signal === "string") {
      return ProcessExit.Signaled({
        signal: control.signal,
        code: 128 + (signalNumber(control.signal) ?? 0),
        coreDumped: control.coreDumped === true
      })
    }
    if (typeof control.code === "number") return ProcessExit.Exited({ code: control.code })
  }
  if (signal !== null) {
    const name = signal.replace(/^SIG/, "")
    return ProcessExit.Signaled({ signal: name, code: 128 + (signalNumber(name) ?? 0), coreDumped: false })
  }
  return ProcessExit.Exited({ code: code ?? 1 })
}

/** A command that could not be started, reported as a shell would. */
const notStarted = (launch: Launch, error: NodeJS.ErrnoException): SandboxProcess => {
  const missingCwd = launch.cwd !== undefined && !Fs.existsSync(launch.cwd)
  const reason = missingCwd
    ? `cannot change directory to ${launch.cwd}: No such file or directory`
    : error.code === "ENOENT"
    ? `${launch.command}: not found`
    : `${launch.command}: ${error.code === "EACCES" ? "Permission denied" : error.message}`
  return notStartedProcess(reason, error.code === "ENOENT" ? 127 : 126, !launch.pty)
}

interface Running {
  readonly child: ChildProcess.ChildProcess
  readonly exit: Deferred.Deferred<RawExit>
  readonly control: { exit: ControlExit | undefined }
}

const start = (launch: Launch): Effect.Effect<Running | SandboxProcess, SandboxError> =>
  Effect.flatMap(Deferred.make<RawExit>(), (exit) =>
    Effect.async<Running | SandboxProcess, SandboxError>((resume) => {
      let child: ChildProcess.ChildProcess
      try {
        child = ChildProcess.spawn(launch.file, launch.args, {
          stdio: launch.pty ? ["pipe", "pipe", "pipe", "pipe"] : ["pipe", "pipe", "pipe"],
          env: launch.env,
          cwd: launch.cwd,
          // its own process group: terminal signals aimed at the host program do not reach it, and
          // the whole group can be killed at once
          detached: true
        })
      } catch (cause) {
        // e.g. a NUL byte in an argument
        resume(Effect.fail(
          new SandboxError({
            reason: "InvalidArgument",
            operation: "spawn",
            path: launch.command,
            detail: cause instanceof Error ? cause.message : String(cause),
            cause
          })
        ))
        return
      }
      const control: Running["control"] = { exit: undefined }
      let rawExit: RawExit | undefined
      let controlEnded = !launch.pty
      const maybeDone = () => {
        if (rawExit !== undefined && controlEnded) Deferred.unsafeDone(exit, Effect.succeed(rawExit))
      }
      if (launch.pty) {
        const socket = child.stdio[3] as Readable
        let buffered = ""
        socket.setEncoding("utf8")
        socket.on("data", (data: string) => {
          buffered += data
          let newline: number
          while ((newline = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, newline)
            buffered = buffered.slice(newline + 1)
            try {
              const message = JSON.parse(line) as { exit?: ControlExit }
              if (message.exit !== undefined) control.exit = message.exit
            } catch {
              // not ours; ignore
            }
          }
        })
        socket.on("error", () => {})
        socket.once("close", () => {
          controlEnded = true
          maybeDone()
        })
      }
      child.on("exit", (code, signal) => {
        rawExit = [code, signal]
        maybeDone()
      })
      const onError = (error: NodeJS.ErrnoException) => {
        child.removeListener("spawn", onSpawn)
        if (launch.onStartFailure === "exit") {
          resume(Effect.succeed(notStarted(launch, error)))
        } else {
          resume(Effect.fail(
            new SandboxError({
              reason: "SpawnFailed",
              operation: "spawn",
              path: launch.file,
              detail: error.message,
              cause: error
            })
          ))
        }
      }
      const onSpawn = () => {
        child.removeListener("error", onError)
        // later errors (a failed kill, EPIPE on stdin after the process exited...) are reported
        // through the operations that cause them, never as an uncaught exception
        child.on("error", () => {})
        for (const stream of child.stdio) stream?.on("error", () => {})
        resume(Effect.succeed({ child, exit, control }))
      }
      child.once("error", onError)
      child.once("spawn", onSpawn)
    }))

const isRunning = (value: Running | SandboxProcess): value is Running => "child" in value

const destroyStdio = (child: ChildProcess.ChildProcess) => {
  for (const stream of child.stdio) stream?.destroy()
}

/** Kills the whole tree, waits (bounded) for the exit, and never fails. */
const release = (value: Running | SandboxProcess) =>
  isRunning(value)
    ? Effect.flatMap(Deferred.isDone(value.exit), (done) =>
      (done ? Effect.void : Effect.sync(() => {
        if (value.child.pid === undefined) return []
        const tree = Procfs.descendants(value.child.pid)
        Procfs.signalTree(value.child.pid, "SIGKILL")
        return tree
      }).pipe(
        Effect.tap(() => Effect.timeoutOption(Deferred.await(value.exit), Duration.seconds(5))),
        // The wrapper dies of the same SIGKILL without waiting for the command it forked: "closed"
        // means every process of the tree is gone, so wait (bounded) for the rest too.
        Effect.flatMap((tree) => allGone(tree))
      )).pipe(
        Effect.ensuring(Effect.sync(() => destroyStdio(value.child))),
        Effect.ignore
      ))
    : Effect.void

const allGone = (pids: ReadonlyArray<number>): Effect.Effect<void> => {
  const poll: Effect.Effect<void> = Effect.suspend(() =>
    pids.some(Procfs.isAlive) ? Effect.sleep(Duration.millis(2)).pipe(Effect.zipRight(poll)) : Effect.void
  )
  return poll.pipe(Effect.interruptible, Effect.timeoutOption(Duration.seconds(2)), Effect.asVoid)
}

const invalidSignal = (signal: string) =>
  new SandboxError({ reason: "InvalidArgument", operation: "signal", detail: `unknown signal ${signal}` })

const findGroup = (launch: Launch, pid: number) =>
  Effect.suspend(() => {
    const group = launch.commandGroup(pid)
    return group === undefined ? Effect.fail("not yet" as const) : Effect.succeed(group)
  }).pipe(
    // the wrapper forks the command a moment after it starts
    Effect.retry(Schedule.spaced(Duration.millis(2)).pipe(Schedule.upTo(Duration.seconds(2)))),
    Effect.option
  )

const toSandboxProcess = (launch: Launch, running: Running): SandboxProcess => {
  const { child } = running
  const pid = child.pid!
  const writeControl = (message: unknown) =>
    Effect.suspend(() => {
      const socket = child.stdio[3] as Writable | null
      if (socket === null || socket.destroyed || !socket.writable) return Effect.void
      return Effect.sync(() => socket.write(JSON.stringify(message) + "\n"))
    })

  const signal = (name: SignalName): Effect.Effect<void, SandboxError> =>
    Effect.suspend(() => {
      const number = signalNumber(name)
      if (number === undefined) return Effect.fail(invalidSignal(name))
      return Effect.flatMap(Deferred.isDone(running.exit), (done) => {
        if (done) return Effect.void
        if (launch.pty) return writeControl({ signal: name })
        return Effect.flatMap(findGroup(launch, pid), (group) =>
          Effect.sync(() => {
            if (group._tag === "Some") Procfs.signalGroup(group.value, `SIG${name}` as NodeJS.Signals)
          }))
      })
    })

  const resize = (size: WindowSize): Effect.Effect<void, SandboxError> =>
    Effect.zipRight(checkResize(launch.pty, size), writeControl({ resize: [size.cols, size.rows] }))

  return withNodeStdio({
    pid,
    stdin: writableSink(() => child.stdin!, stdinError),
    stdout: ReadableStream.fromReadable(() => child.stdout!, streamError("process stdout")),
    stderr: ReadableStream.fromReadable(() => child.stderr!, streamError("process stderr")),
    exit: Effect.map(Deferred.await(running.exit), (raw) => toProcessExit(raw, running.control.exit)),
    signal,
    resize
  }, { stdin: child.stdin!, stdout: child.stdout!, stderr: child.stderr! })
}

/**
 * A sink over a Node writable that ends it when the input ends. `NodeSink.fromWritable`'s own
 * ending waits for `"finish"`, which never comes when the stream was destroyed meanwhile (Node
 * destroys a child's stdin when the child exits), so the sink would hang; this one also returns
 * on `"close"` and on an already destroyed stream.
 *
 * @internal
 */
export const writableSink = <E>(
  evaluate: () => Writable,
  _onError: (error: unknown) => E
): Sink.Sink<void, Uint8Array, never, E> =>
  // Paced by the pipe: each chunk waits for "drain" when the pipe is full (NodeSink.fromWritable
  // does not after a chunk's last item, so a fast producer could buffer without bound). Writes to a
  // process that has exited are discarded, as the pipe's EPIPE destroys the stream.
  Sink.forEachChunk((chunk: Chunk.Chunk<Uint8Array>) => writeChunk(evaluate(), chunk)).pipe(
    Sink.mapEffect(() => endWritable(evaluate()))
  )

const endWritable = (writable: Writable) =>
  Effect.async<void>((resume) => {
    if (writable.destroyed || writable.writableFinished) return resume(Effect.void)
    const done = () => resume(Effect.void)
    writable.once("finish", done)
    writable.once("close", done)
    writable.end()
    return Effect.sync(() => {
      writable.removeListener("finish", done)
      writable.removeListener("close", done)
    })
  })

/**
 * Starts `launch` in the current scope. Closing the scope kills the process tree if it is still
 * running and waits for it to exit.
 *
 * @internal
 */
export const spawn = (launch: Launch): Effect.Effect<SandboxProcess, SandboxError, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(start(launch), release),
    (value) => isRunning(value) ? toSandboxProcess(launch, value) : value
  )
