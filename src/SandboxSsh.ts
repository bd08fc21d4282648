/**
 * The SSH namespace of a sandbox: open native clients to it, or prepare a server endpoint for
 * OpenSSH's tools. Holds no resources of its own.
 *
 * @since 0.1.0
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LocalSandbox, SandboxSsh, SshKeys } from "sandbox-ssh"
 *
 * const program = Effect.gen(function*() {
 *   const client = yield* SandboxSsh.openClient()
 *   const out = yield* client.exec("uname -a")
 *   console.log(out.stdoutText, out.status)
 * }).pipe(
 *   Effect.scoped,
 *   Effect.provide(SandboxSsh.layer),
 *   Effect.provide([LocalSandbox.layer(), SshKeys.layer])
 * )
 * ```
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { openClient as openInProcess } from "./internal/openClient.js"
import { prepareServer as prepareEndpoint } from "./internal/server/endpoint.js"
import { Sandbox } from "./Sandbox.js"
import type { SshClient } from "./SshClient.js"
import type { SshError } from "./SshError.js"
import * as SshKeys from "./SshKeys.js"
import type { ServerOptions, SshServer } from "./SshServer.js"

/**
 * Options of `openClient` (the reference's `WithSSHUser`, `WithSSHTerm`, `WithSSHClientSFTP`).
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /** Login user inside the sandbox. Default `"root"`. */
  readonly user?: string | undefined
  /** Terminal type for PTYs. Default `$TERM`, or `"xterm"` when unset, empty or `"dumb"`. */
  readonly term?: string | undefined
  /** Enable the SFTP subsystem on the in-process server. Default `true`. */
  readonly sftp?: boolean | undefined
  /** Close the connection after this long without SSH traffic; `0` disables. Default 10 minutes. */
  readonly inactivityTimeout?: Duration.DurationInput | undefined
  /** Ciphers the client offers, most preferred first (for tests and tuning). */
  readonly ciphers?: ReadonlyArray<string> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SandboxSsh {
  readonly sandbox: Sandbox
  /**
   * Opens a native in-process SSH client: ephemeral Ed25519 client and host keys (never written to
   * disk), an in-process server over an in-memory duplex, public-key authentication, the host key
   * pinned. Closing the scope closes the client and ends every process it started.
   */
  readonly openClient: (options?: ClientOptions) => Effect.Effect<SshClient, SshError, Scope.Scope>
  /**
   * Prepares a reusable server endpoint: loads or creates the host key, reads authorized keys.
   * Closing the scope closes it, its listeners, connections and processes.
   */
  readonly prepareServer: (options?: ServerOptions) => Effect.Effect<SshServer, SshError, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const SandboxSsh: Context.Tag<SandboxSsh, SandboxSsh> = Context.GenericTag<SandboxSsh>(
  "sandbox-ssh/SandboxSsh"
)

/**
 * The namespace for one sandbox value, for programs that hold many sandboxes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (sandbox: Sandbox, keys: SshKeys.SshKeys = SshKeys.make): SandboxSsh => ({
  sandbox,
  openClient: (options) => openInProcess(sandbox, keys, options),
  prepareServer: (options) => prepareEndpoint(sandbox, keys, options)
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<SandboxSsh, never, Sandbox | SshKeys.SshKeys> = Layer.effect(
  SandboxSsh,
  Effect.map(Effect.all([Sandbox, SshKeys.SshKeys]), ([sandbox, keys]) => make(sandbox, keys))
)

/**
 * Opens a client to the sandbox of the `SandboxSsh` in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const openClient = (
  options?: ClientOptions
): Effect.Effect<SshClient, SshError, SandboxSsh | Scope.Scope> =>
  Effect.flatMap(SandboxSsh, (ssh) => ssh.openClient(options))

/**
 * Prepares a server endpoint for the sandbox of the `SandboxSsh` in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const prepareServer = (
  options?: ServerOptions
): Effect.Effect<SshServer, SshError, SandboxSsh | Scope.Scope> =>
  Effect.flatMap(SandboxSsh, (ssh) => ssh.prepareServer(options))
