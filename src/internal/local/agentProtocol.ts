/**
 * The wire format between the host and the in-sandbox agent (see `agentSource.ts`), shared by both
 * ends: the agent's source interpolates these numbers, the host client (`agent.ts`) uses them and
 * the decoder below.
 *
 * Every frame, both ways: `[u32 length][u32 id][u8 code][payload]`, little-endian, where `length`
 * counts the bytes after itself (so it is `5 + payload.length`).
 *
 * - Host → agent: `code` is an {@link Op}; `id` names the request (or, for `Stream*` ops, the
 *   stream, whose id is the id of the `Connect` request that opened it).
 * - Agent → host: `code` is a {@link Status}. `Ok`/`Error` answer the request with the same id, in
 *   any order (requests are pipelined). `Stream*` statuses carry events of a TCP stream.
 *
 * Payloads are packed binary: `u32`/`f64` little-endian; a string that is the last field takes the
 * rest of the payload (UTF-8), an earlier one is prefixed by its `u32` byte length. Bulk data (read
 * replies, write requests, stream data) is raw bytes, never re-encoded.
 *
 * @internal
 */

/** Request codes, host → agent. @internal */
export const Op = {
  /** path → attrs */
  Stat: 1,
  /** path → attrs */
  Lstat: 2,
  /** u32 flags (O_*), u32 mode, path → u32 handle, i32 descriptor (-1 unless a regular file) */
  Open: 3,
  /** u32 handle, f64 offset, u32 length → bytes (empty at end of file) */
  Read: 4,
  /** u32 handle, f64 offset, bytes → empty */
  Write: 5,
  /** u32 handle → attrs */
  Fstat: 6,
  /** u32 handle, setattrs → empty */
  Fsetstat: 7,
  /** u32 handle → empty */
  Fsync: 8,
  /** u32 handle → empty */
  Close: 9,
  /** path → u32 count, count × (u32 name length, name, attrs) */
  Readdir: 10,
  /** u32 mode, path */
  Mkdir: 11,
  /** path */
  Rmdir: 12,
  /** path */
  Unlink: 13,
  /** u32 flags (1 = overwrite), u32 old length, old, new */
  Rename: 14,
  /** path → path */
  Realpath: 15,
  /** path → target */
  Readlink: 16,
  /** u32 target length, target, link path */
  Symlink: 17,
  /** u32 existing length, existing, new path */
  Link: 18,
  /** setattrs, path */
  Setstat: 19,
  /** path → 7 × f64: type, bsize, blocks, bfree, bavail, files, ffree */
  Statfs: 20,
  /** u32 port, host → empty once connected; the request id becomes the stream id */
  Connect: 32,
  /** bytes for the socket */
  StreamData: 33,
  /** half-close: end the socket's writable side once the data before it is written */
  StreamEnd: 34,
  /** destroy the socket */
  StreamClose: 35,
  /** u32 bytes of stream data the host consumed (window credit) */
  StreamAck: 36
} as const

/** Reply and event codes, agent → host. @internal */
export const Status = {
  Ok: 0,
  /** u32 code length, errno code (e.g. `ENOENT`), message */
  Error: 1,
  /** bytes read from the socket */
  StreamData: 16,
  /** the peer ended its side */
  StreamEnd: 17,
  /** the socket closed; optional error as in `Error` */
  StreamClose: 18,
  /** u32 bytes the agent wrote to the socket (window credit) */
  StreamAck: 19
} as const

/** Frame header length: u32 length, u32 id, u8 code. @internal */
export const headerLength = 9

/** The largest read one request may ask for (longer ones are cut: a short read). @internal */
export const maxRead = 1024 * 1024

/** Reads up to this size use the agent's pooled reply buffers. @internal */
export const pooledRead = 256 * 1024

/** Bytes one side of a stream may send before the other acknowledges them. @internal */
export const streamWindow = 4 * 1024 * 1024

/** The largest stream data frame payload. @internal */
export const streamChunk = 64 * 1024

/** The largest frame the host accepts from the agent (a big directory listing). @internal */
export const maxFrame = 64 * 1024 * 1024

/**
 * Bits of the set-attributes block's leading u32 mask. The block: u32 mask, f64 size, u32 uid, u32
 * gid (`0xffffffff`: unchanged), u32 mode, f64 atime, f64 mtime (seconds).
 *
 * @internal
 */
export const SetMask = { size: 1, owner: 2, mode: 4, atime: 8, mtime: 16 } as const

/** Encoded length of the set-attributes block. @internal */
export const setAttrsLength = 4 + 8 + 4 + 4 + 4 + 8 + 8

/** Encoded attrs: u32 mode, u32 uid, u32 gid, u32 nlink, f64 size, f64 atimeMs, f64 mtimeMs. @internal */
export const attrsLength = 40

/** A frame header for a payload of `payloadLength` bytes, with `extra` bytes of room after it. @internal */
export const frameHeader = (id: number, code: number, payloadLength: number, extra = 0): Buffer => {
  const buffer = Buffer.allocUnsafe(headerLength + extra)
  buffer.writeUInt32LE(5 + payloadLength, 0)
  buffer.writeUInt32LE(id, 4)
  buffer[8] = code
  return buffer
}

/**
 * Splits a byte stream into frames, reading straight into each frame's own buffer: used with a
 * socket's `onread` option, `nextBuffer` tells the kernel where the next bytes go. Headers and
 * small frames are read into a scratch buffer (and small payloads copied out of it); the rest of a
 * frame that did not fit is read directly into a buffer of its exact size, with no intermediate
 * chunk and no copy.
 *
 * @internal
 */
export class FrameReader {
  private readonly scratch: Buffer
  private start = 0
  private end = 0
  private body: Buffer | undefined = undefined
  private bodyFill = 0
  private id = 0
  private code = 0

  constructor(
    private readonly onFrame: (id: number, code: number, payload: Buffer) => void,
    private readonly limit: number,
    scratchSize = 64 * 1024
  ) {
    this.scratch = Buffer.allocUnsafe(scratchSize)
  }

  /** Where the next read goes. */
  nextBuffer(): Buffer {
    return this.body !== undefined ? this.body.subarray(this.bodyFill) : this.scratch.subarray(this.end)
  }

  /** `length` bytes were read into the last `nextBuffer`. Throws a `RangeError` on a corrupt stream. */
  received(length: number): void {
    if (this.body !== undefined) {
      this.bodyFill += length
      if (this.bodyFill === this.body.length) {
        const body = this.body
        this.body = undefined
        this.onFrame(this.id, this.code, body)
      }
      return
    }
    this.end += length
    const scratch = this.scratch
    while (this.end - this.start >= headerLength) {
      const frameLength = scratch.readUInt32LE(this.start)
      if (frameLength < 5 || frameLength > this.limit) throw new RangeError(`bad frame length ${frameLength}`)
      const id = scratch.readUInt32LE(this.start + 4)
      const code = scratch[this.start + 8]!
      const size = frameLength - 5
      const from = this.start + headerLength
      const available = this.end - from
      if (available >= size) {
        this.start = from + size
        // the scratch buffer is reused: the payload gets its own copy
        this.onFrame(id, code, Buffer.from(scratch.subarray(from, from + size)))
        continue
      }
      this.id = id
      this.code = code
      this.body = Buffer.allocUnsafe(size)
      scratch.copy(this.body, 0, from, this.end)
      this.bodyFill = available
      this.start = this.end = 0
      return
    }
    // keep a partial header at the front, so the next read has room
    if (this.start === this.end) {
      this.start = this.end = 0
    } else if (this.start > 0) {
      scratch.copyWithin(0, this.start, this.end)
      this.end -= this.start
      this.start = 0
    }
  }
}
