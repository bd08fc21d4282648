/**
 * The client side of one SSH connection: connect over a given transport stream, authenticate with a
 * key, pin the host key.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { timingSafeEqual } from "node:crypto"
import type { Duplex, Readable } from "node:stream"
import ssh2 from "ssh2"
import { ConnectionError } from "../../SshError.js"
import type { KeyPair } from "../../SshKeys.js"
import { serverAlgorithms } from "../server/connection.js"
import * as Padding from "../transport/padding.js"

/** @internal */
export interface ConnectOptions {
  readonly sock: Duplex
  readonly username: string
  readonly clientKey: KeyPair
  /** The only host key accepted. */
  readonly hostKey: Uint8Array
  readonly cipher?: ReadonlyArray<string> | undefined
  readonly readyTimeoutMillis?: number | undefined
}

const sameKey = (a: Uint8Array, b: Uint8Array) => a.length === b.length && timingSafeEqual(a, b)

/**
 * Connects and authenticates. The connection is ended when the scope closes.
 *
 * @internal
 */
export const connect = (options: ConnectOptions): Effect.Effect<ssh2.Client, ConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    Padding.install()
    const client = new ssh2.Client()
    client.setMaxListeners(0)
    // The finalizer is registered before the handshake starts (as NodeSocket does), so the
    // handshake itself stays interruptible: an acquireRelease acquisition would not be.
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        if (options.sock.destroyed) return resume(Effect.void)
        const done = () => resume(Effect.void)
        client.once("close", done)
        client.end()
        return Effect.sync(() => client.removeListener("close", done))
      }).pipe(
        Effect.interruptible,
        Effect.timeoutOption("2 seconds"),
        Effect.ensuring(Effect.sync(() => options.sock.destroy()))
      )
    )
    return yield* Effect.async<ssh2.Client, ConnectionError>((resume) => {
      let settled = false
      const fail = (error: ConnectionError) => {
        if (settled) return
        settled = true
        cleanup()
        resume(Effect.fail(error))
      }
      const onReady = () => {
        if (settled) return
        settled = true
        cleanup()
        resume(Effect.succeed(client))
      }
      const onError = (error: Error & { level?: string }) =>
        fail(
          new ConnectionError({
            reason: error.level === "client-authentication" ? "AuthenticationRejected" : "HandshakeFailed",
            detail: error.message,
            cause: error
          })
        )
      const onClose = () => fail(new ConnectionError({ reason: "ConnectionLost", detail: "closed during handshake" }))
      const cleanup = () => {
        client.removeListener("ready", onReady)
        client.removeListener("error", onError)
        client.removeListener("close", onClose)
      }
      client.on("ready", onReady)
      client.on("error", onError)
      client.on("close", onClose)
      client.connect({
        sock: options.sock as unknown as Readable,
        username: options.username,
        privateKey: options.clientKey.privateKey,
        hostVerifier: (key: Buffer) => sameKey(new Uint8Array(key), options.hostKey),
        algorithms: {
          cipher: [...(options.cipher ?? serverAlgorithms.cipher)] as Array<ssh2.CipherAlgorithm>,
          compress: ["none"]
        },
        readyTimeout: options.readyTimeoutMillis ?? 20_000,
        keepaliveInterval: 0
      })
      return Effect.sync(() => {
        settled = true
        cleanup()
        options.sock.destroy()
      })
    })
  })
