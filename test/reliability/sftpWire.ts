/**
 * Just enough of the SFTP v3 wire format to send well-formed, oversized and malformed requests on a
 * raw `subsystem sftp` channel and read the replies.
 */
import * as Effect from "effect/Effect"
import type { Duplex } from "node:stream"

export const FXP = { INIT: 1, VERSION: 2, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, STATUS: 101, HANDLE: 102, DATA: 103 }
export const FXF = { READ: 0x01, WRITE: 0x02, CREAT: 0x08, TRUNC: 0x10 }

const u32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}
const u64 = (n: number) => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}
const str = (s: string | Uint8Array) => {
  const bytes = typeof s === "string" ? Buffer.from(s) : Buffer.from(s)
  return Buffer.concat([u32(bytes.length), bytes])
}

/** A packet: length, type, body. */
export const packet = (type: number, ...fields: ReadonlyArray<Buffer>): Buffer => {
  const body = Buffer.concat([Buffer.from([type]), ...fields])
  return Buffer.concat([u32(body.length), body])
}

export const init = () => packet(FXP.INIT, u32(3))
export const open = (id: number, path: string, pflags: number) =>
  packet(FXP.OPEN, u32(id), str(path), u32(pflags), u32(0))
export const read = (id: number, handle: Buffer, offset: number, length: number) =>
  packet(FXP.READ, u32(id), str(handle), u64(offset), u32(length))
export const write = (id: number, handle: Buffer, offset: number, data: Uint8Array) =>
  packet(FXP.WRITE, u32(id), str(handle), u64(offset), str(data))
export const close = (id: number, handle: Buffer) => packet(FXP.CLOSE, u32(id), str(handle))
/** An OPEN whose path claims `claimed` bytes but carries 4. */
export const openWithLyingPath = (id: number, claimed: number) =>
  packet(FXP.OPEN, u32(id), u32(claimed), Buffer.from("abcd"))
/** Only the header of a packet that claims `length` bytes. */
export const lyingHeader = (length: number) => Buffer.concat([u32(length), Buffer.from([FXP.OPEN])])
export { u32 }

export interface Reply {
  readonly type: number
  readonly id: number
  /** The body after type and id. */
  readonly body: Buffer
}

/** Splits replies off a stream. */
export class Replies {
  private buffer = Buffer.alloc(0)
  private readonly waiting: Array<() => void> = []
  readonly received: Array<Reply> = []
  ended = false

  constructor(stream: Duplex) {
    stream.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      while (this.buffer.length >= 4) {
        const length = this.buffer.readUInt32BE(0)
        if (this.buffer.length < 4 + length) break
        const body = this.buffer.subarray(4, 4 + length)
        this.buffer = this.buffer.subarray(4 + length)
        const type = body[0]!
        const id = type === FXP.VERSION ? 0 : body.readUInt32BE(1)
        this.received.push({ type, id, body: body.subarray(type === FXP.VERSION ? 5 : 5) })
      }
      this.wake()
    })
    stream.on("close", () => {
      this.ended = true
      this.wake()
    })
    stream.on("end", () => {
      this.ended = true
      this.wake()
    })
  }

  private wake() {
    for (const waiter of this.waiting.splice(0)) waiter()
  }

  /** Waits for the reply to `id` (or the VERSION when `id` is `"version"`); `undefined` if the stream ended. */
  awaitReply(id: number | "version"): Effect.Effect<Reply | undefined> {
    const find = () =>
      this.received.find((r) => id === "version" ? r.type === FXP.VERSION : r.id === id && r.type !== FXP.VERSION)
    return Effect.async<Reply | undefined>((resume) => {
      const check = () => {
        const reply = find()
        if (reply !== undefined || this.ended) {
          resume(Effect.succeed(reply))
          return true
        }
        return false
      }
      if (check()) return
      const waiter = () => {
        if (!check()) this.waiting.push(waiter)
      }
      this.waiting.push(waiter)
    })
  }

  /** Resolves when the stream has ended (or after `millis`, with `false`). */
  awaitEnd(millis: number): Effect.Effect<boolean> {
    return Effect.async<boolean>((resume) => {
      const deadline = setTimeout(() => resume(Effect.succeed(false)), millis)
      const check = () => {
        if (this.ended) {
          clearTimeout(deadline)
          resume(Effect.succeed(true))
        } else {
          this.waiting.push(check)
        }
      }
      check()
      return Effect.sync(() => clearTimeout(deadline))
    })
  }
}

/** The handle in a HANDLE reply. */
export const handleOf = (reply: Reply | undefined): Buffer => {
  if (reply === undefined || reply.type !== FXP.HANDLE) throw new Error(`expected HANDLE, got ${reply?.type}`)
  const length = reply.body.readUInt32BE(0)
  return Buffer.from(reply.body.subarray(4, 4 + length))
}

/** The status code of a STATUS reply and its message. */
export const statusOf = (reply: Reply | undefined): { readonly code: number; readonly message: string } => {
  if (reply === undefined || reply.type !== FXP.STATUS) throw new Error(`expected STATUS, got ${reply?.type}`)
  const code = reply.body.readUInt32BE(0)
  const length = reply.body.readUInt32BE(4)
  return { code, message: reply.body.subarray(8, 8 + length).toString() }
}

/** The data length of a DATA reply. */
export const dataLength = (reply: Reply | undefined): number => {
  if (reply === undefined || reply.type !== FXP.DATA) throw new Error(`expected DATA, got ${reply?.type}`)
  return reply.body.readUInt32BE(0)
}
