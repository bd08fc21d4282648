/**
 * Packet buffers reused once a TCP socket has taken them (`src/internal/transport/packetBuffers.ts`),
 * over a real loopback connection: what is reused, what is not, and that the peer gets every
 * packet as written even when its buffer was refilled for the next one.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as Net from "node:net"
import * as PacketBuffers from "../../src/internal/transport/packetBuffers.js"
import * as MemorySandbox from "../../src/MemorySandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import { waitUntil } from "../local/support.js"

/** A connected pair of loopback sockets; `received` collects what the server side reads. */
const socketPair = Effect.acquireRelease(
  Effect.async<{ client: Net.Socket; server: Net.Socket; received: Array<Buffer>; close: () => void }>((resume) => {
    const received: Array<Buffer> = []
    let client: Net.Socket
    let server: Net.Socket | undefined
    let clientUp = false
    const connected = () => {
      if (server === undefined || !clientUp) return
      const close = () => {
        client.destroy()
        server!.destroy()
        listener.close()
      }
      resume(Effect.succeed({ client, server, received, close }))
    }
    const listener = Net.createServer((accepted) => {
      accepted.on("data", (chunk: Buffer) => received.push(chunk))
      server = accepted
      connected()
    })
    listener.listen(0, "127.0.0.1", () => {
      // resumed once connected on both sides: a write while connecting waits in the socket
      client = Net.connect((listener.address() as Net.AddressInfo).port, "127.0.0.1", () => {
        clientUp = true
        connected()
      })
    })
  }),
  (pair) => Effect.sync(() => pair.close())
)

/** An SFTP session of the in-process client to a memory sandbox, and 8 MiB + 3 B to move. */
const inProcessSftp = Effect.gen(function*() {
  const sandbox = yield* MemorySandbox.make()
  const client = yield* SandboxSsh.make(sandbox).openClient()
  return { sftp: yield* client.sftp(), data: randomBytes(8 * 1024 * 1024 + 3) }
})

describe("PacketBuffers", () => {
  it("small packets and oversized ones are plain buffers; large ones come from the pool", () => {
    const small = PacketBuffers.allocate(100)
    assert.strictEqual(small.length, 100)
    const large = PacketBuffers.allocate(32 * 1024 + 60)
    assert.strictEqual(large.length, 32 * 1024 + 60)
    assert.strictEqual(large.byteOffset, 0)
    assert.strictEqual(PacketBuffers.allocate(40 * 1024).length, 40 * 1024)
  })

  it.scopedLive("a packet the socket wrote at once is reused; the peer gets every packet as written", () =>
    Effect.gen(function*() {
      const { client, received } = yield* socketPair
      PacketBuffers.recycleOn(client)
      PacketBuffers.recycleOn(client) // idempotent
      const sent: Array<Buffer> = []
      const reusedBefore = PacketBuffers.stats().reused
      for (let i = 0; i < 50; i++) {
        const packet = PacketBuffers.allocate(32 * 1024)
        randomBytes(packet.length).copy(packet)
        sent.push(Buffer.from(packet))
        client.write(packet)
        // let the peer read, so that the socket's kernel buffer never fills
        yield* waitUntil(() => Buffer.concat(received).length === (i + 1) * 32 * 1024, "the packet at the peer")
      }
      assert.isTrue(Buffer.concat(received).equals(Buffer.concat(sent)))
      // one buffer went round: every packet after the first was the one before it, refilled
      assert.isAtLeast(PacketBuffers.stats().reused - reusedBefore, 49)
    }))

  it.scopedLive("a packet the socket had to keep, or written to another socket, is not reused", () =>
    Effect.gen(function*() {
      const { client, received, server } = yield* socketPair
      PacketBuffers.recycleOn(client)
      const kept = PacketBuffers.allocate(32 * 1024)
      kept.fill(7)
      const other = PacketBuffers.allocate(32 * 1024)
      other.fill(9)
      const pooled = PacketBuffers.stats().pooled
      // corked: the write waits in the socket, which keeps the buffer
      client.cork()
      client.write(kept)
      assert.isAbove(client.writableLength, 0)
      assert.strictEqual(PacketBuffers.stats().pooled, pooled)
      client.uncork()
      // a socket that does not recycle
      server.write(other)
      assert.strictEqual(PacketBuffers.stats().pooled, pooled)
      yield* waitUntil(() => Buffer.concat(received).length === 32 * 1024, "the corked packet at the peer")
      assert.isTrue(Buffer.concat(received).equals(Buffer.alloc(32 * 1024, 7)))
    }))

  it("giveBack: a packet of ours goes back to the pool once, however often it is handed back; others never", () => {
    const packet = PacketBuffers.allocate(32 * 1024)
    const pooled = PacketBuffers.stats().pooled
    PacketBuffers.giveBack(Buffer.alloc(32 * 1024)) // not ours
    PacketBuffers.giveBack(packet.subarray(100, 200)) // a view of ours: its whole packet
    PacketBuffers.giveBack(packet)
    assert.strictEqual(PacketBuffers.stats().pooled, pooled + 1)
    const first = PacketBuffers.allocate(32 * 1024)
    assert.strictEqual(first.buffer, packet.buffer)
    const second = PacketBuffers.allocate(32 * 1024)
    assert.notStrictEqual(second.buffer, packet.buffer, "handed out twice")
  })

  it.scopedLive("an in-process SFTP upload hands the client's packets back once the server framed them", () =>
    Effect.gen(function*() {
      const { data, sftp } = yield* inProcessSftp
      const reused = PacketBuffers.stats().reused
      yield* sftp.write("/root/up.bin", data)
      // 256 packets of 32 KiB carry 8 MiB; after the first window's worth (2 MiB, 64 packets) each
      // one is an earlier one, handed back (193 measured; none without the hand-back)
      assert.isAtLeast(PacketBuffers.stats().reused - reused, 150)
      assert.isTrue(Buffer.from(yield* sftp.read("/root/up.bin")).equals(data))
    }))

  it.scopedLive("an in-process whole-file read hands the server's packets back once it copied them; a stream's are kept", () =>
    Effect.gen(function*() {
      const { data, sftp } = yield* inProcessSftp
      yield* sftp.write("/root/down.bin", data)
      const reused = PacketBuffers.stats().reused
      const [whole, streamed] = yield* Effect.all([
        sftp.read("/root/down.bin"),
        // at the same time on the same session: packets may carry bytes of both
        Stream.runCollect(sftp.readStream("/root/down.bin")).pipe(
          Effect.map((chunks) => Buffer.concat(Chunk.toArray(chunks)))
        )
      ], { concurrency: 2 })
      assert.isTrue(Buffer.from(whole).equals(data))
      assert.isTrue(streamed.equals(data), "the stream's views were not overwritten")
      // the whole-file read's 256 packets, less a window's worth and those shared with the stream
      assert.isAtLeast(PacketBuffers.stats().reused - reused, 100)
    }))
})
