/**
 * A fast path for processes whose stdio are Node streams underneath (`LocalSandbox`'s child
 * processes, Docker's hijacked exec streams). Running an Effect `Stream` costs ~150–200 µs of
 * channel-executor set-up on Node 20 (`Stream.runDrain(Stream.empty)`: 177 µs here), and a served
 * exec ran three (stdin, stdout, stderr) — about a third of what an exec cost on top of the
 * sandbox's own spawn. Such a process carries its Node streams under {@link NodeStdio}; the SSH
 * server's session then moves the bytes with the streams' own events, with the same backpressure
 * (a full channel window pauses the process's output; a slow process pauses the channel).
 *
 * The `Stream`/`Sink` fields stay the contract of `SandboxProcess`; a process is consumed either
 * through them or through this, never both. Transports without Node streams simply lack it.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type { Readable, Writable } from "node:stream"
import type { SandboxProcess } from "../Sandbox.js"

/** @internal */
export const NodeStdio: unique symbol = Symbol.for("sandbox-ssh/NodeStdio")

/** @internal */
export interface NodeStdioStreams {
  readonly stdin: Writable
  readonly stdout: Readable
  readonly stderr: Readable
}

/**
 * `process` with its Node streams attached (not enumerable: spreading or printing the process does
 * not show them).
 *
 * @internal
 */
export const withNodeStdio = <P extends SandboxProcess>(process: P, stdio: NodeStdioStreams): P =>
  Object.defineProperty(process, NodeStdio, { value: stdio, enumerable: false })

/** @internal */
export const nodeStdio = (process: SandboxProcess): NodeStdioStreams | undefined =>
  (process as { readonly [NodeStdio]?: NodeStdioStreams })[NodeStdio]

/**
 * The data half of a copy: each chunk of `from` is written to `to`, `from` pausing while `to` is
 * full and resuming on its `drain` (nothing is written once `to` is destroyed: `from` is drained).
 * `onChunk` runs for each chunk (activity, for the inactivity timeout). Returns what removes it.
 */
const flow = (from: Readable, to: Writable, onChunk: () => void): () => void => {
  const onData = (chunk: Uint8Array) => {
    onChunk()
    if (to.destroyed) return
    if (!to.write(chunk) && !to.destroyed) {
      from.pause()
      to.once("drain", onDrain)
    }
  }
  const onDrain = () => from.resume()
  // the destination went away: `from` is still drained (a process blocked on a full pipe must be
  // able to finish)
  const onToClosed = () => {
    to.removeListener("drain", onDrain)
    from.resume()
  }
  from.on("data", onData)
  to.once("close", onToClosed)
  return () => {
    from.removeListener("data", onData)
    to.removeListener("drain", onDrain)
    to.removeListener("close", onToClosed)
  }
}

/**
 * Starts copying `from` into `to` (see {@link flow}); when `from` ends, `to` is ended. Returns a
 * function that stops the copy (`from` is then left paused, `to` as it is).
 *
 * @internal
 */
export const forward = (from: Readable, to: Writable, onChunk: () => void): () => void => {
  const stopFlow = flow(from, to, onChunk)
  const onEnd = () => {
    stop()
    endQuietly(to)
  }
  const stop = () => {
    stopFlow()
    from.removeListener("end", onEnd)
  }
  from.once("end", onEnd)
  return () => {
    stop()
    from.pause()
  }
}

/**
 * Copies each `[from, to]` pair (see {@link flow}) until every `from` ended, errored or closed (an
 * error ends a copy quietly, as the Stream path ignored it); the `to`s are not ended. Interruption
 * stops every copy.
 *
 * @internal
 */
export const outputs = (
  pairs: ReadonlyArray<readonly [Readable, Writable]>,
  onChunk: () => void
): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let open = 0
    const cleanups: Array<() => void> = []
    const copy = (from: Readable, to: Writable) => {
      if (from.readableEnded || from.destroyed) return
      open++
      const stopFlow = flow(from, to, onChunk)
      let finished = false
      const cleanup = () => {
        stopFlow()
        from.removeListener("end", onDone)
        from.removeListener("error", onDone)
        from.removeListener("close", onDone)
      }
      function onDone() {
        if (finished) return
        finished = true
        cleanup()
        if (--open === 0) resume(Effect.void)
      }
      cleanups.push(() => {
        cleanup()
        from.pause()
      })
      from.once("end", onDone)
      from.once("error", onDone)
      from.once("close", onDone)
    }
    for (const [from, to] of pairs) copy(from, to)
    if (open === 0) return resume(Effect.void)
    return Effect.sync(() => {
      for (const cleanup of cleanups) cleanup()
    })
  })

/**
 * Ends `writable` unless it already ended or was destroyed (a child's stdin is destroyed when the
 * child exits; writing EOF to it then is pointless, not an error).
 *
 * @internal
 */
export const endQuietly = (writable: Writable): void => {
  if (!writable.destroyed && !writable.writableEnded) writable.end()
}
