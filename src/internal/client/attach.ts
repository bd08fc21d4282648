/**
 * Interactive attach: the local terminal bridged to the sandbox's login shell on a `shell` channel
 * with a PTY. Keystrokes go up (minus the detach sequence), output comes down, resizes are relayed.
 *
 * Ownership: the shell's channel lives in a child scope of the client's scope. Every way out
 * closes it (which ends the shell) except a detach, after which the shell runs on until the client
 * closes. The terminal's raw mode, listeners and signal handlers live in the attach's own scope.
 *
 * @internal
 */
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Readable } from "node:stream"
import type * as ssh2 from "ssh2"
import type { WindowSize } from "../../Sandbox.js"
import { type AttachInput, type AttachOptions, type AttachOutput, AttachResult } from "../../SshClient.js"
import { NotATerminalError, type SshError } from "../../SshError.js"
import { validTerm } from "../options.js"
import { DEFAULT_DETACH_KEYS, type DetachMatcher, feed, heldBytes, makeMatcher, parseDetachKeys } from "./detachKeys.js"
import { type ClientState, openExec } from "./process.js"

/**
 * Fails with `NotATerminalError` unless `input` is a TTY that can enter raw mode and `output` is a
 * TTY. The CLI checks this before it starts a sandbox.
 *
 * @internal
 */
export const checkTerminal = (
  input: AttachInput,
  output: AttachOutput,
  names: { readonly input: string; readonly output: string } = { input: "stdin", output: "stdout" }
): Effect.Effect<void, NotATerminalError> =>
  input.isTTY !== true
    ? Effect.fail(
      new NotATerminalError({
        detail: `${names.input} is not a terminal; attach needs an interactive terminal (use exec for pipes)`
      })
    )
    : typeof input.setRawMode !== "function"
    ? Effect.fail(new NotATerminalError({ detail: `${names.input} cannot be put in raw mode` }))
    : output.isTTY !== true
    ? Effect.fail(
      new NotATerminalError({
        detail: `${names.output} is not a terminal; attach needs an interactive terminal (use exec for pipes)`
      })
    )
    : Effect.void

const positive = (n: number | undefined): number | undefined =>
  typeof n === "number" && Number.isInteger(n) && n > 0 ? n : undefined

const terminalSize = (output: AttachOutput): WindowSize => ({
  cols: positive(output.columns) ?? 80,
  rows: positive(output.rows) ?? 24
})

/** Signals that end a program by default: while attached, each first restores the terminal. */
const FATAL_SIGNALS: ReadonlyArray<NodeJS.Signals> = ["SIGTERM", "SIGHUP", "SIGINT"]

/** The terminal restorers of the attaches in progress; process handlers exist while it is not empty. */
const restorers = new Set<() => void>()

const restoreAll = () => {
  for (const restore of restorers) restore()
}

const onFatalSignal = (signal: NodeJS.Signals) => {
  restoreAll()
  // Alone (no NodeRuntime.runMain or other handler), die of the signal as without us; otherwise
  // the other handler decides, and the finalizers run.
  if (process.listenerCount(signal) === 1) {
    uninstall()
    process.kill(process.pid, signal)
  }
}

const uninstall = () => {
  process.off("exit", restoreAll)
  for (const signal of FATAL_SIGNALS) process.off(signal, onFatalSignal)
}

const register = (restore: () => void) => {
  if (restorers.size === 0) {
    process.on("exit", restoreAll)
    // First in line: a handler that runs before us (NodeRuntime's) may remove itself, and we would
    // then think we are alone and kill the program before its finalizers ran.
    for (const signal of FATAL_SIGNALS) process.prependListener(signal, onFatalSignal)
  }
  restorers.add(restore)
}

const unregister = (restore: () => void) => {
  if (restorers.delete(restore) && restorers.size === 0) uninstall()
}

/**
 * Raw mode on `input` for the scope. Restored by the finalizer, and synchronously on the paths
 * that skip finalizers: `process.exit()` while attached, and a fatal signal to this program.
 */
const rawMode = (input: AttachInput): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const wasRaw = input.isRaw === true
      let restored = false
      const restore = () => {
        if (restored) return
        restored = true
        try {
          input.setRawMode?.(wasRaw)
        } catch {
          // the terminal is gone (hang-up): nothing left to restore
        }
      }
      register(restore)
      input.setRawMode?.(true)
      return restore
    }),
    (restore) =>
      Effect.sync(() => {
        unregister(restore)
        restore()
      })
  )

/**
 * Leaves `input` as reading as it was: a stream nobody read before is paused again, which for
 * `process.stdin` stops reading the terminal and lets the program exit.
 */
const inputFlowing = (input: AttachInput): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => input.readableFlowing),
    (flowing) =>
      // Node settles the flowing state one tick after the last "readable" listener is removed; a
      // pause before that would be a no-op and leave the terminal being read.
      Effect.async<void>((resume) => {
        process.nextTick(() => {
          if (flowing === true) input.resume()
          else input.pause()
          resume(Effect.void)
        })
      })
  )

/** Relays `resize` events of the output as SSH `window-change` requests. */
const relayResize = (output: AttachOutput, channel: ssh2.ClientChannel): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const onResize = () => {
        const size = terminalSize(output)
        channel.setWindow(size.rows, size.cols, 0, 0)
      }
      output.on("resize", onResize)
      return onResize
    }),
    (onResize) => Effect.sync(() => output.off("resize", onResize))
  )

/** Writes to the channel, waiting for its window when ssh2 buffers; a closed channel takes nothing. */
const writeToChannel = (channel: ssh2.ClientChannel, bytes: Uint8Array): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (!channel.writable) return resume(Effect.void)
    if (channel.write(bytes)) return resume(Effect.void)
    const done = () => {
      channel.off("drain", done)
      channel.off("close", done)
      resume(Effect.void)
    }
    channel.on("drain", done)
    channel.on("close", done)
    return Effect.sync(() => {
      channel.off("drain", done)
      channel.off("close", done)
    })
  })

/**
 * Forwards keystrokes until the detach sequence (succeeds `true`) or the end of the input
 * (succeeds `false`; held bytes of a partial sequence are delivered then).
 */
const forwardInput = (
  input: AttachInput,
  channel: ssh2.ClientChannel,
  matcher: DetachMatcher
): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    let held = 0
    let detached = false
    return NodeStream.fromReadable<unknown, Uint8Array>(() => input as Readable, (cause) => cause, {
      closeOnDone: false
    }).pipe(
      Stream.runForEachWhile((chunk) => {
        const step = feed(matcher, held, chunk)
        held = step.held
        detached = step.detached
        const write = step.output.length === 0 ? Effect.void : writeToChannel(channel, step.output)
        return Effect.as(write, !step.detached)
      }),
      // A terminal that fails to read (hang-up) sends nothing more; SIGHUP or the shell ends it.
      Effect.ignore,
      Effect.zipRight(
        Effect.suspend(() => detached || held === 0 ? Effect.void : writeToChannel(channel, heldBytes(matcher, held)))
      ),
      Effect.map(() => detached)
    )
  })

/** Copies one side of the channel to the terminal until the channel's EOF. */
const toTerminal = (from: Readable, output: AttachOutput): Effect.Effect<void> =>
  NodeStream.fromReadable<unknown, Uint8Array>(() => from, (cause) => cause, { closeOnDone: false }).pipe(
    Stream.run(NodeSink.fromWritable(() => output, (cause) => cause, { endOnDone: false })),
    // A terminal that cannot be written any more (hang-up) loses the output; the shell goes on.
    Effect.ignore
  )

const session = (
  state: ClientState,
  shellScope: Scope.Scope,
  term: string,
  matcher: DetachMatcher,
  input: AttachInput,
  output: AttachOutput
): Effect.Effect<AttachResult, SshError> =>
  Effect.gen(function*() {
    const { channel, exit } = yield* openExec(state, undefined, { tty: true, term, size: terminalSize(output) }).pipe(
      Scope.extend(shellScope)
    )
    // Finalizers run last-first. After the copy loops below stopped reading, the channel drains
    // into the void: a detached shell must never block on output nobody reads.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        channel.resume()
        channel.stderr.resume()
      })
    )
    yield* inputFlowing(input)
    yield* rawMode(input)
    yield* relayResize(output, channel)
    const outputDone = yield* Effect.forkScoped(
      Effect.all([toTerminal(channel, output), toTerminal(channel.stderr, output)], {
        concurrency: 2,
        discard: true
      })
    )
    const detached = yield* Deferred.make<void>()
    yield* Effect.forkScoped(
      Effect.flatMap(forwardInput(input, channel, matcher), (d) => d ? Deferred.succeed(detached, void 0) : Effect.void)
    )
    return yield* Effect.raceFirst(
      Effect.as(Deferred.await(detached), AttachResult.Detached()),
      // Every byte the shell wrote reaches the terminal before the attach returns.
      Deferred.await(exit).pipe(
        // Closing the client closes this channel before the connection: report the closed client.
        Effect.catchAll((error) => Effect.zipRight(state.ensureOpen, Effect.fail(error))),
        Effect.zipLeft(Fiber.join(outputDone)),
        Effect.map((exit) =>
          exit._tag === "Exited"
            ? AttachResult.Exited({ code: exit.code })
            : AttachResult.Exited({ code: exit.code, signal: exit.signal })
        )
      )
    )
  }).pipe(Effect.scoped)

/**
 * `SshClient.attachResult`. `clientScope` owns the channel of a detached shell.
 *
 * @internal
 */
export const attachResult = (
  state: ClientState,
  clientScope: Scope.Scope,
  options: AttachOptions = {}
): Effect.Effect<AttachResult, SshError> =>
  Effect.gen(function*() {
    const matcher = makeMatcher(yield* parseDetachKeys(options.detachKeys ?? DEFAULT_DETACH_KEYS))
    const term = options.term === undefined ? state.term : yield* validTerm("term", options.term)
    const input: AttachInput = options.input ?? process.stdin
    const output: AttachOutput = options.output ?? process.stdout
    yield* checkTerminal(input, output, {
      input: options.input === undefined ? "stdin" : "the attach input",
      output: options.output === undefined ? "stdout" : "the attach output"
    })
    yield* state.ensureOpen
    return yield* Effect.acquireUseRelease(
      Scope.fork(clientScope, ExecutionStrategy.sequential),
      (shellScope) => session(state, shellScope, term, matcher, input, output),
      (shellScope, exit) =>
        Exit.isSuccess(exit) && exit.value._tag === "Detached" ? Effect.void : Scope.close(shellScope, exit)
    )
  }).pipe(Effect.withSpan("SshClient.attach"))
