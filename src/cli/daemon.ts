/**
 * `sandbox-ssh serve --socket PATH`: the server daemon of one sandbox. It opens the sandbox and
 * the SSH server once and serves every connection to a Unix socket with them, so that all
 * connections share one persistent environment (a background process started by one `ssh` is
 * there for the next), and a new connection pays no sandbox start. `serve --stdio` (bin/relay.cjs,
 * the OpenSSH ProxyCommand) starts it on demand and relays one connection to it.
 *
 * It lingers for `--linger` after its last connection, then closes the sandbox (every process in
 * it ends) and removes its socket. Two daemons started at once for the same socket settle on one:
 * each listens on a temporary name and links it onto the socket path, which only one can do; a
 * socket nobody answers (a daemon SIGKILLed) is replaced. A daemon whose socket was replaced or
 * removed stops accepting and ends with its last connection.
 *
 * @internal
 */
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as fs from "node:fs"
import * as net from "node:net"
import * as Path from "node:path"
import { validTimeout } from "../internal/options.js"
import * as InboundBuffers from "../internal/transport/inboundBuffers.js"
import * as PacketBuffers from "../internal/transport/packetBuffers.js"
import * as SandboxSsh from "../SandboxSsh.js"
import { InvalidOptionError, SandboxError } from "../SshError.js"
import type * as SshKeys from "../SshKeys.js"
import { openSandbox, type SandboxSelection } from "./sandboxSelection.js"

/** @internal */
export interface DaemonOptions extends SandboxSelection {
  readonly socket: string
  /** A duration (`30s`, `5m`, `2 minutes`, `0`); default {@link DEFAULT_LINGER}. */
  readonly linger: string | undefined
  readonly hostKey: string | undefined
  readonly authorizedKeys: string | undefined
  readonly user: string | undefined
}

/** How long a daemon outlives its last connection by default. @internal */
export const DEFAULT_LINGER: Duration.Duration = Duration.minutes(5)

/** Before its first connection a daemon waits at least this long (its starter connects at once). */
const START_GRACE = Duration.seconds(30)

/** How often a daemon checks that its socket path still names its socket. */
const WATCH_INTERVAL = Duration.seconds(2)

/** The longest Unix socket path Linux takes (`sun_path` holds 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107

const units: Record<string, string> = { ms: "millis", s: "seconds", m: "minutes", h: "hours", d: "days" }

/**
 * `--linger`: `0`, a number of seconds, `<n>ms|s|m|h|d`, Effect's `"<n> <unit>"`, or `infinity`;
 * never negative.
 *
 * @internal
 */
export const parseLinger = (input: string | undefined): Effect.Effect<Duration.Duration, InvalidOptionError> => {
  if (input === undefined) return Effect.succeed(DEFAULT_LINGER)
  const trimmed = input.trim()
  if (trimmed.startsWith("-")) {
    return Effect.fail(new InvalidOptionError({ option: "--linger", detail: `must not be negative, got ${trimmed}` }))
  }
  if (/^(infinity|never)$/i.test(trimmed)) return Effect.succeed(Duration.infinity)
  const short = /^(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(trimmed)
  const normalized = short === null ? trimmed : `${short[1]} ${units[short[2] ?? "s"]}`
  return validTimeout("--linger", normalized as Duration.DurationInput, DEFAULT_LINGER)
}

const failure = (operation: string, path: string, detail: string, cause?: unknown) =>
  new SandboxError({ reason: "PermissionDenied", operation, path, detail, cause })

/**
 * The socket's directory: created 0700 when missing, refused when someone else owns it or others
 * may enter it (they could then connect, or swap the socket).
 *
 * @internal
 */
export const privateDirectory = (directory: string): Effect.Effect<void, SandboxError> =>
  Effect.gen(function*() {
    const stats = yield* Effect.try({
      try: () => {
        fs.mkdirSync(directory, { recursive: true, mode: 0o700 })
        return fs.lstatSync(directory)
      },
      catch: (cause) => failure("socket directory", directory, String((cause as Error).message), cause)
    })
    const uid = process.getuid?.() ?? stats.uid
    if (!stats.isDirectory() || stats.uid !== uid || (stats.mode & 0o077) !== 0) {
      return yield* failure(
        "socket directory",
        directory,
        `must be a directory of uid ${uid} that only it can use (it is ${
          stats.isDirectory() ? "a directory" : "not a directory"
        } of uid ${stats.uid}, mode ${(stats.mode & 0o777).toString(8)}); fix: chmod 700 ${directory}`
      )
    }
  })

type Event =
  | { readonly _tag: "Connection"; readonly socket: net.Socket }
  | { readonly _tag: "Ended" }
  | { readonly _tag: "Replaced" }

interface Inode {
  readonly dev: number
  readonly ino: number
}

const inodeOf = (path: string): Inode | undefined => {
  try {
    const stats = fs.statSync(path)
    return { dev: stats.dev, ino: stats.ino }
  } catch {
    return undefined
  }
}

const names = (path: string, inode: Inode): boolean => {
  const now = inodeOf(path)
  return now !== undefined && now.dev === inode.dev && now.ino === inode.ino
}

/** Whether a daemon answers at `path`: `live`, `stale` (a socket nobody listens on), or `gone`. */
const probe = (path: string): Effect.Effect<"live" | "stale" | "gone"> =>
  Effect.async((resume) => {
    const socket = net.connect(path)
    const onConnect = () => {
      socket.destroy()
      resume(Effect.succeed("live"))
    }
    const onError = (error: NodeJS.ErrnoException) => {
      socket.destroy()
      resume(Effect.succeed(error.code === "ENOENT" ? "gone" : error.code === "ECONNREFUSED" ? "stale" : "live"))
    }
    socket.once("connect", onConnect)
    socket.once("error", onError)
    return Effect.sync(() => {
      socket.off("connect", onConnect)
      socket.off("error", onError)
      socket.destroy()
    })
  })

/**
 * Puts the socket listening at `temporary` at `path`, unless a live daemon answers there: `link`
 * succeeds for one of two daemons racing for a free path; a stale socket is replaced by `rename`.
 */
const claim = (temporary: string, path: string): Effect.Effect<boolean, SandboxError> =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 10; attempt++) {
      const linked = yield* Effect.try({
        try: () => {
          try {
            fs.linkSync(temporary, path)
            fs.unlinkSync(temporary)
            return true
          } catch (error) {
            if ((error as NodeJS.ErrnoException).code === "EEXIST") return false
            throw error
          }
        },
        catch: (cause) => failure("bind socket", path, String((cause as Error).message), cause)
      })
      if (linked) return true
      const state = yield* probe(path)
      if (state === "live") return false
      if (state === "stale") {
        yield* Effect.logDebug(`replacing the stale socket ${path}`)
        yield* Effect.try({
          try: () => fs.renameSync(temporary, path),
          catch: (cause) => failure("bind socket", path, String((cause as Error).message), cause)
        })
        return true
      }
    }
    return yield* failure("bind socket", path, "the path keeps changing under this daemon")
  })

/**
 * Listens at `temporary` (mode 0600), queueing connections as events. Closing stops accepting and
 * drops the connections not served yet (their relays retry).
 */
const listen = (temporary: string, events: Queue.Queue<Event>) =>
  Effect.gen(function*() {
    const pending = new Set<net.Socket>()
    // a connection reset before it is served must not crash the daemon; ssh2 handles it later
    const ignore = () => {}
    const server = yield* Effect.acquireRelease(
      Effect.async<net.Server, SandboxError>((resume) => {
        fs.rmSync(temporary, { force: true }) // a leftover of a dead process with our pid
        // the peer's bytes land in reused slabs (inboundBuffers.ts)
        const server = InboundBuffers.createServer((socket) => {
          PacketBuffers.recycleOn(socket)
          socket.on("error", ignore)
          pending.add(socket)
          Queue.unsafeOffer(events, { _tag: "Connection", socket })
        })
        const onError = (error: Error) => resume(Effect.fail(failure("listen", temporary, error.message, error)))
        server.once("error", onError)
        server.listen(temporary, () => {
          server.off("error", onError)
          resume(Effect.succeed(server))
        })
      }),
      (server) =>
        Effect.sync(() => {
          server.close()
          for (const socket of pending) socket.destroy()
          pending.clear()
        })
    )
    yield* Effect.try({
      try: () => fs.chmodSync(temporary, 0o600),
      catch: (cause) => failure("listen", temporary, String((cause as Error).message), cause)
    })
    return {
      server,
      /** The socket is being served: the listener no longer owns it. */
      take: (socket: net.Socket) => pending.delete(socket)
    }
  })

/** @internal */
export const serveSocket = (options: DaemonOptions, keys: SshKeys.SshKeys): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    const linger = yield* parseLinger(options.linger)
    const path = Path.resolve(options.socket)
    const temporary = `${path}.${process.pid}`
    if (Buffer.byteLength(temporary) > MAX_SOCKET_PATH) {
      return yield* new InvalidOptionError({
        option: "--socket",
        detail: `${path} is too long for a Unix socket (at most ${MAX_SOCKET_PATH - 8} bytes); use a shorter ` +
          "directory (e.g. set SANDBOX_SSH_HOME)"
      })
    }
    yield* privateDirectory(Path.dirname(path))
    const sandbox = yield* openSandbox(options)
    const server = yield* SandboxSsh.make(sandbox, keys).prepareServer({
      hostKeyPath: options.hostKey,
      authorizedKeysPath: options.authorizedKeys,
      user: options.user
    })

    const events = yield* Queue.unbounded<Event>()
    const listener = yield* listen(temporary, events)
    const inode = inodeOf(temporary)!
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(temporary, { force: true })))
    if (!(yield* claim(temporary, path))) {
      return yield* Effect.logDebug(`another daemon serves ${path}`)
    }
    // First in, last out: nobody can connect to a daemon that is closing its sandbox.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (names(path, inode)) fs.rmSync(path, { force: true })
        listener.server.close()
      })
    )
    yield* Console.error(
      `sandbox-ssh: pid ${process.pid} serving ${sandbox.info.root ?? "sandbox"} (${
        sandbox.info.isolated ? sandbox.info.isolation : "NOT isolated"
      }) on ${path}, lingering ${Duration.format(linger)}; host key ${server.hostKey.fingerprint}`
    )
    yield* Effect.forkScoped(Effect.gen(function*() {
      while (names(path, inode)) yield* Effect.sleep(WATCH_INTERVAL)
      yield* Queue.offer(events, { _tag: "Replaced" })
    }))

    const connections = yield* FiberSet.make<void, never>()
    let active = 0
    let served = 0
    let accepting = true
    // Waits for the next event; none when idle for the linger time (or at once once replaced).
    const next = (): Effect.Effect<Option.Option<Event>> => {
      if (active > 0) return Effect.map(Queue.take(events), Option.some)
      if (!accepting) return Effect.succeedNone
      const wait = served === 0 ? Duration.max(linger, START_GRACE) : linger
      if (Duration.isZero(wait)) return Queue.poll(events)
      if (!Duration.isFinite(wait)) return Effect.map(Queue.take(events), Option.some)
      return Effect.timeoutOption(Queue.take(events), wait)
    }
    for (;;) {
      const event = yield* next()
      if (Option.isNone(event)) break
      switch (event.value._tag) {
        case "Connection": {
          const socket = event.value.socket
          listener.take(socket)
          if (!accepting) {
            socket.destroy()
            break
          }
          active++
          served++
          yield* FiberSet.run(
            connections,
            server.serve(socket).pipe(
              Effect.catchAll((error) => Effect.logDebug("connection ended", error.message)),
              Effect.annotateLogs({ connection: served }),
              Effect.ensuring(Queue.offer(events, { _tag: "Ended" }))
            )
          )
          break
        }
        case "Ended": {
          active--
          break
        }
        case "Replaced": {
          yield* Effect.logWarning(`${path} no longer names this daemon's socket: ending with its last connection`)
          accepting = false
          listener.server.close()
          break
        }
      }
    }
    yield* Effect.logDebug(
      accepting ? `no connection for ${Duration.format(linger)}: closing the sandbox` : "closing the sandbox"
    )
  }).pipe(Effect.scoped)
