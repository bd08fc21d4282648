/**
 * Shared parts of the reliability suite: the scale (CI or soak), figures reported to the soak
 * summary, resource snapshots (fds, child processes, handles, heap), and endpoints with ssh2
 * clients.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as Path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import ssh2 from "ssh2"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import type { Sandbox } from "../../src/Sandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import * as SshKeys from "../../src/SshKeys.js"
import type * as SshServer from "../../src/SshServer.js"
import { descendants } from "../support/processes.js"

// --- scale ----------------------------------------------------------------------------------------

/** `RELIABILITY_SCALE=soak` runs full sizes (npm run soak); anything else is the CI size. */
export const soak = process.env.RELIABILITY_SCALE === "soak"

/** `ci` in CI, `full` in the soak run. */
export const scaled = <A>(ci: A, full: A): A => soak ? full : ci

/** A test timeout: `ms` in CI, ten times that in the soak run. */
export const timeout = (ms: number): number => soak ? ms * 10 : ms

export const MiB = 1024 * 1024

export const hasBwrap = fs.existsSync("/usr/bin/bwrap")

// --- figures --------------------------------------------------------------------------------------

/** One measured figure set; printed, and appended to `$RELIABILITY_REPORT` for the soak summary. */
export interface Figures {
  readonly suite: "load" | "faults" | "hostile" | "auth" | "confinement"
  readonly name: string
  readonly [key: string]: unknown
}

export const report = (figures: Figures): Effect.Effect<void> =>
  Effect.sync(() => {
    const line = JSON.stringify(figures)
    console.log(`[reliability] ${line}`)
    const file = process.env.RELIABILITY_REPORT
    if (file !== undefined && file !== "") fs.appendFileSync(file, `${line}\n`)
  })

// --- resources ------------------------------------------------------------------------------------

let gcFunction: (() => void) | undefined = undefined

/** A full GC: `global.gc` when Node was started with `--expose-gc`, else the flag set at run time. */
export const fullGc = (passes = 2): void => {
  if (gcFunction === undefined) {
    const exposed = (globalThis as { gc?: () => void }).gc
    if (exposed !== undefined) {
      gcFunction = exposed
    } else {
      v8.setFlagsFromString("--expose-gc")
      gcFunction = vm.runInNewContext("gc") as () => void
    }
  }
  for (let i = 0; i < passes; i++) gcFunction()
}

export interface Snapshot {
  readonly fds: number
  readonly children: number
  readonly childArgs: ReadonlyArray<string>
  /** Active libuv handles by type, from `process.getActiveResourcesInfo()` (requests and timers excluded). */
  readonly handles: Readonly<Record<string, number>>
  readonly tcpListeners: number
  readonly heapUsedMiB: number
  readonly arrayBuffersMiB: number
  readonly rssMiB: number
}

const round = (bytes: number) => Math.round((bytes / MiB) * 10) / 10

const openFds = () => fs.readdirSync("/proc/self/fd").length

/** Sockets of this process in LISTEN state, from /proc/net/tcp{,6} and our fd inodes. */
const tcpListeners = (): number => {
  const inodes = new Set<string>()
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`))
      if (match !== null) inodes.add(match[1]!)
    } catch {
      // closed meanwhile
    }
  }
  let count = 0
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = ""
    try {
      text = fs.readFileSync(table, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/)
      if (fields[3] === "0A" && inodes.has(fields[9] ?? "")) count += 1
    }
  }
  return count
}

/** libuv handles (requests such as CloseReq or WriteWrap come and go, timers are Effect's own). */
const HANDLE_TYPES = new Set([
  "TCPServerWrap",
  "TCPSocketWrap",
  "TCPWrap",
  "PipeWrap",
  "PipeServerWrap",
  "ProcessWrap",
  "TTYWrap",
  "SignalWrap",
  "UDPWrap",
  "FSEventWrap",
  "StatWatcher"
])

export const snapshot = (options: { readonly gc?: boolean } = {}): Effect.Effect<Snapshot> =>
  Effect.gen(function*() {
    if (options.gc !== false) fullGc()
    const children = yield* descendants(process.pid)
    const handles: Record<string, number> = {}
    for (const type of process.getActiveResourcesInfo()) {
      if (!HANDLE_TYPES.has(type)) continue
      handles[type] = (handles[type] ?? 0) + 1
    }
    const memory = process.memoryUsage()
    return {
      fds: openFds(),
      children: children.length,
      childArgs: children.map((child) => child.args),
      handles,
      tcpListeners: tcpListeners(),
      heapUsedMiB: round(memory.heapUsed),
      arrayBuffersMiB: round(memory.arrayBuffers),
      rssMiB: round(memory.rss)
    }
  })

/**
 * Waits until the resources are back to `baseline` within `tolerance` (or the time is up) and
 * returns the last snapshot: closing things is asynchronous (sockets, child exits).
 */
export const settle = (
  baseline: Snapshot,
  tolerance: { readonly fds?: number; readonly heapMiB?: number } = {},
  millis = 10_000
): Effect.Effect<Snapshot> =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    for (;;) {
      const now = yield* snapshot()
      const settled = now.fds <= baseline.fds + (tolerance.fds ?? 0) && now.children <= baseline.children &&
        now.tcpListeners <= baseline.tcpListeners &&
        now.heapUsedMiB <= baseline.heapUsedMiB + (tolerance.heapMiB ?? 16)
      if (settled || Date.now() > deadline) return now
      yield* Effect.sleep("100 millis")
    }
  })

/**
 * Samples heapUsed + arrayBuffers while `effect` runs, after a full GC each time (so that garbage,
 * e.g. the attacker's own encrypted packets, does not count); returns its result and the peak
 * growth in MiB.
 */
export const withMemoryPeak = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  everyMillis = 250
): Effect.Effect<{ readonly value: A; readonly peakGrowthMiB: number; readonly baseMiB: number }, E, R> =>
  Effect.suspend(() => {
    const used = () => {
      fullGc(1)
      const memory = process.memoryUsage()
      return memory.heapUsed + memory.arrayBuffers
    }
    const base = used()
    let peak = base
    const timer = setInterval(() => {
      peak = Math.max(peak, used())
    }, everyMillis)
    return effect.pipe(
      Effect.map((value) => {
        peak = Math.max(peak, used())
        return { value, peakGrowthMiB: round(peak - base), baseMiB: round(base) }
      }),
      Effect.ensuring(Effect.sync(() => clearInterval(timer)))
    )
  })

// --- endpoints ------------------------------------------------------------------------------------

/** Options of a throwaway OpenSSH client using `identity` (no config, no known_hosts, batch mode). */
export const throwawayClientOptions = (identity: string): ReadonlyArray<string> => [
  "-F",
  "/dev/null",
  "-i",
  identity,
  "-o",
  "IdentitiesOnly=yes",
  "-o",
  "StrictHostKeyChecking=no",
  "-o",
  "UserKnownHostsFile=/dev/null",
  "-o",
  "BatchMode=yes"
]

export interface ClientKey {
  readonly privateKey: string
  readonly publicKey: string
}

/** An Ed25519 key from the library's generator (ssh2's own drops a byte in ~1 of 250 keys). */
export const generateKey = (): ClientKey => {
  const pair = Effect.runSync(SshKeys.make.generateEphemeral)
  return { privateKey: pair.privateKey, publicKey: pair.publicKey }
}

/** A temporary directory removed with the scope. */
export const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(Path.join(os.tmpdir(), `sandbox-ssh-${prefix}-`))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

export interface Endpoint {
  readonly dir: string
  readonly sandbox: Sandbox
  readonly server: SshServer.SshServer
  readonly listener: SshServer.Listener
  readonly key: ClientKey
  readonly authorizedKeysPath: string
  readonly hostKeyPath: string
}

/** A sandbox, a server endpoint whose authorized_keys allows `key` (or the given lines), and a TCP listener. */
export const makeEndpoint = (
  options: {
    readonly isolation?: "bubblewrap" | "none"
    readonly sandbox?: Sandbox
    readonly authorizedKeys?: (key: ClientKey) => string
    readonly server?: SshServer.ServerOptions
  } = {}
): Effect.Effect<Endpoint, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* tempDir("endpoint")
    const key = generateKey()
    const authorizedKeysPath = Path.join(dir, "authorized_keys")
    const hostKeyPath = Path.join(dir, "host_key")
    fs.writeFileSync(authorizedKeysPath, options.authorizedKeys?.(key) ?? `${key.publicKey}\n`, { mode: 0o600 })
    const sandbox = options.sandbox ?? (yield* LocalSandbox.make({ isolation: options.isolation ?? "none" }))
    const server = yield* SandboxSsh.make(sandbox).prepareServer({
      hostKeyPath,
      authorizedKeysPath,
      ...options.server
    })
    const listener = yield* server.listen({ port: 0 })
    return { dir, sandbox, server, listener, key, authorizedKeysPath, hostKeyPath }
  })

/** A connected, authenticated ssh2 client over TCP, ended with the scope. */
export const connectSsh2 = (
  port: number,
  config: Partial<ssh2.ConnectConfig> = {}
): Effect.Effect<ssh2.Client, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<ssh2.Client, Error>((resume) => {
      const client = new ssh2.Client()
      const onError = (error: Error) => {
        client.removeListener("ready", onReady)
        client.end()
        resume(Effect.fail(error))
      }
      const onReady = () => {
        client.removeListener("error", onError)
        client.on("error", () => {})
        resume(Effect.succeed(client))
      }
      client.once("ready", onReady)
      client.once("error", onError)
      const sock = net.connect(port, "127.0.0.1")
      sock.setNoDelay(true)
      client.connect({ sock, username: "root", readyTimeout: 20_000, keepaliveInterval: 0, ...config })
      return Effect.sync(() => {
        client.removeAllListeners("ready")
        client.on("error", () => {})
        client.end()
        sock.destroy()
      })
    }),
    (client) =>
      Effect.sync(() => {
        client.end()
        ;(client as unknown as { _sock?: net.Socket })._sock?.destroy()
      })
  )

/** The internals of an ssh2 client used to misbehave at the message level. */
export interface RawClient {
  readonly protocol: {
    channelData(id: number, data: Buffer): void
    channelExtData(id: number, data: Buffer, type: number): void
    channelWindowAdjust(id: number, amount: number): void
    session(localChan: number, window: number, packetSize: number): void
    env(id: number, key: string, value: string, wantReply: boolean): void
    windowChange(id: number, rows: number, cols: number, height: number, width: number): void
    exec(id: number, command: string, wantReply: boolean): void
    channelClose(id: number): void
  }
  readonly socket: net.Socket
}

export const raw = (client: ssh2.Client): RawClient => {
  const internals = client as unknown as { _protocol: RawClient["protocol"]; _sock: net.Socket }
  return { protocol: internals._protocol, socket: internals._sock }
}

/** The server's channel id of a client channel (where raw messages go). */
export const remoteId = (channel: ssh2.Channel): number =>
  (channel as unknown as { outgoing: { id: number } }).outgoing.id

/** Runs `client.exec` and resolves with the channel. */
export const ssh2Exec = (client: ssh2.Client, command: string): Effect.Effect<ssh2.ClientChannel, Error> =>
  Effect.async<ssh2.ClientChannel, Error>((resume) => {
    client.exec(command, (error, channel) => resume(error ? Effect.fail(error) : Effect.succeed(channel)))
  })

/** Resolves when the client's connection has closed (or after `millis`, with `false`). */
export const closedWithin = (client: ssh2.Client, millis: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const sock = raw(client).socket
    if (sock.destroyed) return resume(Effect.succeed(true))
    const done = () => {
      clearTimeout(timer)
      resume(Effect.succeed(true))
    }
    const timer = setTimeout(() => {
      sock.removeListener("close", done)
      resume(Effect.succeed(false))
    }, millis)
    sock.once("close", done)
    return Effect.sync(() => {
      clearTimeout(timer)
      sock.removeListener("close", done)
    })
  })

/** Writes through a socket without ever buffering more than `limit` bytes in it (the attacker stays small). */
export const paced = (socket: net.Socket, limit = MiB): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (socket.destroyed || socket.writableLength < limit) return resume(Effect.void)
    const done = () => {
      socket.removeListener("drain", done)
      socket.removeListener("close", done)
      resume(Effect.void)
    }
    socket.once("drain", done)
    socket.once("close", done)
    return Effect.sync(() => {
      socket.removeListener("drain", done)
      socket.removeListener("close", done)
    })
  })

/** Sends `total` bytes of CHANNEL_DATA in 32,767-byte packets, ignoring the window (ssh2 #1505). */
export const floodData = (client: ssh2.Client, channel: ssh2.Channel, total: number): Effect.Effect<number> =>
  Effect.gen(function*() {
    const { protocol, socket } = raw(client)
    const chunk = Buffer.alloc(32_767, 0x61)
    let sent = 0
    while (sent < total && !socket.destroyed) {
      protocol.channelData(remoteId(channel), chunk)
      sent += chunk.length
      yield* paced(socket)
    }
    return sent
  })

/** A seeded PRNG (mulberry32): the same seed gives the same fuzz run. */
export const prng = (seed: number) => {
  let state = seed >>> 0
  const next = (): number => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (below: number) => Math.floor(next() * below),
    bytes: (length: number) => {
      const out = Buffer.allocUnsafe(length)
      for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256)
      return out
    },
    pick: <A>(items: ReadonlyArray<A>): A => items[Math.floor(next() * items.length)]!
  }
}

/** Opens a bare session channel (no exec yet) through the client's internals. */
export const openSession = (client: ssh2.Client): Effect.Effect<ssh2.ClientChannel, Error> =>
  Effect.async<ssh2.ClientChannel, Error>((resume) => {
    const internals = client as unknown as {
      _chanMgr: { add(value: unknown): number }
      _protocol: { session(local: number, window: number, packetSize: number): void }
    }
    const callback = Object.assign(
      (error: Error | undefined, channel: ssh2.ClientChannel) =>
        resume(error ? Effect.fail(error) : Effect.succeed(channel)),
      { type: "session" }
    )
    const local = internals._chanMgr.add(callback)
    if (local === -1) return resume(Effect.fail(new Error("no free channel ids")))
    internals._protocol.session(local, 2 * MiB, 32 * 1024)
  })
