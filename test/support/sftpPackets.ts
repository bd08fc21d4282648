/**
 * A byte-level SFTP v3 client for protocol tests: builds request packets by hand and parses the
 * replies our server sends, over a pair of in-memory streams.
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { PassThrough } from "node:stream"
import { serve, type SftpServerOptions, type SftpSessionError } from "../../src/internal/server/sftp/server.js"
import { FXP } from "../../src/internal/sftpProtocol.js"
import type { SandboxFileSystem } from "../../src/Sandbox.js"

/** Packet types, from the server's own table. */
export const T = FXP

// --- encoding ---------------------------------------------------------------------------------

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}
export const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}
export const str = (s: string | Uint8Array): Buffer => {
  const bytes = typeof s === "string" ? Buffer.from(s) : Buffer.from(s)
  return Buffer.concat([u32(bytes.length), bytes])
}
/** ATTRS with only PERMISSIONS, or empty. */
export const attrs = (permissions?: number): Buffer =>
  permissions === undefined ? u32(0) : Buffer.concat([u32(4), u32(permissions)])

/** A whole packet: length, type, then the fields (the id included for requests). */
export const packet = (type: number, ...fields: ReadonlyArray<Buffer>): Buffer => {
  const body = Buffer.concat([Buffer.from([type]), ...fields])
  return Buffer.concat([u32(body.length), body])
}
export const request = (type: number, id: number, ...fields: ReadonlyArray<Buffer>): Buffer =>
  packet(type, u32(id), ...fields)
export const init = packet(T.INIT, u32(3))

// --- decoding ---------------------------------------------------------------------------------

export class Fields {
  offset = 0
  constructor(readonly buffer: Buffer) {}
  u8() {
    return this.buffer[this.offset++]!
  }
  u32() {
    const v = this.buffer.readUInt32BE(this.offset)
    this.offset += 4
    return v
  }
  u64() {
    const v = this.buffer.readBigUInt64BE(this.offset)
    this.offset += 8
    return Number(v)
  }
  bytes() {
    const n = this.u32()
    const v = this.buffer.subarray(this.offset, this.offset + n)
    this.offset += n
    return v
  }
  string() {
    return this.bytes().toString("utf8")
  }
  attrs() {
    const flags = this.u32()
    const a: { size?: number; uid?: number; gid?: number; permissions?: number; atime?: number; mtime?: number } = {}
    if (flags & 1) a.size = this.u64()
    if (flags & 2) {
      a.uid = this.u32()
      a.gid = this.u32()
    }
    if (flags & 4) a.permissions = this.u32()
    if (flags & 8) {
      a.atime = this.u32()
      a.mtime = this.u32()
    }
    return a
  }
  get rest() {
    return this.buffer.subarray(this.offset)
  }
}

export interface Reply {
  readonly type: number
  readonly id: number
  /** The fields after the id (after the version for VERSION). */
  readonly fields: Fields
}

/** Splits a byte stream into replies. */
export class ReplyParser {
  private pending: Buffer = Buffer.alloc(0)
  readonly replies: Array<Reply> = []
  push(chunk: Buffer) {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    while (this.pending.length >= 4) {
      const length = this.pending.readUInt32BE(0)
      if (this.pending.length < 4 + length) break
      const body = this.pending.subarray(4, 4 + length)
      this.pending = this.pending.subarray(4 + length)
      const fields = new Fields(Buffer.from(body))
      const type = fields.u8()
      const id = fields.u32()
      this.replies.push({ type, id, fields })
    }
  }
}

export interface Status {
  readonly code: number
  readonly message: string
}
export const status = (reply: Reply): Status => {
  if (reply.type !== T.STATUS) throw new Error(`expected STATUS, got ${reply.type}`)
  const f = new Fields(reply.fields.buffer)
  f.offset = reply.fields.offset
  return { code: f.u32(), message: f.string() }
}

// --- a session --------------------------------------------------------------------------------

export interface Session {
  readonly input: PassThrough
  readonly output: PassThrough
  readonly parser: ReplyParser
  /** The server fiber: succeeds when the input ends, fails on a protocol violation. */
  readonly server: Fiber.RuntimeFiber<void, SftpSessionError>
  readonly send: (...packets: ReadonlyArray<Buffer>) => void
  /** Waits for the reply to request `id`. */
  readonly reply: (id: number) => Effect.Effect<Reply>
  /** Sends a request and waits for its reply. */
  readonly call: (type: number, id: number, ...fields: ReadonlyArray<Buffer>) => Effect.Effect<Reply>
}

/** Starts our server over in-memory streams; `read: false` leaves the output unread. */
export const startSession = (
  fs: SandboxFileSystem,
  options: Omit<SftpServerOptions, "fs"> & { readonly read?: boolean; readonly outputHighWaterMark?: number } = {}
): Effect.Effect<Session, never, Scope.Scope> =>
  Effect.gen(function*() {
    const input = new PassThrough()
    const output = new PassThrough(
      options.outputHighWaterMark === undefined ? {} : { highWaterMark: options.outputHighWaterMark }
    )
    const parser = new ReplyParser()
    if (options.read !== false) output.on("data", (chunk: Buffer) => parser.push(chunk))
    const server = yield* Effect.forkScoped(serve(input, output, { ...options, fs }))
    const send = (...packets: ReadonlyArray<Buffer>) => {
      for (const p of packets) input.write(p)
    }
    const reply = (id: number): Effect.Effect<Reply> =>
      Effect.suspend(() => {
        const found = parser.replies.find((r) => r.id === id && r.type !== T.VERSION)
        return found !== undefined ? Effect.succeed(found) : Effect.zipRight(Effect.sleep(1), reply(id))
      })
    return {
      input,
      output,
      parser,
      server,
      send,
      reply,
      call: (type, id, ...fields) => Effect.zipRight(Effect.sync(() => send(request(type, id, ...fields))), reply(id))
    }
  })
