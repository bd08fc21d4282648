/**
 * `sandbox-ssh serve`: one SSH connection over stdin/stdout, or a TCP listener.
 *
 * @internal
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import type { Sandbox, SandboxFileSystem, SandboxInfo } from "../Sandbox.js"
import * as SandboxSsh from "../SandboxSsh.js"
import type * as SshKeys from "../SshKeys.js"
import { openSandbox, type SandboxSelection } from "./sandboxSelection.js"

/** @internal */
export interface ServeOptions extends SandboxSelection {
  readonly stdio: boolean
  readonly host: string
  readonly port: number
  readonly hostKey: string | undefined
  readonly authorizedKeys: string | undefined
  readonly user: string | undefined
}

/**
 * Stands for `info.shell` until the sandbox has started; `spawn` replaces it with the real shell.
 * (A session reads `info.shell` synchronously when its exec/shell request arrives, which may come
 * before a sandbox started in parallel with the handshake is up.)
 */
const PENDING_SHELL = "\0sandbox-ssh:pending-shell"

/**
 * A sandbox that is still starting: every operation waits for it first. Lets `serve --stdio` run
 * the SSH handshake (which needs only the host key) while bubblewrap and its agent start, instead
 * of one after the other. A failed start fails the connection (see `serve`), as before.
 */
const pendingSandbox = (starting: Fiber.Fiber<Sandbox, unknown>): Sandbox => {
  let ready: Sandbox | undefined
  const sandbox = Fiber.join(starting).pipe(
    Effect.tap((s) => {
      ready = s
    }),
    // A failed start ends the whole connection (the race in `serve`); nothing to report here.
    Effect.catchAllCause(() => Effect.interrupt)
  )
  const pendingInfo: SandboxInfo = {
    transport: "local",
    isolated: false,
    isolation: "starting",
    shell: PENDING_SHELL,
    workdir: "/"
  }
  const fs = new Proxy({} as SandboxFileSystem, {
    get: (_, name) => (...args: Array<unknown>) =>
      Effect.flatMap(
        sandbox,
        (s) => (s.fs[name as keyof SandboxFileSystem] as (...a: Array<unknown>) => Effect.Effect<unknown>)(...args)
      )
  })
  return {
    get info() {
      return ready?.info ?? pendingInfo
    },
    spawn: (options) =>
      Effect.flatMap(
        sandbox,
        (s) => s.spawn(options.command === PENDING_SHELL ? { ...options, command: s.info.shell } : options)
      ),
    fs,
    connect: (host, port) => Effect.flatMap(sandbox, (s) => s.connect(host, port))
  }
}

/** One connection over stdin/stdout, with the sandbox started alongside the handshake. */
const serveStdio = (options: ServeOptions, keys: SshKeys.SshKeys): Effect.Effect<void, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    // Forked into this scope: the sandbox's resources are released when the connection ends.
    const starting = yield* Effect.forkScoped(openSandbox(options))
    const server = yield* SandboxSsh.make(pendingSandbox(starting), keys).prepareServer({
      hostKeyPath: options.hostKey,
      authorizedKeysPath: options.authorizedKeys,
      user: options.user
    })
    // A sandbox that cannot start ends the connection with its error, as when it started first.
    yield* Effect.raceFirst(server.serveConnection(), Fiber.join(starting).pipe(Effect.zipRight(Effect.never)))
  })

/** @internal */
export const serve = (options: ServeOptions, keys: SshKeys.SshKeys): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    if (options.stdio) return yield* serveStdio(options, keys)
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
