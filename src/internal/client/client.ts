/**
 * `SshClient` over an authenticated ssh2 connection.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type * as ssh2 from "ssh2"
import { DETACHED_CODE, type ExecOptions, type SshClient } from "../../SshClient.js"
import { ConnectionError } from "../../SshError.js"
import { SshOutput } from "../../SshOutput.js"
import { attachResult } from "./attach.js"
import { type ClientState, collectReadable, openExec, startProcess } from "./process.js"
import { openSftp } from "./sftp/client.js"

/**
 * Wraps a connected client. `scope` owns the connection: closing the client closes it.
 *
 * @internal
 */
export const makeClient = (
  client: ssh2.Client,
  scope: Scope.CloseableScope,
  options: { readonly user: string; readonly term: string }
): SshClient => {
  let closed = false
  let lostError: ConnectionError | undefined = undefined
  client.on("close", () => {
    lostError ??= new ConnectionError({
      reason: closed ? "Closed" : "ConnectionLost",
      detail: closed ? "the client was closed" : "the connection to the sandbox was lost"
    })
  })
  client.on("error", (error) => {
    lostError ??= new ConnectionError({ reason: "ConnectionLost", detail: error.message, cause: error })
  })
  const state: ClientState = {
    client,
    term: options.term,
    lostReason: () => lostError,
    ensureOpen: Effect.suspend(() =>
      closed
        ? Effect.fail(new ConnectionError({ reason: "Closed", detail: "the client was closed" }))
        : lostError
        ? Effect.fail(lostError)
        : Effect.void
    )
  }
  const exec = (command: string, execOptions: ExecOptions = {}) =>
    Effect.scoped(
      Effect.gen(function*() {
        const { channel, exit: exited } = yield* openExec(state, command, execOptions)
        const [stdout, stderr] = yield* Effect.all([
          collectReadable(channel),
          collectReadable(channel.stderr),
          Effect.sync(() => {
            // The whole input is in memory already; the channel's own buffer paces it.
            if (execOptions.stdin === undefined) channel.end()
            else channel.end(typeof execOptions.stdin === "string" ? Buffer.from(execOptions.stdin) : execOptions.stdin)
          })
        ], { concurrency: "unbounded" })
        const exit = yield* Deferred.await(exited)
        return new SshOutput({
          status: exit.code,
          stdout,
          stderr,
          ...(exit._tag === "Signaled" ? { signal: exit.signal } : {})
        }, true)
      })
    ).pipe(Effect.withSpan("SshClient.exec", { attributes: { command }, captureStackTrace: false }))

  return {
    user: options.user,
    term: options.term,
    exec,
    spawn: (command, processOptions) => startProcess(state, command, processOptions),
    attach: (attachOptions) =>
      Effect.map(
        attachResult(state, scope, attachOptions),
        (result) => result._tag === "Exited" ? result.code : DETACHED_CODE
      ),
    attachResult: (attachOptions) => attachResult(state, scope, attachOptions),
    sftp: () => openSftp(state),
    close: Effect.suspend(() => {
      closed = true
      return Scope.close(scope, Exit.void)
    })
  }
}
