/**
 * Keys: ephemeral Ed25519 pairs for in-process connections, host keys on disk, and authorized
 * keys in sshd's format.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs/promises"
import { parseAuthorizedKeys } from "./internal/keys/authorizedKeys.js"
import { loadHostKey, loadOrCreateHostKey } from "./internal/keys/hostKey.js"
import { generateEd25519 } from "./internal/keys/keyPair.js"
import { KeyError } from "./SshError.js"

/**
 * A private key with its public half.
 *
 * @since 0.1.0
 * @category models
 */
export interface KeyPair {
  /** e.g. `"ssh-ed25519"`. */
  readonly type: string
  /** OpenSSH private key format (PEM-armoured). Never logged. */
  readonly privateKey: string
  /** The `authorized_keys` form: `"ssh-ed25519 AAAA..."`. */
  readonly publicKey: string
  /** The SSH wire encoding of the public key. */
  readonly publicBlob: Uint8Array
  /** `SHA256:...` as `ssh-keygen -lf` prints it. */
  readonly fingerprint: string
}

/**
 * One option of an authorized_keys line, e.g. `{ name: "from", value: "10.0.0.*" }` or
 * `{ name: "no-pty" }`. Names are lower-cased.
 *
 * @since 0.1.0
 * @category models
 */
export interface AuthorizedKeyOption {
  readonly name: string
  readonly value: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface AuthorizedKey {
  readonly line: number
  readonly type: string
  readonly publicBlob: Uint8Array
  readonly fingerprint: string
  readonly comment: string
  readonly options: ReadonlyArray<AuthorizedKeyOption>
}

/**
 * The usable keys of an authorized_keys file and the lines that could not be used.
 *
 * @since 0.1.0
 * @category models
 */
export interface AuthorizedKeys {
  readonly path: string | undefined
  readonly keys: ReadonlyArray<AuthorizedKey>
  readonly problems: ReadonlyArray<{ readonly line: number; readonly detail: string }>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SshKeys {
  /** A fresh Ed25519 pair that exists only in memory. */
  readonly generateEphemeral: Effect.Effect<KeyPair>
  /** Loads a private key file; refuses symlinks and files readable by group or others. */
  readonly loadHostKey: (path: string) => Effect.Effect<KeyPair, KeyError>
  /**
   * Loads the key at `path`, or creates it there (Ed25519, OpenSSH format, mode 0600, missing
   * parents 0700). Creation is atomic: concurrent callers end up with one key; an existing key is
   * never rewritten.
   */
  readonly loadOrCreateHostKey: (path: string) => Effect.Effect<KeyPair, KeyError>
  /**
   * Parses an authorized_keys file. Bad lines are reported in `problems`, not fatal. A file
   * writable by group or others is refused (`BadPermissions`), as sshd's StrictModes does.
   */
  readonly readAuthorizedKeys: (path: string) => Effect.Effect<AuthorizedKeys, KeyError>
  /** Parses authorized_keys content held in memory. */
  readonly parseAuthorizedKeys: (content: string) => AuthorizedKeys
}

/**
 * @since 0.1.0
 * @category tags
 */
export const SshKeys: Context.Tag<SshKeys, SshKeys> = Context.GenericTag<SshKeys>("sandbox-ssh/SshKeys")

/**
 * The implementation backed by `node:crypto` and the local file system.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: SshKeys = {
  generateEphemeral: generateEd25519(),
  loadHostKey,
  loadOrCreateHostKey,
  readAuthorizedKeys: (path) =>
    Effect.tryPromise({
      try: async () => {
        // As sshd's StrictModes: a file others can write could authorize anyone.
        const stat = await fs.stat(path)
        if ((stat.mode & 0o022) !== 0) {
          throw Object.assign(new Error(`writable by group or others; run: chmod go-w ${path}`), {
            code: "EBADPERM"
          })
        }
        return fs.readFile(path, "utf8")
      },
      catch: (cause) => {
        const code = (cause as NodeJS.ErrnoException).code
        return new KeyError({
          reason: code === "ENOENT" ? "Missing" : code === "EBADPERM" ? "BadPermissions" : "Unreadable",
          path,
          detail: cause instanceof Error ? cause.message : String(cause),
          cause
        })
      }
    }).pipe(Effect.map((content) => parseAuthorizedKeys(content, path))),
  parseAuthorizedKeys: (content) => parseAuthorizedKeys(content)
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<SshKeys> = Layer.succeed(SshKeys, make)
