/**
 * The connection guards (src/internal/server/guards.ts) on a bare ssh2 server, each next to a
 * control without the guard that shows the hole it closes. Short limits keep it fast; the real
 * endpoint is exercised in hostile.test.ts and auth.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import ssh2 from "ssh2"
import { guardConnection, guardLogin, type GuardOptions } from "../../src/internal/server/guards.js"
import type { ConnectionError } from "../../src/SshError.js"
import { eventually } from "../local/support.js"
import {
  closedWithin,
  connectSsh2,
  floodData,
  generateKey,
  MiB,
  openSession,
  raw,
  remoteId,
  report,
  ssh2Exec,
  timeout
} from "./support.js"

interface Harness {
  readonly port: number
  readonly key: ReturnType<typeof generateKey>
  /** Server-side exec channels, in the order they were accepted. */
  readonly execChannels: Array<ssh2.ServerChannel>
  /** Server-side connections with their sockets. */
  readonly connections: Array<{ readonly connection: ssh2.Connection; readonly socket: net.Socket }>
}

/**
 * A bare ssh2 server on a TCP port: public-key auth for one key, sessions whose exec channels are
 * accepted and then left alone (never read) unless `onExec` does something with them.
 */
const harness = (
  options: GuardOptions & { readonly guard: boolean; readonly onExec?: (channel: ssh2.ServerChannel) => void }
): Effect.Effect<Harness, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runFork = yield* FiberSet.makeRuntime<never>()
    const key = generateKey()
    const allowed = ssh2.utils.parseKey(key.publicKey) as ssh2.ParsedKey
    const hostKey = generateKey().privateKey
    const server = new ssh2.Server({ hostKeys: [hostKey] })
    const execChannels: Array<ssh2.ServerChannel> = []
    const connections: Harness["connections"] = []
    const authenticated = new Map<net.Socket, Deferred.Deferred<void, ConnectionError>>()

    server.on("connection", (connection) => {
      const socket = (connection as unknown as { _sock: net.Socket })._sock
      connections.push({ connection, socket })
      if (options.guard) guardConnection(connection, socket, runFork, options)
      connection.on("error", () => {})
      connection.on("authentication", (ctx) => {
        if (
          ctx.method === "publickey" && Buffer.from(ctx.key.data).equals(allowed.getPublicSSH())
        ) {
          if (ctx.signature === undefined || ctx.blob === undefined) return ctx.accept()
          return allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true ? ctx.accept() : ctx.reject()
        }
        ctx.reject(["publickey"])
      })
      connection.on("ready", () => {
        const done = authenticated.get(socket)
        if (done !== undefined) Deferred.unsafeDone(done, Effect.void)
        connection.on("session", (accept) => {
          const session = accept()
          session.on("env", (acceptEnv) => acceptEnv?.())
          session.on("window-change", (acceptChange) => acceptChange?.())
          session.on("exec", (acceptExec) => {
            const channel = acceptExec()
            execChannels.push(channel)
            options.onExec?.(channel)
          })
        })
      })
    })

    const tcp = net.createServer((socket) => {
      socket.setNoDelay(true)
      socket.on("error", () => {})
      const done = Deferred.unsafeMake<void, ConnectionError>(FiberId.none)
      authenticated.set(socket, done)
      if (options.guard) {
        const closed = Deferred.unsafeMake<void>(FiberId.none)
        socket.once("close", () => Deferred.unsafeDone(closed, Effect.void))
        runFork(
          Effect.scoped(Effect.zipRight(guardLogin(socket, done, options), Deferred.await(closed)))
        )
      }
      server.injectSocket(socket)
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => {
        tcp.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.sync(() => {
          tcp.close()
          for (const { socket } of connections) socket.destroy()
        })
    )
    return { port: (tcp.address() as net.AddressInfo).port, key, execChannels, connections }
  })

const connect = (h: Harness, config: Partial<ssh2.ConnectConfig> = {}) =>
  connectSsh2(h.port, { privateKey: h.key.privateKey, ...config })

describe("guards: parse errors", () => {
  it.scopedLive("nothing is parsed after a bad packet length (ssh2 allocated the bogus length)", () =>
    Effect.gen(function*() {
      const grown: Record<string, number> = {}
      for (const guard of [false, true]) {
        const h = yield* harness({ guard })
        // half-open: the peer goes on sending after the server ended its side
        const socket = net.connect({ port: h.port, host: "127.0.0.1", allowHalfOpen: true })
        socket.on("error", () => {})
        socket.resume()
        yield* Effect.async<void>((resume) => {
          socket.once("connect", () => resume(Effect.void))
        })
        // a banner, then a packet length of 256 MiB: "Bad packet length"
        socket.write(Buffer.concat([Buffer.from("SSH-2.0-fuzz\r\n"), Buffer.from([0x10, 0, 0, 0])]))
        yield* Effect.sleep("200 millis")
        const before = process.memoryUsage().arrayBuffers
        socket.write(Buffer.alloc(1024, 1))
        // the control is polled until it shows the allocation (a loaded machine may take a while);
        // the guard, whose connection is closed at the bad length, is given 200 ms to show any
        const grownMiB = () => (process.memoryUsage().arrayBuffers - before) / MiB
        yield* guard ? Effect.sleep("200 millis") : eventually(grownMiB, (mib) => mib > 200)
        grown[guard ? "guard" : "control"] = grownMiB()
        socket.destroy()
      }
      yield* report({ suite: "hostile", name: "parse-error", grownMiB: grown })
      assert.isAbove(grown.control!, 200)
      assert.isBelow(grown.guard!, 16)
    }))
})

describe("guards: receive window (ssh2 #1505)", () => {
  it.scopedLive("without the guard, data past the window is buffered without bound (the hole)", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: false })
      const client = yield* connect(h)
      const channel = yield* ssh2Exec(client, "anything")
      const sent = yield* floodData(client, channel, 48 * MiB)
      const buffered = yield* eventually(() => h.execChannels[0]!.readableLength, (bytes) => bytes > 40 * MiB)
      yield* report({ suite: "hostile", name: "window-control", sentMiB: sent / MiB, bufferedMiB: buffered / MiB })
      assert.isAbove(buffered, 40 * MiB)
    }))

  it.scopedLive("with the guard, the first packet past the window closes the connection", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: true })
      const client = yield* connect(h)
      const channel = yield* ssh2Exec(client, "anything")
      const sent = yield* floodData(client, channel, 48 * MiB)
      assert.isTrue(yield* closedWithin(client, 3000))
      const buffered = h.execChannels[0]!.readableLength
      yield* report({ suite: "hostile", name: "window-guard", sentMiB: sent / MiB, bufferedMiB: buffered / MiB })
      // what a sender keeping to the window may have queued: ssh2 re-opens the window while the
      // channel's buffer is under its 2 MiB high-water mark
      assert.isAtMost(buffered, 4 * MiB)
    }))

  it.scopedLive("a client that keeps to the window is never cut off, however much it sends", () =>
    Effect.gen(function*() {
      // the server reads slowly: 64 KiB every 5 ms
      const h = yield* harness({
        guard: true,
        onExec: (channel) => {
          const timer = setInterval(() => channel.read(64 * 1024), 5)
          channel.once("close", () => clearInterval(timer))
        }
      })
      const client = yield* connect(h)
      const channel = yield* ssh2Exec(client, "anything")
      const chunk = Buffer.alloc(100_000, 1)
      for (let i = 0; i < 80; i++) {
        if (!channel.write(chunk)) {
          yield* Effect.async<void>((resume) => {
            channel.once("drain", () => resume(Effect.void))
          })
        }
      }
      assert.isFalse(yield* closedWithin(client, 200))
    }))
})

describe("guards: output backlog", () => {
  /** A server that writes `head -c <n> /dev/zero`-like output as fast as the channel accepts it. */
  const producer = (total: number) => (channel: ssh2.ServerChannel) => {
    const chunk = Buffer.alloc(64 * 1024)
    let written = 0
    const pump = () => {
      while (written < total) {
        written += chunk.length
        if (!channel.write(chunk)) return void channel.once("drain", pump)
      }
      channel.end()
    }
    pump()
  }

  it.scopedLive("window grants that arrive while the transport is congested wait for it to drain", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: true, onExec: producer(256 * MiB) })
      const client = yield* connect(h)
      const channel = yield* ssh2Exec(client, "anything")
      const { protocol, socket } = raw(client)
      socket.pause()
      yield* Effect.sleep("300 millis")
      // grant 4 GiB in many small adjusts while not reading
      for (let i = 0; i < 1000; i++) protocol.channelWindowAdjust(remoteId(channel), 4 * MiB)
      yield* Effect.sleep("1 second")
      const backlog = h.connections[0]!.socket.writableLength
      yield* report({ suite: "hostile", name: "adjust-flood", backlogMiB: backlog / MiB })
      assert.isAtMost(backlog, 8 * MiB)
      socket.resume()
    }))

  it.scopedLive("a huge window and no reading ends at the backlog limit", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: true, maxOutputBacklog: 16 * MiB, onExec: producer(512 * MiB) })
      const client = yield* connect(h)
      const channel = yield* ssh2Exec(client, "anything")
      const { protocol, socket } = raw(client)
      // granted before the server starts writing: nothing is congested yet, so it applies at once
      protocol.channelWindowAdjust(remoteId(channel), 0xffff_ffff - 2 * MiB)
      socket.pause()
      const closed = yield* Effect.async<boolean>((resume) => {
        const server = h.connections[0]!.socket
        const timer = setTimeout(() => resume(Effect.succeed(false)), 10_000)
        server.once("close", () => {
          clearTimeout(timer)
          resume(Effect.succeed(true))
        })
      })
      assert.isTrue(closed)
      socket.destroy()
    }))
})

describe("guards: channels and requests", () => {
  it.scopedLive("at most maxChannels channels at once; the rest are refused as a resource shortage", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: true, maxChannels: 64 })
      const client = yield* connect(h)
      const results = yield* Effect.all(
        Array.from({ length: 200 }, () => Effect.either(openSession(client))),
        { concurrency: "unbounded" }
      )
      const opened = results.filter(Either.isRight).length
      const refused = results.filter((r) => Either.isLeft(r) && (r.left as { reason?: number }).reason === 4).length
      yield* report({ suite: "hostile", name: "channel-limit", opened, refused })
      assert.strictEqual(opened, 64)
      assert.strictEqual(refused, 136)
      assert.isFalse(yield* closedWithin(client, 100))
    }))

  it.scopedLive(
    "sessions closed before exec are answered and freed (ssh2 keeps them for ever)",
    () =>
      Effect.gen(function*() {
        for (const guard of [false, true]) {
          const h = yield* harness({ guard, maxChannels: 64 })
          const client = yield* connect(h)
          let answered = 0
          const rounds = guard ? 200 : 3
          for (let i = 0; i < rounds; i++) {
            const session = yield* Effect.either(openSession(client))
            if (Either.isLeft(session)) break
            const closed = Effect.async<void>((resume) => {
              session.right.once("close", () => resume(Effect.void))
            })
            session.right.resume() // ssh2 emits "close" once the channel's readable side has ended
            session.right.close()
            if (Either.isRight(yield* Effect.either(Effect.timeout(closed, "500 millis")))) answered += 1
          }
          const table = (h.connections[0]!.connection as unknown as { _chanMgr: { _count: number } })._chanMgr._count
          yield* report({ suite: "hostile", name: "session-close", guard, answered, leftInTable: table })
          if (guard) {
            assert.strictEqual(answered, 200)
            assert.strictEqual(table, 0)
          } else {
            assert.strictEqual(answered, 0)
            assert.strictEqual(table, rounds)
          }
        }
      }),
    timeout(30_000)
  )

  it.scopedLive("env requests past the limit are refused", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: true })
      const client = yield* connect(h)
      const session = yield* openSession(client)
      const replies = yield* Effect.all(
        Array.from({ length: 200 }, (_, i) =>
          Effect.async<boolean>((resume) => {
            const callbacks = (session as unknown as { _callbacks: Array<(failed: boolean) => void> })._callbacks
            callbacks.push((failed) => resume(Effect.succeed(!failed)))
            raw(client).protocol.env(remoteId(session), `VAR_${i}`, "value", true)
          })),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(replies.filter((ok) => ok).length, 128)
      assert.strictEqual(replies.filter((ok) => !ok).length, 72)
    }))
})

describe("guards: authentication", () => {
  /** Tries `keys` one after another; returns how long each rejection took and whether the connection closed. */
  const tryKeys = (h: Harness, count: number) =>
    Effect.async<{ readonly delays: Array<number>; readonly closed: boolean }>((resume) => {
      const keys = Array.from({ length: count }, () => generateKey())
      const delays: Array<number> = []
      let started = 0
      let i = 0
      const client = new ssh2.Client()
      client.on("error", () => {})
      client.on("close", () => resume(Effect.succeed({ delays, closed: true })))
      client.connect({
        host: "127.0.0.1",
        port: h.port,
        username: "root",
        readyTimeout: 20_000,
        authHandler: (_methodsLeft, _partial, next) => {
          if (started > 0) delays.push(Date.now() - started)
          started = Date.now()
          if (i === 0) {
            i += 1
            return next({ type: "none", username: "root" })
          }
          const key = keys[i++ - 1]
          if (key === undefined) {
            client.end()
            return next(false as never)
          }
          next({ type: "publickey", username: "root", key: key.privateKey })
        }
      })
    })

  it.scopedLive("rejections are delayed (not `none`), and the connection ends after maxAuthTries", () =>
    Effect.gen(function*() {
      // a delay far above a loaded machine's round trip, so immediate and delayed answers stay apart
      const h = yield* harness({ guard: true, rejectionDelay: "400 millis", maxAuthTries: 4 })
      const { closed, delays } = yield* tryKeys(h, 10)
      yield* report({ suite: "auth", name: "guard-rejection-delays", delays })
      assert.isTrue(closed)
      // the first answer is to `none`; then 4 keys are answered and the connection ends
      assert.isBelow(delays[0]!, 300)
      assert.strictEqual(delays.length, 1 + 4)
      for (const delay of delays.slice(1)) assert.isAtLeast(delay, 390)
    }))

  it.scopedLive("without the guard, rejections are immediate and unlimited (the hole)", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: false })
      const { delays } = yield* tryKeys(h, 10)
      assert.strictEqual(delays.length, 1 + 10)
      for (const delay of delays) assert.isBelow(delay, 300)
    }))
})

describe("guards: login grace time", () => {
  it.scopedLive("a silent peer and a slowloris peer are closed at the grace time; a real client is not", () =>
    Effect.gen(function*() {
      const h = yield* harness({ guard: true, loginGraceTime: "700 millis" })
      const started = Date.now()
      const silent = net.connect(h.port, "127.0.0.1")
      const slow = net.connect(h.port, "127.0.0.1")
      for (const socket of [silent, slow]) {
        socket.on("error", () => {})
        socket.resume() // read, so that the server's close is seen
      }
      // a banner, then a plausible packet (1024 bytes with its length) one byte at a time
      slow.write("SSH-2.0-slowloris\r\n")
      const packet = Buffer.concat([Buffer.from([0, 0, 3, 252]), Buffer.alloc(1020, 7)])
      let offset = 0
      const trickle = setInterval(() => slow.writable && slow.write(packet.subarray(offset, ++offset)), 50)
      const closedAt = (socket: net.Socket) =>
        Effect.async<number>((resume) => {
          socket.once("close", () => resume(Effect.succeed(Date.now() - started)))
        }).pipe(Effect.timeoutOption("5 seconds"))
      const [a, b] = yield* Effect.all([closedAt(silent), closedAt(slow)], { concurrency: 2 })
      clearInterval(trickle)
      const client = yield* connect(h)
      yield* Effect.sleep("1 second")
      const alive = !raw(client).socket.destroyed
      yield* report({
        suite: "hostile",
        name: "login-grace",
        silentMs: Option.getOrNull(a),
        slowMs: Option.getOrNull(b),
        clientAlive: alive
      })
      assert.isTrue(a._tag === "Some" && a.value >= 650 && a.value < 3000)
      assert.isTrue(b._tag === "Some" && b.value >= 650 && b.value < 3000)
      assert.isTrue(alive)
    }))
})
