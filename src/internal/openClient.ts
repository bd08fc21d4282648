/**
 * The in-process path: an ssh2 server and client joined by an in-memory duplex pair, with
 * ephemeral keys on both sides. Data flows client → duplex → server session → Sandbox.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type { Sandbox } from "../Sandbox.js"
import type { ClientOptions } from "../SandboxSsh.js"
import type { SshClient } from "../SshClient.js"
import type { SshError } from "../SshError.js"
import type { SshKeys } from "../SshKeys.js"
import { makeClient } from "./client/client.js"
import { connect } from "./client/connect.js"
import { DEFAULT_INACTIVITY_TIMEOUT, validTerm, validTimeout, validUser } from "./options.js"
import { unrestricted } from "./server/authorization.js"
import { makeSsh2Server, serveTransport } from "./server/connection.js"
import { makeDuplexPair } from "./transport/duplexPair.js"

/** @internal */
export const openClient = (
  sandbox: Sandbox,
  keys: SshKeys,
  options: ClientOptions = {}
): Effect.Effect<SshClient, SshError, Scope.Scope> =>
  Effect.gen(function*() {
    const user = yield* validUser("user", options.user)
    const term = yield* validTerm("term", options.term)
    const inactivityTimeout = yield* validTimeout(
      "inactivityTimeout",
      options.inactivityTimeout,
      DEFAULT_INACTIVITY_TIMEOUT
    )
    const [hostKey, clientKey] = yield* Effect.all([keys.generateEphemeral, keys.generateEphemeral])

    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    return yield* Effect.gen(function*() {
      const [serverSide, clientSide] = makeDuplexPair()
      const clientBlob = clientKey.publicBlob
      const server = makeSsh2Server(hostKey)
      yield* Effect.forkScoped(
        serveTransport(server, serverSide, {
          sandbox,
          user,
          sftp: options.sftp ?? true,
          inactivityTimeout,
          authorize: (request) =>
            request.username === user && Buffer.from(request.publicBlob).equals(Buffer.from(clientBlob))
              ? unrestricted(clientKey.fingerprint)
              : undefined
        }).pipe(Effect.ignore)
      )
      const client = yield* connect({
        sock: clientSide,
        username: user,
        clientKey,
        hostKey: hostKey.publicBlob,
        cipher: options.ciphers
      })
      return makeClient(client, scope, { user, term })
    }).pipe(
      Scope.extend(scope),
      Effect.onError(() => Scope.close(scope, Exit.void))
    )
  }).pipe(Effect.withSpan("SandboxSsh.openClient"))
