/**
 * A remote command on an exec channel, as a scoped process: stdin Sink, stdout/stderr Streams,
 * and its exit. Closing the scope while it runs closes the channel, which ends the remote process.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import type { Readable } from "node:stream"
import type * as ssh2 from "ssh2"
import { ProcessExit, type WindowSize } from "../../Sandbox.js"
import type { ProcessOptions, SshProcess } from "../../SshClient.js"
import type { ConnectionError } from "../../SshError.js"
import { ChannelError, type SshError } from "../../SshError.js"
import * as ReadableStream from "../readableStream.js"
import { signalNumber } from "../signals.js"
import { writableSink } from "../transport/writable.js"

/** What a process needs from the client that owns it. @internal */
export interface ClientState {
  readonly client: ssh2.Client
  readonly term: string
  /** Fails with the reason when the connection is closed or lost, succeeds otherwise. */
  readonly ensureOpen: Effect.Effect<void, ConnectionError>
  /** Present once the connection is gone. */
  readonly lostReason: () => ConnectionError | undefined
}

const lost = (state: ClientState, detail: string): SshError =>
  state.lostReason() ?? new ChannelError({ reason: "Closed", detail })

/** The size of the local terminal, when stdout is one. @internal */
export const localTerminalSize = (): WindowSize | undefined =>
  process.stdout.isTTY && process.stdout.columns > 0 && process.stdout.rows > 0
    ? { cols: process.stdout.columns, rows: process.stdout.rows }
    : undefined

/** Opens an exec channel, or a `shell` channel when `command` is undefined. */
const openChannel = (
  state: ClientState,
  command: string | undefined,
  options: ProcessOptions
): Effect.Effect<ssh2.ClientChannel, SshError> =>
  Effect.async<ssh2.ClientChannel, SshError>((resume) => {
    const execOptions: ssh2.ExecOptions = {}
    if (options.env !== undefined) execOptions.env = { ...options.env }
    const size = options.tty === true ? options.size ?? localTerminalSize() : undefined
    const pty: ssh2.PseudoTtyOptions | undefined = options.tty === true
      ? { term: options.term ?? state.term, cols: size?.cols ?? 80, rows: size?.rows ?? 24, width: 0, height: 0 }
      : undefined
    if (pty !== undefined) execOptions.pty = pty
    let cancelled = false
    const opened = (error: Error | undefined, channel: ssh2.ClientChannel) => {
      if (cancelled) {
        channel?.close()
        return
      }
      if (error) {
        const reason = state.lostReason()
        return resume(
          Effect.fail(reason ?? new ChannelError({ reason: "Refused", detail: error.message, cause: error }))
        )
      }
      resume(Effect.succeed(channel))
    }
    if (command === undefined) state.client.shell(pty ?? false, execOptions, opened)
    else state.client.exec(command, execOptions, opened)
    return Effect.sync(() => {
      cancelled = true
    })
  })

/** ssh2 does not mark closed channels `destroyed`; its own state says whether CLOSE was received. */
const isClosed = (channel: ssh2.ClientChannel): boolean =>
  (channel as unknown as { incoming?: { state?: string } }).incoming?.state === "closed"

const waitClosed = (channel: ssh2.ClientChannel): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (isClosed(channel)) return resume(Effect.void)
    const done = () => resume(Effect.void)
    channel.once("close", done)
    return Effect.sync(() => channel.removeListener("close", done))
  })

/**
 * Opens an exec channel (a `shell` channel, the login shell, when `command` is undefined) and
 * tracks how the command ends. The channel is closed with the scope.
 *
 * @internal
 */
export const openExec = (
  state: ClientState,
  command: string | undefined,
  options: ProcessOptions
): Effect.Effect<
  { readonly channel: ssh2.ClientChannel; readonly exit: Deferred.Deferred<ProcessExit, SshError> },
  SshError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    yield* state.ensureOpen
    const exit = yield* Deferred.make<ProcessExit, SshError>()
    const channel = yield* Effect.acquireRelease(openChannel(state, command, options), (channel) =>
      Effect.suspend(() => {
        if (isClosed(channel)) return Effect.void
        channel.close()
        return waitClosed(channel).pipe(Effect.interruptible, Effect.timeoutOption("2 seconds"), Effect.asVoid)
      }))
    let exitSeen = false
    channel.on("exit", (code: number | null, signal?: string, coreDumped?: boolean) => {
      exitSeen = true
      if (typeof code === "number") {
        Deferred.unsafeDone(exit, Exit.succeed(ProcessExit.Exited({ code })))
      } else {
        const name = (signal ?? "").replace(/^SIG/, "")
        const n = signalNumber(name)
        Deferred.unsafeDone(
          exit,
          Exit.succeed(ProcessExit.Signaled({ signal: name, code: 128 + (n ?? 0), coreDumped: coreDumped === true }))
        )
      }
    })
    channel.once("close", () => {
      // Building an error captures a stack: only do it when the close really is unexpected.
      if (exitSeen) return
      Deferred.unsafeDone(
        exit,
        Exit.fail(
          state.lostReason() ??
            new ChannelError({
              reason: "NoExitStatus",
              detail: `channel for ${
                command === undefined ? "the shell" : JSON.stringify(command)
              } closed without exit-status or exit-signal`
            })
        )
      )
    })
    return { channel, exit }
  })

/** @internal */
export const startProcess = (
  state: ClientState,
  command: string,
  options: ProcessOptions = {}
): Effect.Effect<SshProcess, SshError, Scope.Scope> =>
  Effect.gen(function*() {
    const { channel, exit } = yield* openExec(state, command, options)
    const readError = (cause: unknown): SshError => lost(state, `reading output of ${command}: ${String(cause)}`)
    const stdout = ReadableStream.fromReadable<SshError>(() => channel, readError, { closeOnDone: false })
    const stderr = ReadableStream.fromReadable<SshError>(() => channel.stderr, readError, {
      closeOnDone: false
    })
    // Paced by the channel's window: a fast producer waits instead of filling memory.
    const stdin = writableSink(channel)
    const request = (name: string, send: () => boolean | void) =>
      Effect.suspend(() => {
        if (isClosed(channel)) {
          return Effect.fail(new ChannelError({ reason: "Closed", detail: `${name}: channel closed` }))
        }
        send()
        return Effect.void
      })
    return {
      stdin,
      stdout,
      stderr,
      exit: Deferred.await(exit),
      exitCode: Effect.map(Deferred.await(exit), (exit) => exit.code),
      isRunning: Effect.map(Deferred.isDone(exit), (done) => !done),
      signal: (signal: string) => request("signal", () => channel.signal(signal.replace(/^SIG/, ""))),
      resize: (size: WindowSize) => request("window-change", () => channel.setWindow(size.rows, size.cols, 0, 0))
    } satisfies SshProcess
  })

/**
 * Gathers everything a readable side of a channel delivers until it ends. `exec` uses this
 * instead of a Stream pipeline: collecting into memory needs no backpressure, and it is the hot
 * path of every exec.
 *
 * @internal
 */
export const collectReadable = (readable: Readable): Effect.Effect<Uint8Array> =>
  Effect.async<Uint8Array>((resume) => {
    const chunks: Array<Buffer> = []
    const onData = (chunk: Buffer) => {
      chunks.push(chunk)
    }
    const onEnd = () => {
      cleanup()
      resume(Effect.succeed(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
    }
    const cleanup = () => {
      readable.removeListener("data", onData)
      readable.removeListener("end", onEnd)
    }
    readable.on("data", onData)
    readable.once("end", onEnd)
    if (readable.readableEnded) onEnd()
    return Effect.sync(cleanup)
  })
