/**
 * The raw stream of a hijacked exec connection as Node streams with backpressure: without a TTY
 * the Engine multiplexes stdout and stderr in frames (an 8-byte header: stream id, three zero
 * bytes, a big-endian payload length); with a TTY the bytes are the terminal's output as they are.
 *
 * @internal
 */
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import type * as Net from "node:net"
import { PassThrough, type Readable, Writable } from "node:stream"

const HEADER = 8

/**
 * Splits frames into `stdout` and `stderr`. A frame for a target that is full waits for its
 * `drain` before the next chunk is accepted, so a slow reader stops the socket (TCP backpressure
 * up to the daemon and the process's pipe) instead of growing memory.
 */
class Demultiplexer extends Writable {
  private header = Buffer.alloc(HEADER)
  private headerLength = 0
  private remaining = 0
  private target: PassThrough | undefined = undefined

  constructor(private readonly stdout: PassThrough, private readonly stderr: PassThrough) {
    super()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    let offset = 0
    const waiting = new Set<PassThrough>()
    while (offset < chunk.length) {
      if (this.remaining === 0) {
        const take = Math.min(HEADER - this.headerLength, chunk.length - offset)
        chunk.copy(this.header, this.headerLength, offset, offset + take)
        this.headerLength += take
        offset += take
        if (this.headerLength < HEADER) break
        this.headerLength = 0
        this.remaining = this.header.readUInt32BE(4)
        // 0 stdin (never sent by the daemon), 1 stdout, 2 stderr; a system error frame (3) is stderr
        this.target = this.header[0] === 1 ? this.stdout : this.stderr
        continue
      }
      const take = Math.min(this.remaining, chunk.length - offset)
      const target = this.target!
      if (!target.writableEnded && !target.destroyed && !target.write(chunk.subarray(offset, offset + take))) {
        waiting.add(target)
      }
      this.remaining -= take
      offset += take
    }
    if (waiting.size === 0) return callback()
    let pending = waiting.size
    for (const target of waiting) {
      const done = () => {
        target.removeListener("drain", done)
        target.removeListener("close", done)
        if (--pending === 0) callback()
      }
      target.once("drain", done)
      target.once("close", done)
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.stdout.end()
    this.stderr.end()
    callback()
  }
}

/** @internal */
export interface Outputs {
  readonly stdout: PassThrough
  readonly stderr: PassThrough
}

/**
 * Wires the socket's output to two readable streams; both end when the socket's output ends (or
 * the socket closes).
 *
 * @internal
 */
export const outputs = (socket: Net.Socket, tty: boolean, buffer = 1024 * 1024): Outputs => {
  const stdout = new PassThrough({ highWaterMark: buffer })
  const stderr = new PassThrough({ highWaterMark: 256 * 1024 })
  const sink: Writable = tty ? stdout : new Demultiplexer(stdout, stderr)
  if (tty) stderr.end()
  socket.pipe(sink)
  socket.once("close", () => {
    if (!sink.writableEnded) sink.end()
  })
  // The Engine half-closes when the process is gone but never reads the rest of our side: input
  // still queued would wait forever. All output is delivered by now (`end` follows the last data).
  socket.once("end", () => socket.destroy())
  return { stdout, stderr }
}

/**
 * A sink over the socket's writable side that half-closes it (stdin EOF for the process) when the
 * input ends, unless the process has a terminal. Returns as well when the socket was destroyed
 * meanwhile.
 *
 * @internal
 */
export const inputSink = <E>(
  socket: Net.Socket,
  onError: (error: unknown) => E,
  options: { readonly tty: boolean }
): Sink.Sink<void, Uint8Array, never, E> =>
  NodeSink.fromWritable<E, Uint8Array>(() => socket, onError, { endOnDone: false }).pipe(
    // On a terminal, the Engine turns stdin EOF into a hang-up of the terminal, which loses output
    // the command is still writing; sshd too keeps a terminal open when its client's input ends.
    Sink.mapEffect(() => (options.tty ? Effect.void : halfClose(socket)))
  )

/**
 * Ends the writable side and waits until it is flushed (or the socket is gone).
 *
 * @internal
 */
export const halfClose = (socket: Net.Socket): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (socket.destroyed || socket.writableFinished) return resume(Effect.void)
    const done = () => resume(Effect.void)
    socket.once("finish", done)
    socket.once("close", done)
    socket.end()
    return Effect.sync(() => {
      socket.removeListener("finish", done)
      socket.removeListener("close", done)
    })
  })

/**
 * Reads everything left in a readable, as one buffer.
 *
 * @internal
 */
export const readAll = (readable: Readable): Effect.Effect<Buffer> =>
  Effect.async<Buffer>((resume) => {
    const chunks: Array<Buffer> = []
    if (readable.readableEnded || readable.destroyed) return resume(Effect.succeed(Buffer.alloc(0)))
    const onData = (chunk: Buffer) => chunks.push(chunk)
    const done = () => {
      cleanup()
      resume(Effect.succeed(Buffer.concat(chunks)))
    }
    const cleanup = () => {
      readable.removeListener("data", onData)
      readable.removeListener("end", done)
      readable.removeListener("close", done)
    }
    readable.on("data", onData)
    readable.once("end", done)
    readable.once("close", done)
    return Effect.sync(cleanup)
  })
