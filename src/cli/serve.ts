/**
 * `sandbox-ssh serve --port`: a TCP listener. (`--stdio` is the relay, bin/relay.cjs; `--socket` the
 * server daemon, daemon.ts.)
 *
 * @internal
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as SandboxSsh from "../SandboxSsh.js"
import type * as SshKeys from "../SshKeys.js"
import { openSandbox, type SandboxSelection } from "./sandboxSelection.js"

/** @internal */
export interface ServeOptions extends SandboxSelection {
  readonly host: string
  readonly port: number
  readonly hostKey: string | undefined
  readonly authorizedKeys: string | undefined
  readonly user: string | undefined
}

/** @internal */
export const serve = (options: ServeOptions, keys: SshKeys.SshKeys): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    const sandbox = yield* openSandbox(options)
    const server = yield* SandboxSsh.make(sandbox, keys).prepareServer({
      hostKeyPath: options.hostKey,
      authorizedKeysPath: options.authorizedKeys,
      user: options.user
    })
    const listener = yield* server.listen({ host: options.host, port: options.port })
    yield* Console.error(
      `sandbox-ssh: serving ${sandbox.info.root ?? "sandbox"} (${
        sandbox.info.isolated ? sandbox.info.isolation : "NOT isolated"
      }) on ${listener.host}:${listener.port}; host key ${server.hostKey.fingerprint}`
    )
    return yield* Effect.never
  }).pipe(Effect.scoped)
