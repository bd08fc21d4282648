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
import { type ClientState, openExec, startProcess } from "./process.js"
import { openSftp } from "./sftp/client.js"

const concat = (chunks: Array<Buffer>): Uint8Array => chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)

/**
 * Sends all of `input` then EOF, and gathers stdout and stderr until both end: one callback-driven
 * effect instead of three fibers, as this is the hot path of every exec. The whole input is in
 * memory already; the channel's own buffer paces it.
 */
const collectOutput = (
  channel: ssh2.ClientChannel,
  input: Uint8Array | undefined
): Effect.Effect<readonly [Uint8Array, Uint8Array]> =>
  Effect.async<readonly [Uint8Array, Uint8Array]>((resume) => {
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    let outEnded = false
    let errEnded = false
    const onOut = (chunk: Buffer) => {
      out.push(chunk)
    }
    const onErr = (chunk: Buffer) => {
      err.push(chunk)
    }
    const cleanup = () => {
      channel.removeListener("data", onOut)
      channel.removeListener("end", onOutEnd)
      channel.stderr.removeListener("data", onErr)
      channel.stderr.removeListener("end", onErrEnd)
    }
    const check = () => {
      if (!outEnded || !errEnded) return
      cleanup()
      resume(Effect.succeed([concat(out), concat(err)] as const))
    }
    function onOutEnd() {
      outEnded = true
      check()
    }
    function onErrEnd() {
      errEnded = true
      check()
    }
    channel.on("data", onOut)
    channel.once("end", onOutEnd)
    channel.stderr.on("data", onErr)
    channel.stderr.once("end", onErrEnd)
    if (channel.readableEnded) outEnded = true
    if (channel.stderr.readableEnded) errEnded = true
    if (input === undefined) channel.end()
    else channel.end(input)
    check()
    return Effect.sync(cleanup)
  })

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
        const [stdout, stderr] = yield* collectOutput(
          channel,
          execOptions.stdin === undefined
            ? undefined
            : typeof execOptions.stdin === "string"
            ? Buffer.from(execOptions.stdin)
            : execOptions.stdin
        )
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
