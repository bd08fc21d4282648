/**
 * What a TCP connection's peer sends lands in slabs that are used again
 * (`src/internal/transport/inboundBuffers.ts`), fed to ssh2 a whole packet at a time
 * (`wholePackets.ts`): OpenSSH uploads through the listener arrive intact with each cipher,
 * slabs go round, and data for a channel that may keep it (a process's stdin) is not overwritten.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as InboundBuffers from "../../src/internal/transport/inboundBuffers.js"
import * as WholePackets from "../../src/internal/transport/wholePackets.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import { waitUntil } from "../local/support.js"
import { listenForOpenSsh, makeOpenSshSetup, run } from "../support/openssh.js"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

/** ssh2's cipher and decipher for `name`; `packets` encrypts payloads of the given sizes, filled with their size. */
const pairFor = (name: string) => {
  const wire: Array<Buffer> = []
  const payloads: Array<Buffer> = []
  const { cipher, decipher } = WholePackets.ssh2Pair(name, {
    onWrite: (packet) => wire.push(Buffer.from(packet)),
    onPayload: (payload) => payloads.push(Buffer.from(payload))
  })!
  const packets = (sizes: ReadonlyArray<number>) => {
    wire.length = 0
    for (const size of sizes) {
      const packet = cipher.allocPacket(size)
      packet.fill(size & 0xff, 5, 5 + size)
      cipher.encrypt(packet)
    }
    return { stream: Buffer.concat(wire), lengths: wire.map((p) => p.length) }
  }
  return { decipher, packets, payloads }
}

/** An isolated sandbox served on a TCP port, and an OpenSSH `sftp -b` / `ssh` against it with `cipher`. */
const served = Effect.gen(function*() {
  const setup = yield* makeOpenSshSetup
  const root = fs.mkdtempSync(Path.join(setup.dir, "root-"))
  const sandbox = yield* LocalSandbox.make({ root, isolation: "none" })
  const { listener } = yield* listenForOpenSsh(setup, sandbox)
  const options = (cipher: string) => [...setup.sshOptions, "-o", `Ciphers=${cipher}`]
  const sftp = (cipher: string, batch: string) =>
    run("sftp", [...options(cipher), "-P", String(listener.port), "-b", "-", "root@127.0.0.1"], { input: batch })
  const ssh = (cipher: string, command: string, input: Uint8Array) =>
    run("ssh", [...options(cipher), "-p", String(listener.port), "root@127.0.0.1", command], { input })
  return { setup, root, sftp, ssh }
})

describe("WholePackets", () => {
  it("knows ssh2's AEAD deciphers and no other", () => {
    for (const name of ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]) {
      assert.isTrue(WholePackets.canFrame(pairFor(name).decipher), name)
    }
    assert.isFalse(WholePackets.canFrame(pairFor("aes128-ctr").decipher))
    assert.isFalse(WholePackets.canFrame(undefined))
  })

  it.each(["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])(
    "%s: ends runs at packet ends, waits for a packet's rest, and feeds a bad length as it is",
    (name) => {
      const { decipher, packets, payloads } = pairFor(name)
      const { lengths, stream } = packets([100, 32768, 7, 32768])
      const [a, b, c] = [lengths[0]!, lengths[1]!, lengths[2]!]
      // a read that ends inside the second packet: only the first is whole
      assert.strictEqual(WholePackets.wholeEnd(decipher, stream, 0, a + 1000), a)
      // none whole: nothing to feed
      assert.strictEqual(WholePackets.wholeEnd(decipher, stream, 0, a - 1), 0)
      decipher.decrypt(stream.subarray(0, a), 0, a)
      assert.isTrue(WholePackets.betweenPackets(decipher))
      // three whole packets from there, the fourth cut short
      const end = stream.length - 10
      assert.strictEqual(WholePackets.wholeEnd(decipher, stream, a, end), a + b + c)
      // fed as it came, up to inside the fourth: only that packet's rest is whole, once it is all there
      decipher.decrypt(stream.subarray(a, end), 0, end - a)
      assert.isFalse(WholePackets.betweenPackets(decipher))
      assert.strictEqual(WholePackets.wholeEnd(decipher, stream, end, stream.length - 1), end)
      assert.strictEqual(WholePackets.wholeEnd(decipher, stream, end, stream.length), stream.length)
      decipher.decrypt(stream.subarray(end), 0, 10)
      assert.deepStrictEqual(payloads.map((p) => p.length), [100, 32768, 7, 32768])
      assert.isTrue(payloads.every((p, i) => p.every((byte) => byte === ([100, 0, 7, 0][i]!))))
      // a length ssh2 refuses: everything is fed, for ssh2 to refuse it
      const bad = Buffer.alloc(64, 0xff)
      assert.strictEqual(WholePackets.wholeEnd(decipher, bad, 0, 64), 64)
    }
  )
})

/** A loopback server whose connections `adopt` takes over, a client connected to it, and what the adopted socket emits. */
const adoptedPair = Effect.acquireRelease(
  Effect.async<{ client: Net.Socket; adopted: Net.Socket; received: Array<Buffer>; server: Net.Server }>((resume) => {
    const received: Array<Buffer> = []
    const server = Net.createServer({ pauseOnConnect: true }, (accepted) => {
      const adopted = InboundBuffers.adopt(accepted)
      assert.notStrictEqual(adopted, accepted)
      adopted.on("data", (chunk: Buffer) => received.push(Buffer.from(chunk)))
      adopted.resume()
      resume(Effect.succeed({ client, adopted, received, server }))
    })
    let client: Net.Socket
    server.listen(0, "127.0.0.1", () => {
      client = Net.connect((server.address() as Net.AddressInfo).port, "127.0.0.1")
    })
  }),
  ({ adopted, client, server }) =>
    Effect.sync(() => {
      client.destroy()
      adopted.destroy()
      server.close()
    })
)

describe("InboundBuffers.adopt", () => {
  it.scopedLive("emits every byte in order across small reads, slabs and a pause; its server closes after it", () =>
    Effect.gen(function*() {
      const { adopted, client, received, server } = yield* adoptedPair
      const sent: Array<Buffer> = []
      const send = (bytes: Buffer) => {
        sent.push(bytes)
        client.write(bytes)
      }
      const all = () => Buffer.concat(received).length === Buffer.concat(sent).length
      // small (the shared landing buffer), then large (slabs, across several), then small again
      send(randomBytes(100))
      yield* waitUntil(all, "the first bytes")
      send(randomBytes(5 * 1024 * 1024 + 17))
      yield* waitUntil(all, "5 MiB")
      send(randomBytes(10))
      yield* waitUntil(all, "10 more bytes")
      // paused: nothing is emitted until it resumes, and then nothing is lost
      adopted.pause()
      const before = Buffer.concat(received).length
      send(randomBytes(3 * 1024 * 1024))
      yield* Effect.sleep("200 millis")
      assert.strictEqual(Buffer.concat(received).length, before)
      adopted.resume()
      yield* waitUntil(all, "3 MiB after the pause")
      assert.isTrue(Buffer.concat(received).equals(Buffer.concat(sent)))
      // the server counts the adopted socket as its connection: it closes once that one is gone
      client.destroy()
      adopted.destroy()
      yield* Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
      }).pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the server did not close") })
      )
    }))
})

describe("InboundBuffers", () => {
  it.scopedLive.each(["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])(
    "an OpenSSH sftp upload with %s arrives intact, and the slabs it landed in go round",
    (cipher) =>
      Effect.gen(function*() {
        const { root, setup, sftp } = yield* served
        const data = randomBytes(48 * 1024 * 1024 + 5)
        const local = Path.join(setup.dir, "up.bin")
        fs.writeFileSync(local, data)
        const { copied, reused } = InboundBuffers.stats()
        const result = yield* sftp(cipher, `put ${local} ${root}/up.bin\nput ${local} ${root}/again.bin\n`)
        assert.strictEqual(result.code, 0, result.stderr)
        assert.strictEqual(sha256(fs.readFileSync(`${root}/up.bin`)), sha256(data))
        assert.strictEqual(sha256(fs.readFileSync(`${root}/again.bin`)), sha256(data))
        // 96 MiB through 1 MiB slabs: most of them taken from the pool (none without the hand-back
        // of the SFTP server's chunks)
        assert.isAtLeast(InboundBuffers.stats().reused - reused, 48)
        // and the SFTP server got views of them, lent: nothing was copied
        assert.strictEqual(InboundBuffers.stats().copied - copied, 0)
      })
  )

  it.scopedLive("data for a process's stdin is its own copy: slabs used again meanwhile do not touch it", () =>
    Effect.gen(function*() {
      const { root, ssh } = yield* served
      const data = randomBytes(32 * 1024 * 1024 + 3)
      const { copied, reused } = InboundBuffers.stats()
      // a slow reader: what `cat` has not taken yet waits in the pipe to it, and in Node's writes
      const result = yield* ssh(
        "aes128-gcm@openssh.com",
        `sleep 0.5; dd bs=4096 status=none of=${root}/stdin.bin`,
        data
      )
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(sha256(fs.readFileSync(`${root}/stdin.bin`)), sha256(data))
      assert.isAtLeast(InboundBuffers.stats().reused - reused, 8)
      // what landed in slabs was copied for the channel (the first reads land in the shared buffer)
      assert.isAtLeast(InboundBuffers.stats().copied - copied, data.length - 4 * 1024 * 1024)
    }))
})
