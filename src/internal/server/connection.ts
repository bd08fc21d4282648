/**
 * One SSH connection on the server side: handshake, public-key authentication, the inactivity
 * timeout, and dispatch of channels to their handlers. Everything a connection starts lives in
 * the connection's scope and ends with it.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type { Socket } from "node:net"
import type { Duplex } from "node:stream"
import ssh2 from "ssh2"
import type { Sandbox } from "../../Sandbox.js"
import { ConnectionError } from "../../SshError.js"
import type { KeyPair } from "../../SshKeys.js"
import * as Padding from "../transport/padding.js"
import type { Authorization } from "./authorization.js"
import * as ChannelInput from "./channelInput.js"
import { handleDirectTcpip } from "./forwarding.js"
import { guardConnection, guardLogin } from "./guards.js"
import { handleSession } from "./session.js"

/** What the server knows about the key a client authenticated with. @internal */
export interface AuthRequest {
  readonly username: string
  readonly keyAlgorithm: string
  readonly publicBlob: Uint8Array
  /** The client's address when the transport has one (TCP), for `from=`. */
  readonly remoteAddress: string | undefined
}

/** @internal */
export interface ServerConfig {
  readonly sandbox: Sandbox
  /** The user every process of this connection runs as inside the sandbox. */
  readonly user: string
  readonly sftp: boolean
  /** Zero disables the timeout. */
  readonly inactivityTimeout: Duration.Duration
  /** The key's restrictions, or `undefined` to refuse it. */
  readonly authorize: (request: AuthRequest) => Authorization | undefined
}

/** Algorithms offered by our endpoints: fast AEAD ciphers first, no compression (FACTS.md). @internal */
export const serverAlgorithms = {
  cipher: [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr"
  ],
  compress: ["none"]
} as const

/** An ssh2 server object for a host key; it can serve any number of injected transports. @internal */
export const makeSsh2Server = (hostKey: KeyPair): ssh2.Server => {
  Padding.install()
  const server = new ssh2.Server({
    hostKeys: [hostKey.privateKey],
    ident: "sandbox-ssh_0.1",
    algorithms: { cipher: [...serverAlgorithms.cipher], compress: [...serverAlgorithms.compress] }
  })
  server.setMaxListeners(0)
  return server
}

const verifySignature = (ctx: ssh2.PublicKeyAuthContext): boolean => {
  const key = ssh2.utils.parseKey(ctx.key.data)
  if (key instanceof Error || ctx.signature === undefined || ctx.blob === undefined) return false
  return key.verify(ctx.blob, ctx.signature, ctx.hashAlgo)
}

/**
 * Serves one SSH transport over `socket` until it closes. Fails only when the handshake or
 * authentication does not complete; a connection that ends later ends the effect successfully.
 *
 * @internal
 */
export const serveTransport = (
  server: ssh2.Server,
  socket: Duplex,
  config: ServerConfig,
  remoteAddress?: string
): Effect.Effect<void, ConnectionError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const runFork = yield* FiberSet.makeRuntime<never>()
      const authenticated = yield* Deferred.make<void, ConnectionError>()
      const closed = yield* Deferred.make<void>()
      let lastActivity = Date.now()
      const touch = () => {
        lastActivity = Date.now()
      }

      const onConnection = (connection: ssh2.Connection) => {
        if ((connection as unknown as { _sock: unknown })._sock !== socket) return
        server.removeListener("connection", onConnection)
        // ssh2 leaves holes a hostile peer can use to exhaust memory (see guards.ts)
        guardConnection(connection, socket, runFork)
        // after the guards: what they let through is lent or copied (and their own views are done)
        ChannelInput.install(socket, connection)
        connection.on("error", (error) => {
          Deferred.unsafeDone(
            authenticated,
            Effect.fail(new ConnectionError({ reason: "HandshakeFailed", detail: error.message, cause: error }))
          )
        })
        connection.on("close", () => {
          Deferred.unsafeDone(
            authenticated,
            Effect.fail(new ConnectionError({ reason: "ConnectionLost", detail: "closed before authentication" }))
          )
          Deferred.unsafeDone(closed, Effect.void)
        })
        let authorization: Authorization | undefined = undefined
        connection.on("authentication", (ctx) => {
          if (ctx.method !== "publickey") return ctx.reject(["publickey"])
          const allowed = config.authorize({
            username: ctx.username,
            keyAlgorithm: ctx.key.algo,
            publicBlob: new Uint8Array(ctx.key.data),
            remoteAddress
          })
          if (allowed === undefined) return ctx.reject(["publickey"])
          // Without a signature this is the client asking whether the key would do (RFC 4252 §7).
          if (ctx.signature === undefined) return ctx.accept()
          if (!verifySignature(ctx)) return ctx.reject(["publickey"])
          authorization = allowed
          ctx.accept()
        })
        connection.on("ready", () => {
          Deferred.unsafeDone(authenticated, Effect.void)
          const granted = authorization!
          runFork(Effect.logDebug("authenticated").pipe(Effect.annotateLogs({ key: granted.fingerprint })))
          connection.on("session", (accept, reject) => {
            touch()
            runFork(handleSession(accept, reject, config, granted, touch))
          })
          connection.on("tcpip", (accept, reject, info: ssh2.TcpipRequestInfo) => {
            touch()
            if (!granted.allowPortForwarding) return reject()
            runFork(handleDirectTcpip(accept, reject, info, config.sandbox, touch))
          })
        })
      }
      server.on("connection", onConnection)
      socket.on("data", touch)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          server.removeListener("connection", onConnection)
          socket.removeListener("data", touch)
          if (!socket.destroyed) socket.destroy()
        })
      )
      server.injectSocket(socket as unknown as Socket)
      // login grace time; a peer that leaves before its banner ends the serve
      yield* guardLogin(socket, authenticated)

      if (Duration.toMillis(config.inactivityTimeout) > 0) {
        const timeout = Duration.toMillis(config.inactivityTimeout)
        const check: Effect.Effect<void> = Effect.suspend(() => {
          const idle = Date.now() - lastActivity
          return idle >= timeout
            ? Effect.logDebug("inactivity timeout").pipe(Effect.andThen(Effect.sync(() => socket.destroy())))
            : Effect.sleep(Duration.millis(timeout - idle)).pipe(Effect.andThen(check))
        })
        yield* Effect.forkScoped(check)
      }

      yield* Deferred.await(authenticated)
      yield* Deferred.await(closed)
    })
  ).pipe(Effect.withLogSpan("sandbox-ssh.connection"))
