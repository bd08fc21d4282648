/**
 * Helpers for ssh2 server channels: closure, flushing and paced writes.
 *
 * @internal
 */
import type * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type { Writable } from "node:stream"
import type * as ssh2 from "ssh2"

/** Waits until everything written to `writable` has been handed to the transport. @internal */
export const flushed = (writable: Writable): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (writable.writableLength === 0 || writable.destroyed) return resume(Effect.void)
    const done = () => {
      cleanup()
      resume(Effect.void)
    }
    const cleanup = () => {
      writable.removeListener("drain", done)
      writable.removeListener("close", done)
    }
    writable.on("drain", done)
    writable.on("close", done)
    return Effect.sync(cleanup)
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

/** ssh2 never marks closed channels `destroyed`; its protocol state says whether CLOSE arrived. @internal */
export const isClosed = (channel: ssh2.ServerChannel | ssh2.Channel): boolean =>
  (channel as unknown as { incoming?: { state?: string } }).incoming?.state === "closed"

/** Resolves when the channel is closed by either side. @internal */
export const channelClosed = (channel: ssh2.ServerChannel | ssh2.Channel): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (isClosed(channel)) return resume(Effect.void)
    const done = () => resume(Effect.void)
    channel.once("close", done)
    return Effect.sync(() => channel.removeListener("close", done))
  })
