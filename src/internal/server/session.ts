/**
 * A "session" channel on the server side (RFC 4254 §6): pty-req, env, exec, shell, subsystem,
 * window-change and signal, bridged to a process inside the sandbox.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Stream from "effect/Stream"
import type { Writable } from "node:stream"
import type * as ssh2 from "ssh2"
import type { ProcessExit, PtyOptions, SandboxProcess, SpawnOptions } from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import * as NodeStdio from "../nodeStdio.js"
import * as ReadableStream from "../readableStream.js"
import { exitSignalName } from "../signals.js"
import { flushed, writeChunk } from "../transport/writable.js"
import type { Authorization } from "./authorization.js"
import { interruptOnClose } from "./channel.js"
import type { ServerConfig } from "./connection.js"
import { serveChannel as serveSftpChannel } from "./sftp/channel.js"

interface SessionState {
  readonly env: Record<string, string>
  pty: PtyOptions | undefined
  process: Deferred.Deferred<SandboxProcess>
  started: boolean
}

/** Whether the channel's input has ended (EOF received) with nothing left to read. */
const inputEnded = (channel: ssh2.ServerChannel): boolean => {
  if (channel.readableEnded) return true
  const state = (channel as unknown as { _readableState?: { ended?: boolean } })._readableState
  return state?.ended === true && channel.readableLength === 0
}

const channelError = (operation: string) => (cause: unknown) =>
  new SandboxError({ reason: "TransportFailed", operation, detail: String(cause), cause })

/**
 * The bytes of a process with Node stdio (see `nodeStdio.ts`), the same flow as the Stream path —
 * stdin from the channel (closed at once when the client already sent EOF), stdout and stderr to
 * the channel until both ended, then the exit — driven by the streams' events: no Stream runs and
 * no fibers.
 */
const nodeStdioCopy = (
  channel: ssh2.ServerChannel,
  proc: SandboxProcess,
  stdio: NodeStdio.NodeStdioStreams,
  touch: () => void
): Effect.Effect<ProcessExit, SandboxError> => {
  const stdin = inputEnded(channel)
    ? Effect.sync(() => {
      // still read to its end: ssh2 emits "close" only after "end"
      channel.resume()
      NodeStdio.endQuietly(stdio.stdin)
      return () => {}
    })
    : Effect.sync(() => NodeStdio.forward(channel, stdio.stdin, touch))
  return Effect.acquireUseRelease(
    stdin,
    () =>
      Effect.zipRight(NodeStdio.outputs([[stdio.stdout, channel], [stdio.stderr, channel.stderr]], touch), proc.exit),
    (stop) => Effect.sync(stop)
  )
}

/**
 * Runs one command (or the login shell when `command` is undefined) for the life of `channel`:
 * stdin from the channel, stdout and stderr to it, then exit-status or exit-signal after every byte
 * of output, then EOF and close. The process is killed when the channel closes first.
 */
const runProcess = (
  channel: ssh2.ServerChannel,
  command: string | undefined,
  state: SessionState,
  config: ServerConfig,
  authorization: Authorization,
  touch: () => void
): Effect.Effect<void> => {
  const { sandbox } = config
  // A forced command (authorized_keys command="...") replaces what the client asked for, as sshd does.
  const forced = authorization.forcedCommand
  const run = forced ?? command
  const env: Record<string, string> = { ...state.env, ...authorization.environment }
  if (forced !== undefined && command !== undefined) env.SSH_ORIGINAL_COMMAND = command
  if (state.pty !== undefined) env.TERM = state.pty.term
  const spawnOptions: SpawnOptions = {
    command: sandbox.info.shell,
    args: run === undefined ? ["-l"] : ["-c", run],
    env,
    user: config.user,
    pty: state.pty
  }
  const body = Effect.gen(function*() {
    const spawned = yield* Effect.either(sandbox.spawn(spawnOptions))
    if (spawned._tag === "Left") {
      // As a shell does for a command it cannot start: a reason on stderr and status 127.
      channel.stderr.write(`sandbox-ssh: ${spawned.left.message}\n`)
      yield* flushed(channel.stderr)
      channel.exit(127)
      channel.end()
      return
    }
    const proc = spawned.right
    yield* Deferred.succeed(state.process, proc)

    const toChannel = (output: Stream.Stream<Uint8Array, SandboxError>, writable: Writable) =>
      output.pipe(
        Stream.runForEachChunk((chunk) => {
          touch()
          return writeChunk(writable, chunk)
        }),
        Effect.ignore
      )
    // `exec` clients usually send EOF right after the request, before the process is up: then the
    // process's stdin is closed straight away instead of through a pipeline reading the channel.
    // The channel is still read to its end: ssh2 emits its "close" only after "end".
    const stdin = inputEnded(channel)
      ? Effect.suspend(() => {
        channel.resume()
        return Stream.run(Stream.empty, proc.stdin)
      }).pipe(Effect.ignore)
      : ReadableStream.fromReadable<SandboxError>(() => channel, channelError("channel read"), {
        closeOnDone: false
      }).pipe(
        Stream.tap(() => Effect.sync(touch)),
        Stream.run(proc.stdin),
        Effect.ignore
      )
    const stdio = NodeStdio.nodeStdio(proc)
    const exit = yield* stdio === undefined
      ? Effect.gen(function*() {
        const stdinFiber = yield* Effect.fork(stdin)
        const stdoutFiber = yield* Effect.fork(toChannel(proc.stdout, channel))
        const stderrFiber = yield* Effect.fork(toChannel(proc.stderr, channel.stderr))
        const exit = yield* proc.exit
        yield* Fiber.join(stdoutFiber)
        yield* Fiber.join(stderrFiber)
        yield* Fiber.interrupt(stdinFiber)
        return exit
      })
      : nodeStdioCopy(channel, proc, stdio, touch)
    yield* flushed(channel.stderr)
    yield* flushed(channel)
    if (exit._tag === "Exited") {
      channel.exit(exit.code)
    } else {
      const name = exitSignalName(exit.signal)
      // ssh2 can only encode the signals RFC 4254 names; others are reported as 128+n.
      if (name !== undefined) channel.exit(name, exit.coreDumped, "")
      else channel.exit(exit.code)
    }
    channel.end()
  })
  return interruptOnClose(channel, Effect.scoped(body)).pipe(
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logWarning("session failed", cause)
    ),
    Effect.ensuring(Effect.sync(() => channel.close())),
    Effect.withLogSpan("sandbox-ssh.channel"),
    Effect.annotateLogs({ command: command ?? "<shell>" })
  )
}

/**
 * Accepts a session channel and serves its requests. Runs until the channel closes.
 *
 * @internal
 */
export const handleSession = (
  accept: ssh2.AcceptConnection<ssh2.Session>,
  _reject: ssh2.RejectConnection,
  config: ServerConfig,
  authorization: Authorization,
  touch: () => void
): Effect.Effect<void> =>
  Effect.gen(function*() {
    // Only window-change and signal run on their own fibers; the one job a session has (a process
    // or the SFTP server) runs on this fiber, so a session costs no FiberSet or scope of its own.
    const runtime = yield* Effect.runtime<never>()
    const pending = new Set<Fiber.RuntimeFiber<void>>()
    const runFork = (effect: Effect.Effect<void>) => {
      const fiber = Runtime.runFork(runtime)(effect)
      pending.add(fiber)
      fiber.addObserver(() => pending.delete(fiber))
    }
    const state: SessionState = {
      env: {},
      pty: undefined,
      process: Deferred.unsafeMake<SandboxProcess>(FiberId.none),
      started: false
    }
    // What this channel runs, once a request picks it; Effect.void when it closes before one does.
    const job = Deferred.unsafeMake<Effect.Effect<void>>(FiberId.none)
    const session = accept()
    const whenRunning = (f: (proc: SandboxProcess) => Effect.Effect<void, SandboxError>) =>
      Deferred.poll(state.process).pipe(
        Effect.flatMap(Option.match({
          onNone: () => Effect.void,
          onSome: (awaitProc) => Effect.flatMap(awaitProc, f)
        })),
        Effect.ignore
      )

    const start = (
      acceptChannel: ssh2.AcceptConnection<ssh2.ServerChannel>,
      reject: ssh2.RejectConnection | undefined,
      command: string | undefined
    ) => {
      if (state.started) return reject?.()
      state.started = true
      const channel = acceptChannel()
      Deferred.unsafeDone(job, Exit.succeed(runProcess(channel, command, state, config, authorization, touch)))
    }

    session.on("pty", (acceptPty, rejectPty, info: ssh2.PseudoTtyInfo) => {
      if (state.started || !authorization.allowPty) return rejectPty?.()
      state.pty = { term: info.term || "xterm", cols: info.cols || 80, rows: info.rows || 24 }
      acceptPty?.()
    })
    session.on("env", (acceptEnv, rejectEnv, info: ssh2.SetEnvInfo) => {
      if (state.started || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(info.key)) return rejectEnv?.()
      state.env[info.key] = info.val
      acceptEnv?.()
    })
    session.on("exec", (acceptExec, rejectExec, info: ssh2.ExecInfo) => start(acceptExec, rejectExec, info.command))
    session.on("shell", (acceptShell, rejectShell) => start(acceptShell, rejectShell, undefined))
    session.on("window-change", (acceptChange, _rejectChange, info: ssh2.WindowChangeInfo) => {
      acceptChange?.()
      runFork(whenRunning((proc) => proc.resize({ cols: info.cols, rows: info.rows })))
    })
    session.on("signal", (acceptSignal, _rejectSignal, info: ssh2.SignalInfo) => {
      acceptSignal?.()
      runFork(whenRunning((proc) => proc.signal(info.name.replace(/^SIG/, ""))))
    })
    // No "sftp" listener: ssh2 then hands `subsystem sftp` over as a raw channel for our own server.
    session.on("subsystem", (acceptSub, rejectSub, info: ssh2.SubsystemInfo) => {
      // A forced command (authorized_keys command="...") runs instead of any subsystem, as in sshd.
      if (authorization.forcedCommand !== undefined) return start(acceptSub, rejectSub, info.name)
      if (info.name !== "sftp" || !config.sftp || state.started) return rejectSub?.()
      state.started = true
      const channel = acceptSub()
      Deferred.unsafeDone(
        job,
        Exit.succeed(serveSftpChannel(channel, {
          fs: config.sandbox.fs,
          fileSystemFor: config.sandbox.fileSystemFor,
          user: config.user
        }))
      )
    })
    session.on("x11", (_acceptX11, rejectX11) => rejectX11?.())
    session.on("auth-agent", (_acceptAgent, rejectAgent) => rejectAgent?.())
    session.once("close", () => {
      if (!state.started) Deferred.unsafeDone(job, Exit.succeed(Effect.void))
    })
    yield* Effect.flatten(Deferred.await(job)).pipe(
      Effect.ensuring(Effect.suspend(() => pending.size === 0 ? Effect.void : Fiber.interruptAll(pending)))
    )
  })
