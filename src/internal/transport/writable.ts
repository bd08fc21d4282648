/**
 * Writing to Node writables with backpressure that holds: a writer waits for `drain` whenever the
 * writable's buffer is full, so a slow reader slows the writer down instead of growing a buffer.
 * (`NodeSink.fromWritable` resumes after the last item of a chunk even when the buffer is full, so
 * a fast producer can buffer without bound behind it.)
 *
 * @internal
 */
import type * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import type { Writable } from "node:stream"

/**
 * Waits until everything written to `writable` has been handed to the transport. `drain` is no
 * signal for that (Node emits it only after a write returned false), so an empty write marks the
 * end of the queue: its callback runs once every earlier write is done.
 *
 * @internal
 */
export const flushed = (writable: Writable): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (writable.writableLength === 0 || writable.destroyed || writable.writableEnded) return resume(Effect.void)
    let done = false
    const finish = () => {
      if (done) return
      done = true
      writable.removeListener("close", finish)
      resume(Effect.void)
    }
    writable.once("close", finish)
    writable.write(Buffer.alloc(0), finish)
    return Effect.sync(() => writable.removeListener("close", finish))
  })

/**
 * Writes a chunk of buffers, waiting for `drain` whenever the channel's window is full, so a slow
 * client slows the process down instead of growing a buffer.
 *
 * @internal
 */
export const writeChunk = (writable: Writable, chunk: Chunk.Chunk<Uint8Array>): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let ready = true
    for (const bytes of chunk) ready = writable.write(bytes)
    if (ready || writable.destroyed) return resume(Effect.void)
    const done = () => {
      cleanup()
      resume(Effect.void)
    }
    const cleanup = () => {
      writable.removeListener("drain", done)
      writable.removeListener("close", done)
    }
    writable.once("drain", done)
    writable.once("close", done)
    return Effect.sync(cleanup)
  })

/**
 * A sink that writes each chunk with `writeChunk` and ends the writable (e.g. sends EOF on an SSH
 * channel) when the stream is done.
 *
 * @internal
 */
export const writableSink = (writable: Writable): Sink.Sink<void, Uint8Array> =>
  Sink.forEachChunk((chunk: Chunk.Chunk<Uint8Array>) => writeChunk(writable, chunk)).pipe(
    Sink.ensuring(Effect.sync(() => {
      if (!writable.writableEnded) writable.end()
    }))
  )
