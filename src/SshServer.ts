/**
 * A prepared SSH server endpoint for a sandbox: serve OpenSSH clients over the process's
 * stdin/stdout (an OpenSSH `ProxyCommand`), over any duplex stream, or on a TCP port.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Duplex } from "node:stream"
import type { SshError } from "./SshError.js"
import type { AuthorizedKeys, KeyPair } from "./SshKeys.js"

/**
 * Options of `prepareServer` (the reference's `WithSSHHostKeyPath`, `WithSSHAuthorizedKeysPath`,
 * `WithSSHServerUser`, `WithSSHServerSFTP`).
 *
 * @since 0.1.0
 * @category models
 */
export interface ServerOptions {
  /**
   * Host private key. Loaded when it exists (it must be 0600 and not a symlink), else created
   * there (Ed25519, OpenSSH format, 0600, parents 0700) atomically; never rewritten. Default
   * `<home>/ssh_host_ed25519_key`, where home is `$SANDBOX_SSH_HOME` or `~/.sandbox-ssh`.
   */
  readonly hostKeyPath?: string | undefined
  /** authorized_keys in sshd's format. Default `<home>/authorized_keys`. */
  readonly authorizedKeysPath?: string | undefined
  /** The user every session runs as inside the sandbox, whatever the client logs in as. Default `"root"`. */
  readonly user?: string | undefined
  /** Serve the `sftp` subsystem. Default `true`. */
  readonly sftp?: boolean | undefined
  /** Close a connection after this long without SSH traffic; `0` disables. Default 10 minutes. */
  readonly inactivityTimeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ListenOptions {
  /** Default `"127.0.0.1"`. */
  readonly host?: string | undefined
  /** Default `2222`; `0` picks a free port. */
  readonly port?: number | undefined
}

/**
 * A TCP listener; it stops accepting when its scope closes, and closing the server ends its
 * connections.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listener {
  readonly host: string
  readonly port: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SshServer {
  readonly hostKey: Omit<KeyPair, "privateKey">
  readonly authorizedKeys: AuthorizedKeys
  /**
   * Serves one SSH connection over this process's stdin and stdout and returns when it ends; call
   * again for the next one. Nothing but SSH bytes is written to stdout.
   */
  readonly serveConnection: () => Effect.Effect<void, SshError>
  /** Serves one SSH connection over `stream` (e.g. a socket) until it ends. */
  readonly serve: (stream: Duplex, options?: { readonly remoteAddress?: string | undefined }) => Effect.Effect<
    void,
    SshError
  >
  /** Accepts TCP connections and serves each concurrently until the scope closes. */
  readonly listen: (options?: ListenOptions) => Effect.Effect<Listener, SshError, Scope.Scope>
  /** Ends every connection and process this server started. Idempotent. */
  readonly close: Effect.Effect<void>
}
