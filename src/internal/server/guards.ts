/**
 * Defences of a server connection against a hostile peer, for what ssh2 1.17 leaves open. Each
 * was seen to fail without the guard (test/reliability):
 *
 * - **Parse errors**: after its parser throws (a bad packet length, a bad MAC), ssh2 keeps parsing
 *   later bytes with the broken state and allocates the bogus packet length: one unauthenticated
 *   peer sending a banner, 4 bytes of garbage and then more bytes made it allocate 271 MB to
 *   3.6 GB per connection (measured). Nothing is parsed after the first error.
 * - **Receive window** (ssh2 issue #1505): ssh2 drops CHANNEL_DATA only when the window is exactly
 *   0, so one packet larger than what is left makes the window negative and every later packet is
 *   buffered (537 MB buffered for 537 MB sent, measured). A peer that sends more than the window it
 *   was given is disconnected (PROTOCOL_ERROR), as RFC 4254 §5.2 allows.
 * - **Output backlog**: ssh2 writes to the transport without backpressure, bounded only by the
 *   peer's window, and a peer can grant 4 GiB and then stop reading (400 MB buffered for one
 *   `head -c 400M /dev/zero`, measured). Window grants that arrive while the transport is
 *   congested are applied when it drains (backpressure instead of buffering); a connection whose
 *   unsent output still passes `maxOutputBacklog` (a huge initial window) is disconnected.
 * - **Channels**: at most `maxChannels` open at once (more are refused with RESOURCE_SHORTAGE),
 *   and a session channel the peer closes before exec/shell/subsystem is answered and freed (ssh2
 *   neither replies nor frees its slot, so opening and closing sessions grew without bound).
 * - **Environment**: at most `maxEnv` `env` requests and `maxEnvBytes` of names and values per
 *   channel (sshd stops at 128 variables); more are refused.
 * - **Authentication**: a rejected attempt (any method but `none`, which clients use to ask for
 *   the methods) is answered after `rejectionDelay`, and after `maxAuthTries` rejections the
 *   connection is closed (sshd's `MaxAuthTries`).
 * - **Login grace time**: a connection that has not authenticated within `loginGraceTime` is
 *   closed, whether it is silent or trickles bytes (sshd's `LoginGraceTime`); without it a peer
 *   sending a banner and then one byte a minute held its connection for ever. A transport that
 *   closes before the peer's identification line ends the serve (it used to wait for ever).
 *
 * Installed from `serveTransport` (connection.ts) with `guardLogin` once per transport and
 * `guardConnection` once per ssh2 connection.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Duplex } from "node:stream"
import type * as ssh2 from "ssh2"
import { ConnectionError } from "../../SshError.js"
import {
  type ChannelEntry,
  channelEntry,
  type Handler,
  internalsOf,
  isSession,
  liveChannelOf,
  remoteIdOf,
  type WindowState
} from "./ssh2Internals.js"

/** @internal */
export interface GuardOptions {
  /** Time from the transport's start to authentication. Default 120 s (sshd's `LoginGraceTime`). */
  readonly loginGraceTime?: Duration.DurationInput | undefined
  /** Channels open at once on one connection. Default 1024. */
  readonly maxChannels?: number | undefined
  /** Accepted `env` requests per channel. Default 128 (as sshd). */
  readonly maxEnv?: number | undefined
  /** Bytes of accepted `env` names and values per channel. Default 64 KiB. */
  readonly maxEnvBytes?: number | undefined
  /** Delay before a failed authentication attempt is answered. Default 100 ms. */
  readonly rejectionDelay?: Duration.DurationInput | undefined
  /** Rejected authentication attempts before the connection is closed. Default 6 (sshd's `MaxAuthTries`). */
  readonly maxAuthTries?: number | undefined
  /** Output bytes queued on the transport before the connection is closed. Default 64 MiB. */
  readonly maxOutputBacklog?: number | undefined
}

/** @internal */
export const DEFAULT_LOGIN_GRACE_TIME: Duration.Duration = Duration.seconds(120)
/** @internal */
export const DEFAULT_MAX_CHANNELS = 1024
/** @internal */
export const DEFAULT_MAX_ENV = 128
/** @internal */
export const DEFAULT_MAX_ENV_BYTES = 64 * 1024
/** @internal */
export const DEFAULT_REJECTION_DELAY: Duration.Duration = Duration.millis(100)
/** @internal */
export const DEFAULT_MAX_AUTH_TRIES = 6
/** @internal */
export const DEFAULT_MAX_OUTPUT_BACKLOG = 64 * 1024 * 1024

/** RFC 4253 §11.1 and RFC 4254 §5.1 codes. */
const DISCONNECT_PROTOCOL_ERROR = 2
const DISCONNECT_BY_APPLICATION = 11
const DISCONNECT_NO_MORE_AUTH_METHODS = 14
const OPEN_RESOURCE_SHORTAGE = 4

/** Time given to a disconnect message to leave before the transport is destroyed. */
const DISCONNECT_LINGER_MILLIS = 1000

/** The window state of the live channel `entry` stands for, or `undefined` (not started, gone). */
const incomingOf = (entry: ChannelEntry | undefined): WindowState | undefined => liveChannelOf(entry)?.incoming

/**
 * Installs the connection-level guards on an ssh2 server connection served over `socket`. Call it
 * synchronously from the server's `connection` event, before adding `authentication` listeners.
 * `log` receives an effect that logs a violation (e.g. the connection's `runFork`).
 *
 * @internal
 */
export const guardConnection = (
  connection: ssh2.Connection,
  socket: Duplex,
  log: (effect: Effect.Effect<void>) => void = () => {},
  options: GuardOptions = {}
): void => {
  const internals = internalsOf(connection)
  if (internals === undefined) {
    log(Effect.logWarning("ssh2 internals not found: connection guards not installed"))
    return
  }
  const protocol = internals._protocol
  const handlers = protocol._handlers
  const channels = internals._chanMgr
  const maxChannels = options.maxChannels ?? DEFAULT_MAX_CHANNELS
  const maxEnv = options.maxEnv ?? DEFAULT_MAX_ENV
  const maxEnvBytes = options.maxEnvBytes ?? DEFAULT_MAX_ENV_BYTES
  const maxBacklog = options.maxOutputBacklog ?? DEFAULT_MAX_OUTPUT_BACKLOG
  let ended = false

  const lookup = (id: unknown): ChannelEntry | undefined => channelEntry(channels, id)

  const disconnect = (reason: number, detail: string) => {
    if (ended) return
    ended = true
    log(Effect.logWarning(`closing the connection: ${detail}`))
    try {
      protocol.disconnect(reason)
    } catch {
      // the transport is already gone
    }
    socket.end()
    const timer = setTimeout(() => socket.destroy(), DISCONNECT_LINGER_MILLIS)
    timer.unref()
    socket.once("close", () => clearTimeout(timer))
  }

  // Parse errors: ssh2 catches what its parser throws (e.g. "Bad packet length"), emits "error",
  // ends the socket's writable side, and goes on parsing whatever arrives next with the broken
  // state, so the bogus length is trusted and allocated (up to 4 GiB, measured) for each later
  // chunk. Nothing is parsed after the first error. (The throw may come from the very parse call
  // that installed these guards, hence the "error" listener rather than only the wrapper.)
  const parse = protocol.parse.bind(protocol)
  let broken = false
  const stopParsing = () => {
    if (broken) return
    broken = true
    ended = true
    const timer = setTimeout(() => socket.destroy(), DISCONNECT_LINGER_MILLIS)
    timer.unref()
    socket.once("close", () => clearTimeout(timer))
  }
  connection.prependListener("error", stopParsing)
  protocol.parse = (chunk, start, end) => {
    if (broken) return
    try {
      parse(chunk, start, end)
    } catch (error) {
      stopParsing()
      throw error
    }
  }

  const wrap = (name: string, guard: (original: Handler) => Handler) => {
    const original = handlers[name]
    if (original !== undefined) handlers[name] = guard(original)
  }

  // Receive window (ssh2 #1505).
  const checkWindow = (kind: string) => (original: Handler): Handler => (p, recipient, data: Buffer, ...rest) => {
    if (ended) return
    const incoming = incomingOf(lookup(recipient))
    if (incoming !== undefined && data.length > incoming.window) {
      return disconnect(
        DISCONNECT_PROTOCOL_ERROR,
        `${kind} of ${data.length} bytes on channel ${recipient} exceeds its window of ${incoming.window}`
      )
    }
    original(p, recipient, data, ...rest)
  }
  wrap("CHANNEL_DATA", checkWindow("CHANNEL_DATA"))
  wrap("CHANNEL_EXTENDED_DATA", checkWindow("CHANNEL_EXTENDED_DATA"))

  // Output backlog: window grants wait while the transport is congested; a backlog past the
  // limit (possible only with a huge initial window) ends the connection.
  const deferred = new Map<number, number>()
  let applyDeferred: (() => void) | undefined = undefined
  wrap("CHANNEL_WINDOW_ADJUST", (original) => (p, recipient: number, amount: number) => {
    if (ended) return
    if (!socket.writableNeedDrain) return original(p, recipient, amount)
    deferred.set(recipient, (deferred.get(recipient) ?? 0) + amount)
    if (applyDeferred === undefined) {
      applyDeferred = () => {
        applyDeferred = undefined
        const grants = [...deferred]
        deferred.clear()
        if (ended) return
        for (const [id, total] of grants) original(p, id, total)
      }
      socket.once("drain", applyDeferred)
    }
  })
  const write = socket.write
  socket.write = function(this: Duplex, ...args: Array<any>): boolean {
    const ok = (write as Handler).apply(this, args) as unknown as boolean
    if (!ended && this.writableLength > maxBacklog) {
      disconnect(
        DISCONNECT_BY_APPLICATION,
        `${this.writableLength} bytes of output queued (limit ${maxBacklog}): the peer does not read`
      )
    }
    return ok
  } as typeof socket.write

  /** `env` requests accepted per channel: how many, and their bytes. */
  const environment = new Map<number, { count: number; bytes: number }>()

  // Channels: a bound, and sessions closed before they started are answered and freed.
  wrap("CHANNEL_OPEN", (original) => (p, info: { readonly sender: number }) => {
    if (ended) return
    if (channels._count >= maxChannels) {
      return protocol.channelOpenFail(info.sender, OPEN_RESOURCE_SHORTAGE, `at most ${maxChannels} channels`)
    }
    original(p, info)
  })
  wrap("CHANNEL_CLOSE", (original) => (p, recipient: number) => {
    const entry = lookup(recipient)
    environment.delete(recipient)
    original(p, recipient)
    if (entry === undefined || !isSession(entry) || entry._channel !== undefined) return
    if (lookup(recipient) !== entry) return
    channels.remove(recipient)
    const remote = remoteIdOf(entry)
    if (remote !== undefined && !ended) protocol.channelClose(remote)
  })

  // Environment per channel.
  wrap("CHANNEL_REQUEST", (original) => (p, recipient: number, type: string, wantReply: boolean, data: any) => {
    if (ended) return
    if (type === "env") {
      const entry = lookup(recipient)
      const used = environment.get(recipient) ?? { count: 0, bytes: 0 }
      const size = String(data?.name ?? "").length + String(data?.value ?? "").length
      if (entry !== undefined && (used.count >= maxEnv || used.bytes + size > maxEnvBytes)) {
        const remote = remoteIdOf(entry)
        if (wantReply && remote !== undefined) protocol.channelFailure(remote)
        return
      }
      environment.set(recipient, { count: used.count + 1, bytes: used.bytes + size })
    }
    original(p, recipient, type, wantReply, data)
  })

  // Authentication: delayed rejections and a bound on attempts.
  const delay = Duration.toMillis(options.rejectionDelay ?? DEFAULT_REJECTION_DELAY)
  const maxTries = options.maxAuthTries ?? DEFAULT_MAX_AUTH_TRIES
  let failures = 0
  connection.prependListener("authentication", (ctx: ssh2.AuthContext) => {
    if (ctx.method === "none") return
    const reject = ctx.reject.bind(ctx)
    ctx.reject = (methodsLeft?: Array<ssh2.AuthenticationType>, isPartial?: boolean) => {
      failures += 1
      const last = failures >= maxTries
      const answer = () => {
        if (ended || socket.destroyed) return
        reject(methodsLeft, isPartial)
        if (last) disconnect(DISCONNECT_NO_MORE_AUTH_METHODS, `${failures} failed authentication attempts`)
      }
      if (delay <= 0) return answer()
      // one "close" listener per refusal in wait, removed when it is answered (a connection's
      // refusals would otherwise pile up listeners on the socket)
      const onClose = () => clearTimeout(timer)
      const timer = setTimeout(() => {
        socket.removeListener("close", onClose)
        answer()
      }, delay)
      socket.once("close", onClose)
    }
  })
}

/**
 * Ends the login phase of a transport: fails `authenticated` when the transport closes before
 * authentication, and closes the transport (failing `authenticated` too) when authentication has
 * not completed within the login grace time. Runs in the background until the scope closes.
 *
 * Watching the transport itself matters before the peer's SSH identification line: ssh2 only
 * hands the connection over (its `connection` event) once that line arrived, so a peer that sends
 * garbage or nothing and goes away would otherwise leave `serveTransport` waiting for ever.
 *
 * @internal
 */
export const guardLogin = (
  socket: Duplex,
  authenticated: Deferred.Deferred<void, ConnectionError>,
  options: GuardOptions = {}
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const grace = Duration.decode(options.loginGraceTime ?? DEFAULT_LOGIN_GRACE_TIME)
    const onClose = () =>
      Deferred.unsafeDone(
        authenticated,
        Exit.fail(new ConnectionError({ reason: "ConnectionLost", detail: "closed before authentication" }))
      )
    if (socket.destroyed) onClose()
    else socket.once("close", onClose)
    yield* Effect.addFinalizer(() => Effect.sync(() => socket.removeListener("close", onClose)))
    yield* Deferred.await(authenticated).pipe(
      Effect.timeoutOption(grace),
      Effect.flatMap(Option.match({
        onSome: () => Effect.void,
        onNone: () => {
          const detail = `not authenticated within ${Duration.format(grace)}`
          return Effect.logWarning(`${detail}: closing the connection`).pipe(
            Effect.andThen(Deferred.fail(authenticated, new ConnectionError({ reason: "HandshakeFailed", detail }))),
            Effect.andThen(Effect.sync(() => socket.destroy()))
          )
        }
      })),
      Effect.ignore,
      Effect.forkScoped
    )
  })
