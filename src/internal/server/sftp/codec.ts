/**
 * SFTP v3 wire format: packet framing, field readers, and reply encoders. Everything here is
 * synchronous and allocation-conscious: a packet is copied out of the input once (so the input's
 * chunks can be reused), WRITE data is a view on that packet, and DATA replies are a 13-byte header
 * sent in front of the file bytes as they came from the sandbox.
 *
 * @internal
 */
import type { FileAttributes, SetAttributes } from "../../../Sandbox.js"
import { ATTR, FXP, MAX_PACKET_LENGTH, type StatusCode, VERSION } from "../../sftpProtocol.js"

/**
 * The peer sent something that is not SFTP: the session ends (OpenSSH's `sftp-server` exits).
 *
 * @internal
 */
export class MalformedPacket extends Error {
  constructor(readonly detail: string) {
    super(`malformed SFTP packet: ${detail}`)
  }
}

const TWO_32 = 4294967296

// --- framing ----------------------------------------------------------------------------------

/**
 * Cuts a byte stream into packets (`uint32 length` + body). Bodies are returned without their
 * length field, each a copy: the caller may reuse a chunk once `push` returns. A body that lies
 * within one chunk is copied into a buffer of its own (from Node's shared pool, for small ones);
 * one spread over chunks is copied once into a buffer from a small pool (fresh 256 KiB buffers cost
 * page faults and GC work that dominated uploads), which the owner hands back with `release` once
 * nothing reads it.
 *
 * @internal
 */
export class PacketFramer {
  private readonly header = Buffer.alloc(4)
  private headerFill = 0
  private body: Buffer | undefined = undefined
  private bodyFill = 0
  private readonly pool: Array<Buffer> = []
  private readonly pooled = new WeakSet<ArrayBufferLike>()

  constructor(private readonly maxLength: number = MAX_PACKET_LENGTH, private readonly poolSize = 0) {}

  /** Bytes of an incomplete packet held back. */
  get pending(): number {
    return this.headerFill + this.bodyFill
  }

  /** Hands back a packet returned by `push` once nothing refers to its bytes any more. */
  release(packet: Buffer): void {
    if (!this.pooled.has(packet.buffer) || this.pool.length >= this.poolSize) return
    this.pool.push(Buffer.from(packet.buffer, 0, this.maxLength))
  }

  private allocate(length: number): Buffer {
    if (this.poolSize === 0) return Buffer.allocUnsafe(length)
    let buffer = this.pool.pop()
    if (buffer === undefined) {
      // its own ArrayBuffer (not Node's shared pool), so `release` can recognise it
      buffer = Buffer.from(new ArrayBuffer(this.maxLength))
      this.pooled.add(buffer.buffer)
    }
    return buffer.subarray(0, length)
  }

  /** Appends the complete packets in `chunk` to `out`; throws `MalformedPacket` on a bad length. */
  push(chunk: Uint8Array, out: Array<Buffer>): void {
    const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let position = 0
    while (position < data.length) {
      if (this.body !== undefined) {
        const take = Math.min(this.body.length - this.bodyFill, data.length - position)
        data.copy(this.body, this.bodyFill, position, position + take)
        this.bodyFill += take
        position += take
        if (this.bodyFill === this.body.length) {
          out.push(this.body)
          this.body = undefined
          this.bodyFill = 0
        }
        continue
      }
      let length: number
      if (this.headerFill === 0 && data.length - position >= 4) {
        length = data.readUInt32BE(position)
        position += 4
      } else {
        const take = Math.min(4 - this.headerFill, data.length - position)
        data.copy(this.header, this.headerFill, position, position + take)
        this.headerFill += take
        position += take
        if (this.headerFill < 4) return
        this.headerFill = 0
        length = this.header.readUInt32BE(0)
      }
      // type + (id or version) is the shortest body of any packet
      if (length < 5) throw new MalformedPacket(`packet of ${length} bytes`)
      if (length > this.maxLength) throw new MalformedPacket(`packet of ${length} bytes exceeds ${this.maxLength}`)
      if (data.length - position >= length) {
        // a copy (from Node's shared pool, for small ones), not a view: the chunk may be reused
        // once `push` returns (`SftpServerOptions.releaseInput`)
        out.push(Buffer.from(data.subarray(position, position + length)))
        position += length
      } else {
        this.body = this.allocate(length)
        this.bodyFill = 0
      }
    }
  }
}

// --- reading ----------------------------------------------------------------------------------

/**
 * Reads fields of one packet body; every read past its end throws `MalformedPacket`.
 *
 * @internal
 */
export class Reader {
  offset = 0
  constructor(readonly buffer: Buffer) {}

  private need(n: number): void {
    if (this.buffer.length - this.offset < n) throw new MalformedPacket("truncated field")
  }

  get remaining(): number {
    return this.buffer.length - this.offset
  }

  uint8(): number {
    this.need(1)
    return this.buffer[this.offset++]!
  }

  uint32(): number {
    this.need(4)
    const value = this.buffer.readUInt32BE(this.offset)
    this.offset += 4
    return value
  }

  /** A uint64 as a number; values past 2^53 lose precision (callers check `Number.isSafeInteger`). */
  uint64(): number {
    const high = this.uint32()
    const low = this.uint32()
    return high * TWO_32 + low
  }

  /** A `string` field as a view on the packet. */
  bytes(): Buffer {
    const length = this.uint32()
    this.need(length)
    const value = this.buffer.subarray(this.offset, this.offset + length)
    this.offset += length
    return value
  }

  /** A `string` field decoded as UTF-8 (a path or a name). */
  string(): string {
    const length = this.uint32()
    this.need(length)
    const value = this.buffer.toString("utf8", this.offset, this.offset + length)
    this.offset += length
    return value
  }
}

/** Attributes as a client sends them (SETSTAT, FSETSTAT, OPEN, MKDIR). @internal */
export interface RequestAttributes {
  readonly set: SetAttributes
  /** The PERMISSIONS field, when present. */
  readonly permissions: number | undefined
}

/** @internal */
export const readAttributes = (reader: Reader): RequestAttributes => {
  const flags = reader.uint32()
  const set: { -readonly [K in keyof SetAttributes]: SetAttributes[K] } = {}
  let permissions: number | undefined = undefined
  if (flags & ATTR.SIZE) set.size = reader.uint64()
  if (flags & ATTR.UIDGID) {
    set.uid = reader.uint32()
    set.gid = reader.uint32()
  }
  if (flags & ATTR.PERMISSIONS) {
    permissions = reader.uint32()
    set.mode = permissions & 0o7777
  }
  if (flags & ATTR.ACMODTIME) {
    set.atime = reader.uint32()
    set.mtime = reader.uint32()
  }
  if (flags & ATTR.EXTENDED) {
    const count = reader.uint32()
    // each pair is at least two empty strings; reading past the end throws
    for (let i = 0; i < count; i++) {
      reader.bytes()
      reader.bytes()
    }
  }
  return { set, permissions }
}

// --- writing ----------------------------------------------------------------------------------

/**
 * Builds one packet: reserves the length field, grows as needed, and fills the length in `finish`.
 *
 * @internal
 */
export class Writer {
  private buffer: Buffer
  private offset = 4

  constructor(type: number, capacity = 256) {
    this.buffer = Buffer.allocUnsafe(Math.max(capacity, 16))
    this.uint8(type)
  }

  private ensure(n: number): void {
    if (this.offset + n <= this.buffer.length) return
    const next = Buffer.allocUnsafe(Math.max(this.offset + n, this.buffer.length * 2))
    this.buffer.copy(next, 0, 0, this.offset)
    this.buffer = next
  }

  uint8(value: number): this {
    this.ensure(1)
    this.buffer[this.offset++] = value
    return this
  }

  uint32(value: number): this {
    this.ensure(4)
    this.buffer.writeUInt32BE(value >>> 0, this.offset)
    this.offset += 4
    return this
  }

  uint64(value: number): this {
    const safe = Number.isFinite(value) && value > 0 ? Math.min(Math.floor(value), Number.MAX_SAFE_INTEGER) : 0
    this.uint32(Math.floor(safe / TWO_32))
    return this.uint32(safe % TWO_32)
  }

  string(value: string): this {
    const length = Buffer.byteLength(value, "utf8")
    this.ensure(4 + length)
    this.buffer.writeUInt32BE(length, this.offset)
    this.buffer.write(value, this.offset + 4, length, "utf8")
    this.offset += 4 + length
    return this
  }

  bytes(value: Uint8Array): this {
    this.ensure(4 + value.length)
    this.buffer.writeUInt32BE(value.length, this.offset)
    this.buffer.set(value, this.offset + 4)
    this.offset += 4 + value.length
    return this
  }

  get length(): number {
    return this.offset
  }

  finish(): Buffer {
    this.buffer.writeUInt32BE(this.offset - 4, 0)
    return this.buffer.subarray(0, this.offset)
  }
}

const S_IFMT = 0o170000
const typeBits: Record<FileAttributes["type"], number> = {
  File: 0o100000,
  Directory: 0o040000,
  SymbolicLink: 0o120000,
  BlockDevice: 0o060000,
  CharacterDevice: 0o020000,
  FIFO: 0o010000,
  Socket: 0o140000,
  Unknown: 0
}

/** `st_mode` with the file type bits, also when a transport reported permission bits only. @internal */
export const fullMode = (attributes: FileAttributes): number =>
  (attributes.mode & S_IFMT) === 0 ? (attributes.mode & 0o7777) | typeBits[attributes.type] : attributes.mode

const clampUint32 = (value: number): number =>
  Number.isFinite(value) ? Math.min(Math.max(Math.floor(value), 0), TWO_32 - 1) : 0

/** Writes ATTRS with SIZE, UIDGID, PERMISSIONS and ACMODTIME, as OpenSSH does. @internal */
export const writeAttributes = (writer: Writer, attributes: FileAttributes): Writer =>
  writer
    .uint32(ATTR.SIZE | ATTR.UIDGID | ATTR.PERMISSIONS | ATTR.ACMODTIME)
    .uint64(attributes.size)
    .uint32(clampUint32(attributes.uid))
    .uint32(clampUint32(attributes.gid))
    .uint32(fullMode(attributes))
    .uint32(clampUint32(attributes.atime))
    .uint32(clampUint32(attributes.mtime))

/** @internal */
export const encodeVersion = (extensions: ReadonlyArray<readonly [string, string]>): Buffer => {
  const writer = new Writer(FXP.VERSION).uint32(VERSION)
  for (const [name, data] of extensions) writer.string(name).string(data)
  return writer.finish()
}

/** @internal */
export const encodeStatus = (id: number, code: StatusCode, message: string): Buffer =>
  new Writer(FXP.STATUS, 32 + message.length * 3).uint32(id).uint32(code).string(message).string("").finish()

/** @internal */
export const encodeHandle = (id: number, handle: Uint8Array): Buffer =>
  new Writer(FXP.HANDLE, 16 + handle.length).uint32(id).bytes(handle).finish()

/** @internal */
export const encodeAttrs = (id: number, attributes: FileAttributes): Buffer =>
  writeAttributes(new Writer(FXP.ATTRS, 48).uint32(id), attributes).finish()

/** The header of a DATA reply; the `length` data bytes follow it on the wire. @internal */
export const encodeDataHeader = (id: number, length: number): Buffer => {
  const header = Buffer.allocUnsafe(13)
  header.writeUInt32BE(9 + length, 0)
  header[4] = FXP.DATA
  header.writeUInt32BE(id, 5)
  header.writeUInt32BE(length, 9)
  return header
}

/** One NAME entry. `attributes` absent means the empty ATTRS (flags 0), as REALPATH sends. @internal */
export interface NameEntry {
  readonly filename: string
  readonly longname: string
  readonly attributes?: FileAttributes | undefined
}

/** @internal */
export const encodeName = (id: number, entries: ReadonlyArray<NameEntry>): Buffer => {
  const writer = new Writer(FXP.NAME, 64 + entries.length * 160).uint32(id).uint32(entries.length)
  for (const entry of entries) {
    writer.string(entry.filename).string(entry.longname)
    if (entry.attributes === undefined) writer.uint32(0)
    else writeAttributes(writer, entry.attributes)
  }
  return writer.finish()
}

/** An EXTENDED_REPLY whose payload is a list of uint64 (limits, statvfs). @internal */
export const encodeExtendedUint64s = (id: number, values: ReadonlyArray<number>): Buffer => {
  const writer = new Writer(FXP.EXTENDED_REPLY, 16 + values.length * 8).uint32(id)
  for (const value of values) writer.uint64(value)
  return writer.finish()
}

/** The 4-byte opaque handle string for a handle number (as OpenSSH's `handle_to_string`). @internal */
export const handleBytes = (handle: number): Buffer => {
  const bytes = Buffer.allocUnsafe(4)
  bytes.writeUInt32BE(handle, 0)
  return bytes
}

/** The handle number of a handle string, or `undefined` when it is not one of ours. @internal */
export const handleNumber = (bytes: Uint8Array): number | undefined =>
  bytes.length === 4 ? ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0 : undefined
