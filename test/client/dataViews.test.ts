/**
 * `readViews` and the reader `install` puts in front of ssh2's SFTP parser, against ssh2's own
 * SFTP client code: a real `SFTP` instance over a fake channel, fed the server's packets by hand
 * (split wherever a test likes), so the test sees exactly what ssh2 does with each reply.
 */
import { assert, describe, it } from "@effect/vitest"
import { randomBytes } from "node:crypto"
import { createRequire } from "node:module"
import type * as ssh2 from "ssh2"
import * as DataViews from "../../src/internal/client/sftp/dataViews.js"

const { SFTP } = createRequire(import.meta.url)("ssh2/lib/protocol/SFTP.js") as {
  SFTP: new(client: unknown, chanInfo: unknown, cfg: unknown) => ssh2.SFTPWrapper & { push(data: Buffer): void }
}

const FXP_VERSION = 2
const FXP_STATUS = 101
const FXP_DATA = 103
const FXP_ATTRS = 105
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
const status = (id: number, code: number, message: string) =>
  packet(FXP_STATUS, u32(id), u32(code), string(Buffer.from(message)), string(Buffer.alloc(0)))

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
  /** The id of the newest request sent, and (for a READ) its offset and length. */
  const last = () => {
    const p = sent.at(-1)!
    if (p[4] !== FXP_READ) return { id: p.readUInt32BE(5), offset: -1, length: -1 }
    const at = 13 + p.readUInt32BE(9)
    return { id: p.readUInt32BE(5), offset: Number(p.readBigUInt64BE(at)), length: p.readUInt32BE(at + 8) }
  }
  return { sftp, last }
}

const handle = Buffer.from("h1")

/** Calls `readViews` and returns what its callback got, and whether it took the request over. */
const read = (sftp: ssh2.SFTPWrapper, position: number, length: number) => {
  const got: { error?: Error | undefined; views?: ReadonlyArray<Buffer>; calls: number } = { calls: 0 }
  const takenOver = DataViews.readViews(sftp, handle, position, length, (error, views) => {
    got.error = error
    got.views = views
    got.calls++
  })
  return { got, takenOver }
}
const bytesOf = (views: ReadonlyArray<Buffer> | undefined) => Buffer.concat(views ?? [])

describe("readViews without the reader: ssh2 reassembles, the request is taken over", () => {
  it("gets ssh2's reassembled packet as is, not a copy", () => {
    const { last, sftp } = session()
    const bytes = randomBytes(100_000)
    const { got, takenOver } = read(sftp, 7, 100_000)
    assert.isTrue(takenOver)
    const request = last()
    assert.deepStrictEqual([request.offset, request.length], [7, 100_000])
    const reply = packet(FXP_DATA, u32(request.id), string(bytes))
    sftp.push(reply.subarray(0, 40_000))
    assert.strictEqual(got.calls, 0)
    sftp.push(reply.subarray(40_000))
    assert.strictEqual(got.views!.length, 1)
    assert.isTrue(got.views![0]!.equals(bytes))
    // a view on that packet (type, id, length before it), not a copy into a buffer of ours
    assert.strictEqual(got.views![0]!.byteOffset, 9)
    assert.strictEqual(got.views![0]!.buffer.byteLength, reply.length - 4)
  })

  it("reads end of file as no bytes, other statuses and excess data as errors", () => {
    const { last, sftp } = session()
    const eof = read(sftp, 0, 10)
    sftp.push(status(last().id, 1, "EOF"))
    assert.isUndefined(eof.got.error)
    assert.strictEqual(eof.got.views!.length, 0)

    const denied = read(sftp, 0, 10)
    sftp.push(status(last().id, 3, "nope"))
    assert.strictEqual(denied.got.error?.message, "nope")
    assert.strictEqual((denied.got.error as { code?: number }).code, 3)

    const excess = read(sftp, 0, 10)
    sftp.push(packet(FXP_DATA, u32(last().id), string(randomBytes(11))))
    assert.match(excess.got.error!.message, /more data than requested/)
  })

  it("a request that cannot be taken over still gets its bytes, copied out of ssh2's buffer", () => {
    const { last, sftp } = session()
    // as if ssh2 numbered its requests differently: the newest one is not where it is looked up
    let stored = -1
    Object.defineProperty(sftp, "_writeReqid", { get: () => stored + 0.5, set: (id: number) => (stored = id) })
    const bytes = randomBytes(50_000)
    const first = read(sftp, 0, 50_000)
    const second = read(sftp, 50_000, 50_000)
    assert.isFalse(first.takenOver)
    assert.isFalse(second.takenOver)
    const secondId = last().id
    // both replies land in the one shared buffer; each is copied out as it arrives
    sftp.push(packet(FXP_DATA, u32(secondId), string(bytes.subarray(20_000))))
    sftp.push(packet(FXP_DATA, u32(secondId - 1), string(bytes)))
    assert.isTrue(bytesOf(first.got.views).equals(bytes))
    assert.isTrue(bytesOf(second.got.views).equals(bytes.subarray(20_000)))
    assert.notStrictEqual(first.got.views![0]!.buffer, second.got.views![0]!.buffer)
  })
})

describe("the reader in front of ssh2's parser", () => {
  it("hands a DATA reply over as views of the chunks it arrived in, without a copy", () => {
    const { last, sftp } = session()
    assert.isTrue(DataViews.install(sftp))
    assert.isTrue(DataViews.install(sftp), "idempotent")
    const bytes = randomBytes(100_000)
    const { got } = read(sftp, 0, 100_000)
    const reply = packet(FXP_DATA, u32(last().id), string(bytes))
    const chunks = [reply.subarray(0, 5), reply.subarray(5, 40_000), reply.subarray(40_000)]
    for (const chunk of chunks) sftp.push(chunk)
    assert.strictEqual(got.calls, 1)
    assert.isTrue(bytesOf(got.views).equals(bytes))
    // every view lies in a chunk that was pushed: nothing was copied
    for (const view of got.views!) assert.isTrue(chunks.some((c) => c.buffer === view.buffer))
  })

  it("follows the framing past the packets it leaves to ssh2", () => {
    const { last, sftp } = session()
    DataViews.install(sftp)
    const before = DataViews.interceptedReplies()
    const eof = read(sftp, 0, 10)
    const eofId = last().id
    let attrs: unknown
    sftp.stat("/x", (error, stats) => (attrs = error ?? stats))
    const statId = last().id
    const bytes = randomBytes(50_000)
    const data = read(sftp, 10, 50_000)
    const stream = Buffer.concat([
      status(eofId, 1, "EOF"),
      packet(FXP_ATTRS, u32(statId), u32(0)),
      packet(FXP_DATA, u32(last().id), string(bytes))
    ])
    for (let at = 0; at < stream.length; at += 4096) sftp.push(stream.subarray(at, at + 4096))
    assert.strictEqual(eof.got.views!.length, 0)
    assert.isObject(attrs)
    assert.isTrue(bytesOf(data.got.views).equals(bytes))
    assert.strictEqual(DataViews.interceptedReplies() - before, 1)
    for (const view of data.got.views!) assert.strictEqual(view.buffer, stream.buffer)
  })

  it("whatever the chunking and the order of replies, every request gets exactly its reply", () => {
    for (let seed = 1; seed <= 40; seed++) {
      let state = seed
      const random = (n: number) => {
        state = (state * 1103515245 + 12345) % 2147483648
        return state % n
      }
      const { last, sftp } = session()
      assert.isTrue(DataViews.install(sftp))
      const before = DataViews.interceptedReplies()
      let dataReplies = 0
      const checks: Array<() => void> = []
      let pushed: ArrayBufferLike | undefined = undefined
      const replies: Array<Buffer> = []
      for (let i = 0; i < 30; i++) {
        const kind = random(5)
        const size = [0, 1, 12, 13, 300, 40_000, 200_000][random(7)]!
        const bytes = randomBytes(size)
        if (kind <= 1) {
          // a stream's read: views, or end of file
          const { got } = read(sftp, i, Math.max(size, 1))
          const id = last().id
          const eof = kind === 1
          if (!eof) dataReplies++
          replies.push(eof ? status(id, 1, "EOF") : packet(FXP_DATA, u32(id), string(bytes)))
          checks.push(() => {
            assert.strictEqual(got.calls, 1, `seed ${seed}, request ${i}`)
            assert.isUndefined(got.error)
            assert.isTrue(bytesOf(got.views).equals(eof ? Buffer.alloc(0) : bytes), `seed ${seed}, request ${i}`)
            // taken by the reader: views of what was pushed (ssh2 would have reassembled a reply
            // spread over chunks in a buffer of its own)
            for (const view of got.views!) assert.strictEqual(view.buffer, pushed, `seed ${seed}, request ${i}`)
          })
        } else if (kind === 2) {
          // ssh2's own read into a buffer: left to ssh2
          const target = Buffer.alloc(Math.max(size, 1))
          let result: [unknown, number | undefined] | undefined
          sftp.read(handle, target, 0, target.length, 0, (error, n) => (result = [error, n]))
          replies.push(packet(FXP_DATA, u32(last().id), string(bytes)))
          checks.push(() => {
            assert.deepStrictEqual(result, [undefined, size], `seed ${seed}, request ${i}`)
            assert.isTrue(target.subarray(0, size).equals(bytes))
          })
        } else if (kind === 3) {
          let result: unknown
          sftp.stat("/x", (error, stats) => (result = error ?? stats))
          replies.push(packet(FXP_ATTRS, u32(last().id), u32(0)))
          checks.push(() => assert.isObject(result, `seed ${seed}, request ${i}`))
        } else {
          // a DATA reply longer than asked: ssh2's error, as without the reader
          const { got } = read(sftp, i, 5)
          replies.push(packet(FXP_DATA, u32(last().id), string(randomBytes(6))))
          checks.push(() => assert.match(got.error?.message ?? "", /more data/, `seed ${seed}, request ${i}`))
        }
      }
      // replies in any order, cut anywhere (single bytes included)
      for (let i = replies.length - 1; i > 0; i--) {
        const j = random(i + 1)
        ;[replies[i], replies[j]] = [replies[j]!, replies[i]!]
      }
      const stream = Buffer.concat(replies)
      pushed = stream.buffer
      for (let at = 0; at < stream.length;) {
        const n = [1, 2, 7, 13, 100, 4096, 32768, 70_000][random(8)]!
        sftp.push(stream.subarray(at, at + n))
        at += n
      }
      for (const check of checks) check()
      // every DATA reply to a stream's read was taken by the reader, none left to ssh2
      assert.strictEqual(DataViews.interceptedReplies() - before, dataReplies, `seed ${seed}`)
    }
  })
})
