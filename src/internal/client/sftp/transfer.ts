/**
 * Pipelined transfers over an open handle: several READ or WRITE requests in flight at once
 * (at most `MAX_IN_FLIGHT`, each at most the session's request size), replies reassembled in file
 * order. ssh2's `fastGet`/`fastPut` do this only between remote and local files; these work on
 * memory, streams and sinks.
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { SftpError } from "../../../SshError.js"
import { readViews } from "./dataViews.js"
import * as Prefault from "./prefault.js"
import { MAX_IN_FLIGHT, type Session } from "./session.js"
import * as WriteRequests from "./writeRequests.js"

const asBuffer = (data: Uint8Array): Buffer =>
  Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)

/**
 * Fills `target` from the file at `offset`, with requests in flight concurrently. Resolves with the
 * number of bytes before the first end of file (the file may be shorter than `target`).
 *
 * @internal
 */
export const readInto = (
  session: Session,
  handle: Buffer,
  path: string,
  target: Buffer,
  offset: number
): Effect.Effect<number, SftpError> =>
  Effect.async<number, SftpError>((resume) => {
    const chunk = session.maxReadLength
    let next = 0
    let inFlight = 0
    let eofAt = target.length
    let done = false
    const retries: Array<readonly [number, number]> = []
    // a big buffer is faulted in ahead of the replies, in the threadpool (prefault.ts)
    const faults = target.length >= Prefault.MIN_BYTES ? Prefault.make(target, () => done || pump()) : undefined
    const finish = (effect: Effect.Effect<number, SftpError>) => {
      if (done) return
      done = true
      faults?.stop()
      resume(effect)
    }
    const issue = (start: number, length: number) => {
      inFlight++
      // the reply as views of the packets that carried it (dataViews.ts), copied once into place
      // rather than reassembled by ssh2 first: 3–10% faster in 3 runs of 8–12 alternating pairs
      // (`scratchpad/sftp/readalt.ts`), and half the young-generation GCs
      readViews(session.sftp, handle, offset + start, length, (error, views, release) => {
        inFlight--
        if (done) return
        if (error) return finish(Effect.fail(session.error(error, "read", path)))
        let bytes = 0
        for (const view of views) {
          target.set(view, start + bytes)
          bytes += view.length
        }
        // copied: the packets they came in may be reused (in-process, dataViews.ts)
        release()
        if (bytes === 0) eofAt = Math.min(eofAt, start)
        // A server may answer with less than asked without being at the end: ask for the rest.
        else if (bytes < length) retries.push([start + bytes, length - bytes])
        pump()
      })
    }
    const pump = () => {
      const reason = session.gone()
      if (reason !== undefined) {
        return finish(Effect.fail(session.error(new Error("the SFTP channel is closed"), "read", path)))
      }
      const writable = faults === undefined ? target.length : faults.limit(next)
      while (inFlight < MAX_IN_FLIGHT) {
        const retry = retries.pop()
        if (retry !== undefined) {
          if (retry[0] < eofAt) issue(retry[0], retry[1])
          continue
        }
        if (next >= eofAt) break
        const length = Math.min(chunk, eofAt - next)
        if (next + length > writable) break // its pages are still being faulted in
        issue(next, length)
        next += length
      }
      if (inFlight === 0 && next >= eofAt) finish(Effect.succeed(eofAt))
    }
    if (target.length === 0) return resume(Effect.succeed(0))
    pump()
    return Effect.sync(() => {
      done = true
      faults?.stop()
    })
  })

/**
 * Writes all of `data` at `offset` with requests in flight concurrently; resolves once the server
 * acknowledged every byte.
 *
 * @internal
 */
export const writeFrom = (
  session: Session,
  handle: Buffer,
  path: string,
  data: Uint8Array,
  offset: number
): Effect.Effect<void, SftpError> =>
  Effect.async<void, SftpError>((resume) => {
    const buffer = asBuffer(data)
    const chunk = session.maxWriteLength
    let next = 0
    let inFlight = 0
    let done = false
    const finish = (effect: Effect.Effect<void, SftpError>) => {
      if (done) return
      done = true
      resume(effect)
    }
    const pump = () => {
      if (session.gone() !== undefined) {
        return finish(Effect.fail(session.error(new Error("the SFTP channel is closed"), "write", path)))
      }
      while (inFlight < MAX_IN_FLIGHT && next < buffer.length) {
        const length = Math.min(chunk, buffer.length - next)
        inFlight++
        WriteRequests.write(session.sftp, handle, buffer, next, length, offset + next, (error) => {
          inFlight--
          if (done) return
          if (error) return finish(Effect.fail(session.error(error, "write", path)))
          pump()
        })
        next += length
      }
      if (inFlight === 0 && next >= buffer.length) finish(Effect.void)
    }
    if (buffer.length === 0) return resume(Effect.void)
    pump()
    return Effect.sync(() => {
      done = true
    })
  })

/**
 * Bytes a stream reads ahead of its consumer (besides the `MAX_IN_FLIGHT` bound on requests). A
 * reply's bytes stay in memory until the consumer lets go of them: when each reply was a buffer of
 * its own, 64 requests of 255 KiB (16 MiB) grew the process by ~140 MiB over a 1 GiB stream,
 * against ~100 MiB with 6 MiB ahead, at the same throughput.
 */
const READ_AHEAD_BYTES = 6 * 1024 * 1024

interface PendingRead {
  readonly offset: number
  readonly length: number
  done: boolean
  error: unknown
  data: ReadonlyArray<Buffer>
  wake: (() => void) | undefined
}

/**
 * The bytes of an open file from `offset` (to `end`, or to the end of file) as a stream, reading
 * ahead with up to `MAX_IN_FLIGHT` requests. Emits chunks in file order: the bytes of each reply as
 * they arrived, views of the packets that carried them (`dataViews.ts`).
 *
 * @internal
 */
export const streamHandle = (
  session: Session,
  handle: Buffer,
  path: string,
  options: { readonly offset: number; readonly end?: number | undefined; readonly chunkSize: number }
): Stream.Stream<Uint8Array, SftpError> =>
  Stream.suspend(() => {
    const queue: Array<PendingRead> = []
    const end = options.end ?? Number.POSITIVE_INFINITY
    let next = options.offset
    let eof = false
    const issue = (offset: number, length: number): PendingRead => {
      const pending: PendingRead = {
        offset,
        length,
        done: false,
        error: undefined,
        data: [],
        wake: undefined
      }
      readViews(session.sftp, handle, offset, length, (error, data) => {
        pending.done = true
        pending.error = error
        pending.data = data
        const wake = pending.wake
        pending.wake = undefined
        wake?.()
      })
      return pending
    }
    const queuedBytes = () => {
      let bytes = 0
      for (const pending of queue) bytes += pending.length
      return bytes
    }
    const settled = (pending: PendingRead) =>
      Effect.async<void>((resume) => {
        if (pending.done) return resume(Effect.void)
        pending.wake = () => resume(Effect.void)
        return Effect.sync(() => {
          pending.wake = undefined
        })
      })
    const pull: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<SftpError>> = Effect.suspend(() => {
      if (eof) return Effect.fail(Option.none())
      if (session.gone() !== undefined) {
        return Effect.fail(Option.some(session.error(new Error("the SFTP channel is closed"), "read", path)))
      }
      while (queue.length < MAX_IN_FLIGHT && next < end && (queue.length === 0 || queuedBytes() < READ_AHEAD_BYTES)) {
        const length = Math.min(options.chunkSize, end - next)
        queue.push(issue(next, length))
        next += length
      }
      const head = queue[0]
      if (head === undefined) return Effect.fail(Option.none())
      return Effect.flatMap(settled(head), () => {
        queue.shift()
        if (head.error) return Effect.fail(Option.some(session.error(head.error, "read", path)))
        // The read lets go of its views as it hands them over. It was issued before its reply came,
        // so V8 may have moved it to the old generation already: there it lives on as garbage
        // until the next full GC, and the views it still held would keep the reply's packet buffers
        // alive through every young-generation GC until then. That was the whole RSS growth of a 1 GiB
        // in-process stream (+65–87 MiB, a full GC every ~45 ms); without it the young GCs free the
        // packets: +50–56 MiB, 4 full GCs, 640–725 instead of 500–590 MiB/s
        // (`scratchpad/sftp/memcold.ts`, `--trace-gc`).
        const data = head.data
        head.data = []
        let bytes = 0
        for (const view of data) bytes += view.length
        if (bytes === 0) {
          eof = true
          queue.length = 0
          return Effect.fail(Option.none())
        }
        if (bytes < head.length) queue.unshift(issue(head.offset + bytes, head.length - bytes))
        return Effect.succeed(Chunk.unsafeFromArray<Uint8Array>(data))
      })
    })
    return Stream.repeatEffectChunkOption(pull)
  })

/**
 * Writes what it receives at increasing offsets from `offset`. Small chunks are coalesced into
 * requests of the session's write size; no more input is taken while `MAX_IN_FLIGHT` requests are
 * unacknowledged. `finish` sends the rest and waits for every acknowledgement.
 *
 * A request copies its data before `send` returns (into the reused buffer of `writeRequests.ts`,
 * or ssh2's own request buffer; for at most the write length, which `size` is), so small chunks are
 * gathered in one reused staging buffer rather than a fresh `Buffer.concat` per request, and a
 * chunk of at least `size` bytes is sent from where it is: the caller's chunk is free once `push`
 * returns.
 *
 * @internal
 */
export const makeWriter = (session: Session, handle: Buffer, path: string, offset: number) => {
  const size = session.maxWriteLength
  let position = offset
  let inFlight = 0
  let failure: SftpError | undefined = undefined
  let wake: (() => void) | undefined = undefined
  let staging: Buffer | undefined = undefined
  let staged = 0

  const notify = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const send = (buffer: Buffer, start: number, length: number) => {
    inFlight++
    WriteRequests.write(session.sftp, handle, buffer, start, length, position, (error) => {
      inFlight--
      if (error && failure === undefined) failure = session.error(error, "write", path)
      notify()
    })
    position += length
  }
  const waitUntil = (ready: () => boolean): Effect.Effect<void, SftpError> =>
    Effect.async<void, SftpError>((resume) => {
      const check = () => {
        if (failure !== undefined) return resume(Effect.fail(failure))
        if (ready()) return resume(Effect.void)
        wake = check
      }
      check()
      return Effect.sync(() => {
        wake = undefined
      })
    })
  const checkOpen = Effect.suspend(() => {
    if (failure !== undefined) return Effect.fail(failure)
    return session.ensureOpen("write", path)
  })
  const hasSlot = () => inFlight < MAX_IN_FLIGHT
  const waitForSlot = Effect.zipRight(checkOpen, waitUntil(hasSlot))
  /**
   * Sends `data` from `from`: whole requests straight from it, the remainder (under `size`) into the
   * staging buffer, which goes out once full. Waits for a free slot before each request.
   */
  const feed = (data: Buffer, from: number): Effect.Effect<void, SftpError> =>
    Effect.suspend(() => {
      let at = from
      while (at < data.length) {
        if (staged === 0 && data.length - at >= size) {
          if (!hasSlot()) return Effect.zipRight(waitForSlot, feed(data, at))
          send(data, at, size)
          at += size
          continue
        }
        staging ??= Buffer.allocUnsafeSlow(size)
        const take = Math.min(size - staged, data.length - at)
        data.copy(staging, staged, at, at + take)
        staged += take
        at += take
        if (staged === size) {
          if (!hasSlot()) return Effect.zipRight(waitForSlot, feed(data, at))
          send(staging, 0, staged)
          staged = 0
        }
      }
      return Effect.void
    })
  const flushStaged: Effect.Effect<void, SftpError> = Effect.suspend(() => {
    if (staged === 0) return Effect.void
    if (!hasSlot()) return Effect.zipRight(waitForSlot, flushStaged)
    send(staging!, 0, staged)
    staged = 0
    return Effect.void
  })
  const push = (chunk: Uint8Array): Effect.Effect<void, SftpError> =>
    Effect.suspend(() => {
      if (chunk.length === 0) return Effect.void
      const data = asBuffer(chunk)
      // as before: the session is checked only when a request is about to go out
      return staged + data.length < size ? feed(data, 0) : Effect.zipRight(checkOpen, feed(data, 0))
    })
  const finish: Effect.Effect<void, SftpError> = Effect.zipRight(
    Effect.zipRight(checkOpen, flushStaged),
    waitUntil(() => inFlight === 0)
  )
  return { push, finish, position: () => position }
}

/**
 * A sink writing to an already open handle (the caller owns it).
 *
 * @internal
 */
export const sinkHandle = (
  session: Session,
  handle: Buffer,
  path: string,
  offset: number
): Sink.Sink<void, Uint8Array, never, SftpError> =>
  Sink.suspend(() => {
    const writer = makeWriter(session, handle, path, offset)
    return Sink.forEachChunk((chunk: Chunk.Chunk<Uint8Array>) => Effect.forEach(chunk, writer.push, { discard: true }))
      .pipe(Sink.mapEffect(() => writer.finish))
  })
