/**
 * `prepareServer`: a reusable endpoint with a host key on disk and authorized keys, serving
 * OpenSSH clients over stdio, any duplex, or a TCP listener.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Scope from "effect/Scope"
import type * as net from "node:net"
import type { Duplex } from "node:stream"
import type { Sandbox } from "../../Sandbox.js"
import { ConnectionError, KeyError, SandboxError, type SshError } from "../../SshError.js"
import type { AuthorizedKeys, SshKeys } from "../../SshKeys.js"
import type { ListenOptions, ServerOptions, SshServer } from "../../SshServer.js"
import { defaultAuthorizedKeysPath, defaultHostKeyPath } from "../home.js"
import { DEFAULT_INACTIVITY_TIMEOUT, validTimeout, validUser } from "../options.js"
import * as InboundBuffers from "../transport/inboundBuffers.js"
import * as PacketBuffers from "../transport/packetBuffers.js"
import { stdioDuplex } from "../transport/stdio.js"
import { authorizeKey } from "./authorization.js"
import { makeSsh2Server, serveTransport } from "./connection.js"

const loadAuthorizedKeys = (keys: SshKeys, path: string): Effect.Effect<AuthorizedKeys, KeyError> =>
  keys.readAuthorizedKeys(path).pipe(
    Effect.mapError((error) =>
      error.reason === "Missing"
        ? new KeyError({
          reason: "Missing",
          path,
          detail: `no authorized_keys file; add a key with: sandbox-ssh authorize --key "$(cat ~/.ssh/id_ed25519.pub)"`,
          cause: error
        })
        : error
    ),
    Effect.tap((authorized) =>
      Effect.forEach(
        authorized.problems,
        (problem) => Effect.logWarning(`${path}:${problem.line}: ${problem.detail}; line ignored`),
        { discard: true }
      )
    ),
    Effect.filterOrFail(
      (authorized) => authorized.keys.length > 0,
      () =>
        new KeyError({
          reason: "Missing",
          path,
          detail: `no usable key; add one with: sandbox-ssh authorize --key "$(cat ~/.ssh/id_ed25519.pub)"`
        })
    )
  )

/** @internal */
export const prepareServer = (
  sandbox: Sandbox,
  keys: SshKeys,
  options: ServerOptions = {}
): Effect.Effect<SshServer, SshError, Scope.Scope> =>
  Effect.gen(function*() {
    const user = yield* validUser("user", options.user)
    const inactivityTimeout = yield* validTimeout(
      "inactivityTimeout",
      options.inactivityTimeout,
      DEFAULT_INACTIVITY_TIMEOUT
    )
    const hostKey = yield* keys.loadOrCreateHostKey(options.hostKeyPath ?? defaultHostKeyPath())
    const authorizedKeysPath = options.authorizedKeysPath ?? defaultAuthorizedKeysPath()
    let authorizedKeys = yield* loadAuthorizedKeys(keys, authorizedKeysPath)

    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.parallel)
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const connections = yield* FiberSet.make<void, SshError>().pipe(Scope.extend(scope))
    let closed = false
    const server = makeSsh2Server(hostKey)

    const serve = (stream: Duplex, serveOptions?: { readonly remoteAddress?: string | undefined }) =>
      Effect.gen(function*() {
        if (closed) {
          stream.destroy()
          return yield* new ConnectionError({ reason: "Closed", detail: "the server was closed" })
        }
        // Like sshd, read authorized_keys for each connection, so `authorize` needs no restart;
        // a file that became unreadable keeps the last good set.
        authorizedKeys = yield* loadAuthorizedKeys(keys, authorizedKeysPath).pipe(
          Effect.orElseSucceed(() => authorizedKeys)
        )
        const current = authorizedKeys
        const fiber = yield* FiberSet.run(
          connections,
          serveTransport(server, stream, {
            sandbox,
            user,
            sftp: options.sftp ?? true,
            inactivityTimeout,
            authorize: (request) => authorizeKey(current, request.publicBlob, request.remoteAddress)
          }, serveOptions?.remoteAddress)
        )
        yield* Fiber.join(fiber)
      })

    const listen = (listenOptions: ListenOptions = {}) =>
      Effect.gen(function*() {
        const host = listenOptions.host ?? "127.0.0.1"
        const port = listenOptions.port ?? 2222
        const runFork = yield* FiberSet.makeRuntime<never>()
        const tcp = yield* Effect.acquireRelease(
          Effect.async<net.Server, SandboxError>((resume) => {
            // the peer's bytes land in reused slabs (inboundBuffers.ts)
            const tcp = InboundBuffers.createServer((socket) => {
              // ssh2 leaves Nagle on, which costs ~40 ms per exchange (FACTS.md).
              socket.setNoDelay(true)
              PacketBuffers.recycleOn(socket)
              runFork(
                serve(socket, { remoteAddress: socket.remoteAddress }).pipe(
                  Effect.catchAll((error) => Effect.logDebug("connection ended", error.message)),
                  Effect.annotateLogs({ peer: `${socket.remoteAddress}:${socket.remotePort}` })
                )
              )
            })
            tcp.once("error", (error) =>
              resume(
                Effect.fail(
                  new SandboxError({
                    reason: "TransportFailed",
                    operation: "listen",
                    detail: error.message,
                    cause: error
                  })
                )
              ))
            tcp.listen(port, host, () => {
              resume(Effect.succeed(tcp))
            })
          }),
          // Stop accepting at once; open connections end when the FiberSet above interrupts them
          // (waiting for close(cb) here would wait for those connections: a deadlock).
          (tcp) =>
            Effect.sync(() => {
              tcp.close()
            })
        )
        const address = tcp.address() as net.AddressInfo
        return { host: address.address, port: address.port }
      })

    return {
      hostKey: {
        type: hostKey.type,
        publicKey: hostKey.publicKey,
        publicBlob: hostKey.publicBlob,
        fingerprint: hostKey.fingerprint
      },
      get authorizedKeys() {
        return authorizedKeys
      },
      serve,
      serveConnection: () => Effect.suspend(() => serve(stdioDuplex())),
      listen,
      close: Effect.suspend(() => {
        closed = true
        return Scope.close(scope, Exit.void)
      })
    } satisfies SshServer
  }).pipe(Effect.withSpan("SandboxSsh.prepareServer"))
