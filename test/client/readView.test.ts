/**
 * `readView` against ssh2's own SFTP client code: a real `SFTP` instance over a fake channel, fed
 * the server's packets by hand, so the test sees exactly what ssh2 does with each reply.
 */
import { assert, describe, it } from "@effect/vitest"
import { randomBytes } from "node:crypto"
import { createRequire } from "node:module"
import type * as ssh2 from "ssh2"
import { readView } from "../../src/internal/client/sftp/readView.js"

const { SFTP } = createRequire(import.meta.url)("ssh2/lib/protocol/SFTP.js") as {
  SFTP: new(client: unknown, chanInfo: unknown, cfg: unknown) => ssh2.SFTPWrapper & { push(data: Buffer): void }
}

const FXP_VERSION = 2
const FXP_STATUS = 101
const FXP_DATA = 103
const FXP_READ = 5

const packet = (type: number, ...fields: Array<Buffer>) => {
  const body = Buffer.concat([Buffer.from([type]), ...fields])
  const length = Buffer.alloc(4)
  length.writeUInt32BE(body.length)
  return Buffer.concat([length, body])
}
const u32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}
const string = (bytes: Buffer) => Buffer.concat([u32(bytes.length), bytes])

/** A client-side SFTP session whose outgoing packets land in `sent`. */
const session = () => {
  const sent: Array<Buffer> = []
  const protocol = {
    _remoteIdentRaw: "SSH-2.0-OpenSSH_9.2",
    channelData: (_id: number, data: Buffer) => sent.push(Buffer.from(data)),
    channelClose: () => {}
  }
  const sftp = new SFTP({ _protocol: protocol }, {
    type: "sftp",
    incoming: { id: 0, window: 1 << 30, packetSize: 32768, state: "open" },
    outgoing: { id: 0, window: 1 << 30, packetSize: 32768, state: "open" }
  }, {})
  sftp.push(packet(FXP_VERSION, u32(3)))
  /** The id, offset and length of the newest READ sent. */
  const lastRead = () => {
    const p = sent.at(-1)!
    assert.strictEqual(p[4], FXP_READ)
    const handleLength = p.readUInt32BE(9)
    const at = 13 + handleLength
    return { id: p.readUInt32BE(5), offset: Number(p.readBigUInt64BE(at)), length: p.readUInt32BE(at + 8) }
  }
  return { sftp, lastRead }
}

const handle = Buffer.from("h1")

/** Calls `readView` and returns what its callback got, and whether it took the request over. */
const read = (sftp: ssh2.SFTPWrapper, position: number, length: number) => {
  const got: { error?: Error | undefined; data?: Buffer } = {}
  const takenOver = readView(sftp, handle, position, length, (error, data) => {
    got.error = error
    got.data = data
  })
  return { got, takenOver }
}

describe("readView", () => {
  it("hands over ssh2's reassembled reply as is: the bytes, in a buffer of their own", () => {
    const { lastRead, sftp } = session()
    const bytes = randomBytes(100_000)
    const { got, takenOver } = read(sftp, 7, 100_000)
    assert.isTrue(takenOver)
    const request = lastRead()
    assert.deepStrictEqual([request.offset, request.length], [7, 100_000])
    // the reply arrives in two channel chunks, so ssh2 assembles it in a packet of its own
    const reply = packet(FXP_DATA, u32(request.id), string(bytes))
    sftp.push(reply.subarray(0, 40_000))
    assert.isUndefined(got.data)
    sftp.push(reply.subarray(40_000))
    assert.isUndefined(got.error)
    assert.isTrue(got.data!.equals(bytes))
    // a view on that packet (type, id, length before it), not a copy into a buffer of ours
    assert.strictEqual(got.data!.byteOffset, 9)
    assert.strictEqual(got.data!.buffer.byteLength, reply.length - 4)
  })

  it("reads end of file as no bytes, other statuses and excess data as errors", () => {
    const { lastRead, sftp } = session()
    const eof = read(sftp, 0, 10)
    sftp.push(packet(FXP_STATUS, u32(lastRead().id), u32(1), string(Buffer.from("EOF")), string(Buffer.alloc(0))))
    assert.isUndefined(eof.got.error)
    assert.strictEqual(eof.got.data!.length, 0)

    const denied = read(sftp, 0, 10)
    sftp.push(packet(FXP_STATUS, u32(lastRead().id), u32(3), string(Buffer.from("nope")), string(Buffer.alloc(0))))
    assert.strictEqual(denied.got.error?.message, "nope")
    assert.strictEqual((denied.got.error as { code?: number }).code, 3)

    const excess = read(sftp, 0, 10)
    sftp.push(packet(FXP_DATA, u32(lastRead().id), string(randomBytes(11))))
    assert.match(excess.got.error!.message, /more data than requested/)
  })

  it("a request that cannot be taken over still gets its bytes, copied out of ssh2's buffer", () => {
    const { lastRead, sftp } = session()
    // as if ssh2 numbered its requests differently: the newest one is not where it is looked up
    let stored = -1
    Object.defineProperty(sftp, "_writeReqid", { get: () => stored + 0.5, set: (id: number) => (stored = id) })
    const bytes = randomBytes(50_000)
    const first = read(sftp, 0, 50_000)
    const second = read(sftp, 50_000, 50_000)
    assert.isFalse(first.takenOver)
    assert.isFalse(second.takenOver)
    const secondId = lastRead().id
    // both replies land in the one shared buffer; each is copied out as it arrives
    sftp.push(packet(FXP_DATA, u32(secondId), string(bytes.subarray(20_000))))
    sftp.push(packet(FXP_DATA, u32(secondId - 1), string(bytes)))
    assert.isTrue(first.got.data!.equals(bytes))
    assert.isTrue(second.got.data!.equals(bytes.subarray(20_000)))
    assert.notStrictEqual(first.got.data!.buffer, second.got.data!.buffer)
  })
})
