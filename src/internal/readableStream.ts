/**
 * A Node `Readable` as an Effect `Stream`, chunk for chunk as the readable emits them.
 *
 * `NodeStream.fromReadable` pulls with `readable.read()`, which joins whatever the readable has
 * buffered into one new buffer: one more copy, and one more allocation, of every byte that goes
 * through it. Exec output crosses two of them (the command's pipe in the server, the SSH channel
 * in the client), and a 256 MiB `head -c` down spent ~7% of its CPU in those joins
 * (`Readable.read` → `fromList`).
 *
 * Here a pull takes every chunk that arrived since the last one, as it arrived (the very buffers
 * the readable emitted). While `highWaterMark` bytes wait for the consumer the readable is paused,
 * so the source's own flow control (a pipe, a socket, an SSH channel's window) holds the producer
 * back, as `NodeStream.fromReadable` does.
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type { LazyArg } from "effect/Function"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { Readable } from "node:stream"

/** @internal */
export interface ReadableStreamOptions {
  /** Destroy the readable when the stream ends (default true), as `NodeStream.fromReadable`. */
  readonly closeOnDone?: boolean | undefined
}

/** The least bytes held for the consumer before the readable is paused. */
const MIN_WAITING = 64 * 1024

class Reader<E> {
  private chunks: Array<Uint8Array> = []
  private waiting = 0
  private readonly limit: number
  private paused = false
  private ended = false
  private failed: { readonly error: unknown } | undefined = undefined
  private wake: (() => void) | undefined = undefined

  constructor(private readonly readable: Readable, private readonly onError: (error: unknown) => E) {
    this.limit = Math.max(MIN_WAITING, readable.readableHighWaterMark)
    if (!readable.readable) {
      this.ended = true
      return
    }
    readable.on("data", this.onData)
    readable.on("end", this.onEnd)
    readable.on("close", this.onEnd)
    readable.on("error", this.onFailure)
    // a readable paused by its owner does not start flowing for a "data" listener alone
    readable.resume()
  }

  private readonly notify = () => {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  private readonly onData = (chunk: Uint8Array | string) => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk
    this.chunks.push(bytes)
    this.waiting += bytes.length
    if (this.waiting >= this.limit && !this.paused) {
      this.paused = true
      this.readable.pause()
    }
    this.notify()
  }

  private readonly onEnd = () => {
    this.ended = true
    this.notify()
  }

  private readonly onFailure = (error: unknown) => {
    if (this.failed === undefined) this.failed = { error }
    this.ended = true
    this.notify()
  }

  /** Every chunk that arrived since the last pull; waits for one; fails once the rest is taken. */
  readonly pull: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<E>> = Effect.suspend(() => {
    if (this.chunks.length > 0) {
      const chunks = this.chunks
      this.chunks = []
      this.waiting = 0
      if (this.paused && !this.ended) {
        this.paused = false
        this.readable.resume()
      }
      return Effect.succeed(Chunk.unsafeFromArray(chunks))
    }
    if (this.failed !== undefined) return Effect.fail(Option.some(this.onError(this.failed.error)))
    if (this.ended) return Effect.fail(Option.none())
    return Effect.async<Chunk.Chunk<Uint8Array>, Option.Option<E>>((resume) => {
      this.wake = () => resume(this.pull)
      return Effect.sync(() => {
        this.wake = undefined
      })
    })
  })

  /** Removes the listeners; the readable is destroyed, or left paused for whoever reads it next. */
  dispose(closeOnDone: boolean): void {
    const readable = this.readable
    readable.off("data", this.onData)
    readable.off("end", this.onEnd)
    readable.off("close", this.onEnd)
    readable.off("error", this.onFailure)
    if (closeOnDone) {
      if (!readable.closed) readable.destroy()
    } else if (!this.ended) {
      readable.pause()
    }
  }
}

/**
 * The chunks of the readable `evaluate` returns (evaluated each time the stream runs), failing with
 * `onError` of its "error". Ends with its "end" (or a "close" without one).
 *
 * @internal
 */
export const fromReadable = <E>(
  evaluate: LazyArg<Readable>,
  onError: (error: unknown) => E,
  options: ReadableStreamOptions = {}
): Stream.Stream<Uint8Array, E> =>
  Stream.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => new Reader(evaluate(), onError)),
        (reader) => Effect.sync(() => reader.dispose(options.closeOnDone !== false))
      ),
      (reader) => Stream.repeatEffectChunkOption(reader.pull)
    )
  )
