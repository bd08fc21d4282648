/**
 * Hostile input against a real endpoint (`prepareServer` + `listen` / `serve` over a duplex): the
 * server never crashes (this process stays alive), never hangs past its timeouts, keeps memory
 * under `MEMORY_CAP_MIB` (peak growth of heapUsed + arrayBuffers while a scenario runs, attacker
 * paced to ≤ 1 MiB of its own buffers) and ends the connection.
 *
 * Before authentication: a seeded fuzzer mutates the first flight of a real OpenSSH client
 * (recorded through a TCP relay) and sends random bytes, odd banners and out-of-order messages.
 * After authentication (encrypted, so at the SSH message level through ssh2's client internals):
 * CHANNEL_DATA past the window (ssh2 #1505), floods of requests and channel opens, oversized and
 * malformed SFTP requests.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as fs from "node:fs"
import * as net from "node:net"
import * as Path from "node:path"
import type ssh2 from "ssh2"
import { makeDuplexPair } from "../../src/internal/transport/duplexPair.js"
import { run } from "../support/openssh.js"
import * as Sftp from "./sftpWire.js"
import {
  closedWithin,
  connectSsh2,
  type Endpoint,
  floodData,
  makeEndpoint,
  MiB,
  openSession,
  paced,
  prng,
  raw,
  remoteId,
  report,
  scaled,
  settle,
  snapshot,
  soak,
  ssh2Exec,
  throwawayClientOptions,
  timeout,
  withMemoryPeak
} from "./support.js"

/** Peak growth of heapUsed + arrayBuffers allowed while one hostile scenario runs. */
const MEMORY_CAP_MIB = 64

const SEED = Number(process.env.RELIABILITY_SEED ?? 0x5eed)

// --- the first flight of a real OpenSSH client ----------------------------------------------------

interface Flight {
  readonly banner: Buffer
  /** Plaintext packets (length field included) up to and including NEWKEYS. */
  readonly packets: ReadonlyArray<Buffer>
  /** What followed NEWKEYS (encrypted). */
  readonly tail: Buffer
}

/** Runs `ssh ... true` through a relay that records what the client sends. */
const recordFlight = (endpoint: Endpoint): Effect.Effect<Flight, Error, never> =>
  Effect.gen(function*() {
    const identity = Path.join(endpoint.dir, "id_fuzz")
    fs.writeFileSync(identity, endpoint.key.privateKey, { mode: 0o600 })
    const chunks: Array<Buffer> = []
    const relay = net.createServer((inbound) => {
      const outbound = net.connect(endpoint.listener.port, "127.0.0.1")
      inbound.on("data", (chunk: Buffer) => {
        chunks.push(chunk)
        outbound.write(chunk)
      })
      outbound.on("data", (chunk: Buffer) => inbound.write(chunk))
      inbound.on("error", () => {})
      outbound.on("error", () => {})
      inbound.on("close", () => outbound.destroy())
      outbound.on("close", () => inbound.destroy())
    })
    yield* Effect.async<void>((resume) => {
      relay.listen(0, "127.0.0.1", () => resume(Effect.void))
    })
    const result = yield* run("ssh", [
      ...throwawayClientOptions(identity),
      "-o",
      "LogLevel=ERROR",
      "-p",
      String((relay.address() as net.AddressInfo).port),
      "root@127.0.0.1",
      "true"
    ]).pipe(Effect.ensuring(Effect.sync(() => relay.close())))
    if (result.code !== 0) return yield* Effect.fail(new Error(`ssh through the relay failed: ${result.stderr}`))
    const bytes = Buffer.concat(chunks)
    const end = bytes.indexOf("\r\n")
    const banner = bytes.subarray(0, end + 2)
    const packets: Array<Buffer> = []
    let position = end + 2
    while (position + 6 <= bytes.length) {
      const length = bytes.readUInt32BE(position)
      const packet = bytes.subarray(position, position + 4 + length)
      packets.push(packet)
      position += 4 + length
      if (packet[5] === 21) break // NEWKEYS: what follows is encrypted
    }
    return { banner, packets, tail: bytes.subarray(position) }
  })

// --- mutations ------------------------------------------------------------------------------------

const INTERESTING = [0, 1, 4, 5, 8, 255, 256, 34_999, 35_000, 35_001, 65_536, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff]

/** A plaintext binary packet around `payload` (RFC 4253 §6), padded to 8 bytes. */
const plainPacket = (payload: Buffer, random: ReturnType<typeof prng>): Buffer => {
  let padding = 8 - ((5 + payload.length) % 8)
  if (padding < 4) padding += 8
  const header = Buffer.alloc(5)
  header.writeUInt32BE(1 + payload.length + padding)
  header[4] = padding
  return Buffer.concat([header, payload, random.bytes(padding)])
}

const nameList = (names: string) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(Buffer.byteLength(names))
  return Buffer.concat([b, Buffer.from(names)])
}

/** A KEXINIT built from scratch with odd name-lists. */
const oddKexinit = (random: ReturnType<typeof prng>): Buffer => {
  const lists = Array.from({ length: 10 }, () =>
    random.pick([
      "",
      "curve25519-sha256",
      "ssh-ed25519",
      "aes128-gcm@openssh.com",
      "none",
      "x".repeat(random.int(40_000)),
      "a,".repeat(random.int(5_000)),
      ",,,",
      "\u0000\u00ff",
      "nonexistent-algorithm@example.com"
    ]))
  return Buffer.concat([
    Buffer.from([20]),
    random.bytes(16),
    ...lists.map(nameList),
    Buffer.from([random.int(2)]),
    Buffer.alloc(4)
  ])
}

/** Message types sent in the wrong place: NEWKEYS, SERVICE_REQUEST, USERAUTH_REQUEST, CHANNEL_OPEN, ... */
const outOfOrder = (random: ReturnType<typeof prng>): Buffer => {
  const type = random.pick([1, 2, 3, 4, 5, 6, 21, 30, 31, 50, 51, 52, 60, 80, 90, 91, 94, 96, 97, 98, 255])
  return Buffer.concat([Buffer.from([type]), random.bytes(random.int(64))])
}

const mutate = (input: Buffer, random: ReturnType<typeof prng>): Buffer => {
  const bytes = Buffer.from(input)
  if (bytes.length === 0) return random.bytes(random.int(64))
  switch (random.int(7)) {
    case 0: {
      for (let i = random.int(8) + 1; i > 0; i--) bytes[random.int(bytes.length)]! ^= 1 << random.int(8)
      return bytes
    }
    case 1: {
      for (let i = random.int(4) + 1; i > 0; i--) bytes[random.int(bytes.length)] = random.pick([0, 0x7f, 0x80, 0xff])
      return bytes
    }
    case 2:
      return bytes.subarray(0, random.int(bytes.length))
    case 3: {
      const at = random.int(bytes.length)
      return Buffer.concat([bytes.subarray(0, at), random.bytes(random.int(256) + 1), bytes.subarray(at)])
    }
    case 4: {
      const at = random.int(bytes.length)
      const length = random.int(bytes.length - at) + 1
      return Buffer.concat([
        bytes.subarray(0, at + length),
        bytes.subarray(at, at + length),
        bytes.subarray(at + length)
      ])
    }
    case 5: {
      // an interesting uint32 over a length field or any other place
      if (bytes.length < 4) return bytes
      const at = random.next() < 0.5 ? 0 : random.int(bytes.length - 3)
      bytes.writeUInt32BE(random.pick(INTERESTING) >>> 0, at)
      return bytes
    }
    default:
      return Buffer.concat([bytes, random.bytes(random.int(128))])
  }
}

const oddBanners = [
  () => Buffer.from("x".repeat(9000)),
  () => Buffer.from("junk line\r\n".repeat(1100) + "SSH-2.0-late\r\n"),
  () => Buffer.from("SSH-1.5-ancient\r\n"),
  () => Buffer.from("SSH-1.99-compat\r\n"),
  () => Buffer.from("SSH-2.0-\u0000\u00ff\u0001\r\n"),
  () => Buffer.from("SSH-2.0-lf-only\n"),
  () => Buffer.from("\r\n\r\n\r\n"),
  () => Buffer.from("SSH-2.0-" + "v".repeat(300) + "\r\n")
]

/** One fuzz input (in pieces, as a peer may send it) and its kind, for the figures. */
const fuzzInput = (flight: Flight, random: ReturnType<typeof prng>): { kind: string; pieces: Array<Buffer> } => {
  let kind: string
  let bytes: Buffer
  switch (random.int(8)) {
    case 0:
      kind = "random"
      bytes = random.bytes(random.int(2048))
      break
    case 1:
      kind = "banner+random"
      bytes = Buffer.concat([flight.banner, random.bytes(random.int(2048))])
      break
    case 2:
      kind = "mutated-kexinit"
      bytes = Buffer.concat([flight.banner, mutate(flight.packets[0]!, random)])
      break
    case 3: {
      kind = "mutated-flight"
      const which = random.int(flight.packets.length + 1)
      const packets = flight.packets.map((p, i) => i === which ? mutate(p, random) : p)
      const tail = which === flight.packets.length ? mutate(flight.tail, random) : flight.tail
      bytes = Buffer.concat([flight.banner, ...packets, tail])
      break
    }
    case 4:
      kind = "odd-banner"
      bytes = Buffer.concat([random.pick(oddBanners)(), ...flight.packets])
      break
    case 5:
      kind = "odd-kexinit"
      bytes = Buffer.concat([flight.banner, plainPacket(oddKexinit(random), random), ...flight.packets.slice(1)])
      break
    case 6:
      kind = "out-of-order"
      bytes = Buffer.concat([
        flight.banner,
        ...Array.from({ length: random.int(4) + 1 }, () => plainPacket(outOfOrder(random), random)),
        ...flight.packets
      ])
      break
    default:
      kind = "mutated-banner"
      bytes = Buffer.concat([mutate(flight.banner, random), ...flight.packets])
  }
  const cuts = Array.from({ length: random.int(4) }, () => random.int(bytes.length + 1)).sort((a, b) => a - b)
  const pieces: Array<Buffer> = []
  let from = 0
  for (const cut of cuts) {
    pieces.push(bytes.subarray(from, cut))
    from = cut
  }
  pieces.push(bytes.subarray(from))
  return { kind, pieces: pieces.filter((piece) => piece.length > 0) }
}

interface Tally {
  iterations: number
  closedOk: number
  typedFailures: number
  defects: number
  hangs: number
  readonly kinds: Record<string, number>
}

const newTally = (): Tally => ({ iterations: 0, closedOk: 0, typedFailures: 0, defects: 0, hangs: 0, kinds: {} })

/** One input through `server.serve` over an in-memory duplex; the effect must end, typed. */
const fuzzDuplex = (endpoint: Endpoint, pieces: ReadonlyArray<Buffer>, tally: Tally) =>
  Effect.gen(function*() {
    const [serverSide, clientSide] = makeDuplexPair()
    clientSide.on("data", () => {})
    clientSide.on("error", () => {})
    const fiber = yield* Effect.fork(endpoint.server.serve(serverSide))
    for (const piece of pieces) clientSide.write(piece)
    clientSide.end()
    const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption("3 seconds"))
    if (exit._tag === "None") {
      tally.hangs += 1
      yield* Fiber.interrupt(fiber)
    } else if (Exit.isSuccess(exit.value)) {
      tally.closedOk += 1
    } else {
      const failure = exit.value.cause
      const errors = [...(failure._tag === "Fail" ? [failure.error] : [])]
      if (errors.length === 1 && errors[0]!._tag === "ConnectionError") tally.typedFailures += 1
      else tally.defects += 1
    }
    clientSide.destroy()
  })

/** One input over TCP: the server must close the connection once the peer has ended its side. */
const fuzzTcp = (endpoint: Endpoint, pieces: ReadonlyArray<Buffer>, tally: Tally) =>
  Effect.async<void>((resume) => {
    // half-open: a peer that goes on sending after the server has ended its side
    const socket = net.connect({ port: endpoint.listener.port, host: "127.0.0.1", allowHalfOpen: true })
    socket.on("error", () => {})
    socket.resume()
    const timer = setTimeout(() => {
      tally.hangs += 1
      socket.destroy()
    }, 5000)
    socket.once("close", () => {
      clearTimeout(timer)
      tally.closedOk += 1
      resume(Effect.void)
    })
    socket.once("connect", () => {
      for (const piece of pieces) socket.write(piece)
      socket.end()
    })
  })

describe("hostile input before authentication", () => {
  it.scopedLive(
    "fuzzed first flights over a duplex and over TCP: typed failures or closes, no defect, no hang",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        const flight = yield* recordFlight(endpoint)
        assert.isAtLeast(flight.packets.length, 3) // KEXINIT, KEX_ECDH_INIT, NEWKEYS
        assert.strictEqual(flight.packets[0]![5], 20)
        const before = yield* snapshot()
        const random = prng(SEED)
        const duplexTally = newTally()
        const tcpTally = newTally()
        const duplexIterations = scaled(800, 20_000)
        const tcpIterations = scaled(200, 5_000)
        const { peakGrowthMiB } = yield* withMemoryPeak(Effect.gen(function*() {
          for (let i = 0; i < duplexIterations; i++) {
            const { kind, pieces } = fuzzInput(flight, random)
            duplexTally.kinds[kind] = (duplexTally.kinds[kind] ?? 0) + 1
            duplexTally.iterations += 1
            yield* fuzzDuplex(endpoint, pieces, duplexTally)
            if (duplexTally.hangs >= 5) break // failing anyway: do not wait out every hang
          }
          yield* Effect.forEach(Array.from({ length: tcpIterations }), () => {
            const { kind, pieces } = fuzzInput(flight, random)
            tcpTally.kinds[kind] = (tcpTally.kinds[kind] ?? 0) + 1
            tcpTally.iterations += 1
            return fuzzTcp(endpoint, pieces, tcpTally)
          }, { concurrency: 8, discard: true })
        }))
        const after = yield* settle(before, { fds: 2 })
        yield* report({
          suite: "hostile",
          name: "pre-auth-fuzz",
          seed: SEED,
          duplex: duplexTally,
          tcp: tcpTally,
          peakGrowthMiB,
          fds: [before.fds, after.fds]
        })
        assert.strictEqual(duplexTally.defects, 0)
        assert.strictEqual(duplexTally.hangs, 0)
        assert.strictEqual(tcpTally.hangs, 0)
        assert.strictEqual(duplexTally.iterations, duplexIterations)
        assert.strictEqual(duplexTally.closedOk + duplexTally.typedFailures, duplexIterations)
        assert.strictEqual(tcpTally.closedOk, tcpIterations)
        assert.isBelow(peakGrowthMiB, MEMORY_CAP_MIB)
        assert.isAtMost(after.fds, before.fds + 2)
        // and the endpoint still serves a real client
        const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
        const channel = yield* ssh2Exec(client, "echo alive")
        const out = yield* collect(channel)
        assert.strictEqual(out.toString(), "alive\n")
      }),
    timeout(120_000)
  )

  it.scopedLive("slowloris and silent peers do not keep real clients out", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint()
      const count = scaled(60, 300)
      const peers = Array.from({ length: count }, (_, i) => {
        const socket = net.connect(endpoint.listener.port, "127.0.0.1")
        socket.on("error", () => {})
        socket.resume()
        if (i % 2 === 0) socket.write("SSH-2.0-slowloris\r\n")
        return socket
      })
      const packet = Buffer.concat([Buffer.from([0, 0, 3, 252]), Buffer.alloc(1020, 7)])
      let offset = 0
      const trickle = setInterval(() => {
        offset += 1
        peers.forEach((socket, i) =>
          i % 2 === 0 && socket.writable && socket.write(packet.subarray(offset - 1, offset))
        )
      }, 200)
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(trickle)))
      const started = Date.now()
      const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
      const out = yield* collect(yield* ssh2Exec(client, "echo served"))
      const servedMs = Date.now() - started
      assert.strictEqual(out.toString(), "served\n")
      let closedByServer = 0
      if (soak) {
        // the login grace time (120 s) ends them all
        yield* Effect.sleep("125 seconds")
        closedByServer = peers.filter((socket) => socket.destroyed).length
        assert.strictEqual(closedByServer, count)
      }
      yield* report({ suite: "hostile", name: "slowloris", peers: count, servedMs, closedByServer })
      for (const socket of peers) socket.destroy()
    }), timeout(60_000))
})

const collect = (channel: ssh2.ClientChannel): Effect.Effect<Buffer> =>
  Effect.async<Buffer>((resume) => {
    const chunks: Array<Buffer> = []
    channel.on("data", (chunk: Buffer) => chunks.push(chunk))
    channel.stderr.resume()
    channel.once("close", () => resume(Effect.succeed(Buffer.concat(chunks))))
  })

const subsystem = (client: ssh2.Client, name: string) =>
  Effect.async<ssh2.ClientChannel, Error>((resume) => {
    client.subsys(name, (error, channel) => resume(error ? Effect.fail(error) : Effect.succeed(channel)))
  })

/** The endpoint still runs commands for a new client. */
const stillServes = (endpoint: Endpoint) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
    const out = yield* collect(yield* ssh2Exec(client, "echo alive"))
    assert.strictEqual(out.toString(), "alive\n")
  }))

describe("hostile input after authentication", () => {
  it.scopedLive(
    "CHANNEL_DATA past the window of a stalled SFTP channel (ssh2 #1505) ends the connection",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        fs.writeFileSync(Path.join(endpoint.sandbox.info.workdir, "big"), Buffer.alloc(8 * MiB, 1))
        const result = yield* withMemoryPeak(Effect.scoped(Effect.gen(function*() {
          const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
          const channel = yield* subsystem(client, "sftp")
          const replies = new Sftp.Replies(channel)
          channel.write(Sftp.init())
          yield* replies.awaitReply("version")
          channel.write(Sftp.open(1, "big", Sftp.FXF.READ))
          const handle = Sftp.handleOf(yield* replies.awaitReply(1))
          // stop reading: replies back up, the server stops reading requests, its window closes
          raw(client).socket.pause()
          for (let i = 0; i < 512; i++) channel.write(Sftp.read(100 + i, handle, 0, 32 * 1024))
          yield* Effect.sleep("1 second")
          const sent = yield* floodData(client, channel, scaled(160, 1024) * MiB)
          raw(client).socket.resume() // read again, to see the server's close
          const closed = yield* closedWithin(client, 5000)
          return { sent, closed }
        })))
        yield* report({
          suite: "hostile",
          name: "window-1505-sftp",
          sentMiB: Math.round(result.value.sent / MiB),
          closed: result.value.closed,
          peakGrowthMiB: result.peakGrowthMiB
        })
        assert.isTrue(result.value.closed)
        assert.isBelow(result.peakGrowthMiB, MEMORY_CAP_MIB)
        yield* stillServes(endpoint)
      }),
    timeout(60_000)
  )

  // The stdin pump is paced by drain (fixed in 03c2935; before, 128 MiB sent grew the server by as much).
  it.scopedLive(
    "a client streaming stdin to a process that does not read keeps server memory bounded",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        const result = yield* withMemoryPeak(Effect.scoped(Effect.gen(function*() {
          const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
          const channel = yield* ssh2Exec(client, "sleep 30")
          const chunk = Buffer.alloc(64 * 1024, 1)
          for (let sent = 0; sent < 128 * MiB; sent += chunk.length) {
            if (!channel.write(chunk)) {
              const drained = yield* Effect.async<boolean>((resume) => {
                const timer = setTimeout(() => resume(Effect.succeed(false)), 3000)
                channel.once("drain", () => {
                  clearTimeout(timer)
                  resume(Effect.succeed(true))
                })
              })
              if (!drained) break // the server applies backpressure: what we want
            }
          }
        })))
        yield* report({ suite: "hostile", name: "stdin-backpressure", peakGrowthMiB: result.peakGrowthMiB })
        assert.isBelow(result.peakGrowthMiB, MEMORY_CAP_MIB)
      }),
    timeout(60_000)
  )

  it.scopedLive(
    "thousands of env and window-change requests without reading the replies",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        const requests = scaled(20_000, 200_000)
        const value = "v".repeat(4096)
        const result = yield* withMemoryPeak(Effect.scoped(Effect.gen(function*() {
          const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
          const session = yield* openSession(client)
          const { protocol, socket } = raw(client)
          socket.pause()
          for (let i = 0; i < requests && !socket.destroyed; i++) {
            protocol.env(remoteId(session), `VAR_${i}`, value, true)
            protocol.windowChange(remoteId(session), 24 + (i % 50), 80, 0, 0)
            yield* paced(socket)
          }
          yield* Effect.sleep("500 millis")
          socket.resume()
          // the connection is still usable afterwards
          const out = yield* collect(yield* ssh2Exec(client, "echo after"))
          return out.toString()
        })))
        yield* report({
          suite: "hostile",
          name: "request-flood",
          requests: requests * 2,
          peakGrowthMiB: result.peakGrowthMiB
        })
        assert.strictEqual(result.value, "after\n")
        assert.isBelow(result.peakGrowthMiB, MEMORY_CAP_MIB)
      }),
    timeout(120_000)
  )

  it.scopedLive(
    "thousands of channel opens: at most 1024 at once, the rest refused, all freed at the end",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        const before = yield* snapshot()
        const opens = scaled(3000, 20_000)
        const result = yield* withMemoryPeak(Effect.scoped(Effect.gen(function*() {
          const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
          const results = yield* Effect.all(
            Array.from({ length: opens }, () => Effect.either(openSession(client))),
            { concurrency: 2048 } // the attacker's own pending opens stay bounded too
          )
          return {
            opened: results.filter(Either.isRight).length,
            refused: results.filter(Either.isLeft).length
          }
        })))
        const after = yield* settle(before, { fds: 2, heapMiB: 16 })
        yield* report({
          suite: "hostile",
          name: "channel-open-flood",
          opens,
          ...result.value,
          peakGrowthMiB: result.peakGrowthMiB,
          heapMiB: [before.heapUsedMiB, after.heapUsedMiB]
        })
        assert.strictEqual(result.value.opened, 1024)
        assert.strictEqual(result.value.refused, opens - 1024)
        assert.isBelow(result.peakGrowthMiB, MEMORY_CAP_MIB)
        assert.isAtMost(after.heapUsedMiB, before.heapUsedMiB + 16)
        yield* stillServes(endpoint)
      }),
    timeout(60_000)
  )

  it.scopedLive(
    "oversized and malformed SFTP requests: capped, refused, or the SFTP channel closed",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        fs.writeFileSync(Path.join(endpoint.sandbox.info.workdir, "big"), Buffer.alloc(4 * MiB, 1))
        const before = yield* snapshot()
        const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
        const session = () =>
          Effect.gen(function*() {
            const channel = yield* subsystem(client, "sftp")
            const replies = new Sftp.Replies(channel)
            channel.write(Sftp.init())
            assert.isDefined(yield* replies.awaitReply("version"))
            return { channel, replies }
          })
        const figures: Record<string, unknown> = {}

        // a READ asking for 4 GiB gets at most the server's maximum
        {
          const { channel, replies } = yield* session()
          channel.write(Sftp.open(1, "big", Sftp.FXF.READ))
          const handle = Sftp.handleOf(yield* replies.awaitReply(1))
          channel.write(Sftp.read(2, handle, 0, 0xffff_ffff))
          figures.readReplyBytes = Sftp.dataLength(yield* replies.awaitReply(2))
          assert.isAtMost(figures.readReplyBytes as number, 256 * 1024)
          // more handles than allowed: the rest are refused, the session goes on
          for (let i = 0; i < 1100; i++) channel.write(Sftp.open(1000 + i, "big", Sftp.FXF.READ))
          let handles = 0
          let refused = 0
          for (let i = 0; i < 1100; i++) {
            const reply = yield* replies.awaitReply(1000 + i)
            if (reply?.type === Sftp.FXP.HANDLE) handles += 1
            else if (Sftp.statusOf(reply).message.includes("Too many")) refused += 1
          }
          figures.handles = handles
          figures.handlesRefused = refused
          assert.strictEqual(handles, 1023) // plus the first one: 1024
          assert.strictEqual(refused, 77)
          // ending the channel closes every handle: host fds back to the baseline
          channel.end()
          assert.isTrue(yield* replies.awaitEnd(5000))
        }

        // a packet claiming 2 GiB, a string claiming more than its packet, a length of 4 GiB - 1:
        // each ends its SFTP channel, not the connection
        for (
          const [name, bytes] of [
            ["claims 2 GiB", Sftp.lyingHeader(0x7fff_ffff)],
            ["string past its packet", Sftp.openWithLyingPath(7, 0xffff_ff00)],
            ["claims 4 GiB", Sftp.lyingHeader(0xffff_ffff)]
          ] as const
        ) {
          const { channel, replies } = yield* session()
          channel.write(bytes)
          const ended = yield* replies.awaitEnd(5000)
          figures[name] = ended ? "channel closed" : "still open"
          assert.isTrue(ended, name)
        }

        // 200 pipelined 256 KiB WRITEs with the replies unread
        {
          const { channel, replies } = yield* session()
          channel.write(Sftp.open(1, "sink", Sftp.FXF.WRITE | Sftp.FXF.CREAT | Sftp.FXF.TRUNC))
          const handle = Sftp.handleOf(yield* replies.awaitReply(1))
          const data = Buffer.alloc(255 * 1024, 2)
          const { peakGrowthMiB } = yield* withMemoryPeak(Effect.gen(function*() {
            raw(client).socket.pause()
            for (let i = 0; i < scaled(200, 2000); i++) {
              if (!channel.write(Sftp.write(10 + i, handle, i * data.length, data))) {
                const drained = yield* Effect.async<boolean>((resume) => {
                  const timer = setTimeout(() => resume(Effect.succeed(false)), 2000)
                  channel.once("drain", () => {
                    clearTimeout(timer)
                    resume(Effect.succeed(true))
                  })
                })
                if (!drained) break
              }
            }
            yield* Effect.sleep("500 millis")
          }))
          raw(client).socket.resume()
          figures.pipelinedWritePeakMiB = peakGrowthMiB
          assert.isBelow(peakGrowthMiB, MEMORY_CAP_MIB)
          channel.end()
          yield* replies.awaitEnd(10_000)
        }

        const out = yield* collect(yield* ssh2Exec(client, "echo alive"))
        assert.strictEqual(out.toString(), "alive\n")
        const after = yield* settle(before, { fds: 2 })
        figures.fds = [before.fds, after.fds]
        yield* report({ suite: "hostile", name: "sftp-oversized", ...figures })
        assert.isAtMost(after.fds, before.fds + 2)
      }),
    timeout(60_000)
  )
})
