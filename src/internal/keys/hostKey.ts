/**
 * Host key files: load an existing key, or create one atomically so that two processes starting at
 * once end up sharing one key and neither ever overwrites the other's.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as Path from "node:path"
import { KeyError } from "../../SshError.js"
import type { KeyPair } from "../../SshKeys.js"
import { generateEd25519, parsePrivateKey } from "./keyPair.js"

const errno = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error ? String(error.code) : undefined

/** @internal */
export const loadHostKey = (path: string): Effect.Effect<KeyPair, KeyError> =>
  Effect.gen(function*() {
    const stat = yield* Effect.tryPromise({
      try: () => fs.lstat(path),
      catch: (cause) =>
        errno(cause) === "ENOENT"
          ? new KeyError({ reason: "Missing", path, detail: "no such file", cause })
          : new KeyError({ reason: "Unreadable", path, detail: String(cause), cause })
    })
    if (stat.isSymbolicLink()) {
      return yield* new KeyError({
        reason: "BadPermissions",
        path,
        detail: "is a symbolic link; point the option at the key file itself"
      })
    }
    if (!stat.isFile()) return yield* new KeyError({ reason: "Unreadable", path, detail: "not a regular file" })
    if ((stat.mode & 0o077) !== 0) {
      return yield* new KeyError({
        reason: "BadPermissions",
        path,
        detail: `permissions ${(stat.mode & 0o777).toString(8)} are too open; run: chmod 600 ${path}`
      })
    }
    const pem = yield* Effect.tryPromise({
      try: () => fs.readFile(path, "utf8"),
      catch: (cause) => new KeyError({ reason: "Unreadable", path, detail: String(cause), cause })
    })
    return yield* parsePrivateKey(pem, path)
  })

/** @internal */
export const loadOrCreateHostKey = (path: string): Effect.Effect<KeyPair, KeyError> =>
  loadHostKey(path).pipe(
    Effect.catchIf((error) => error.reason === "Missing", () => createHostKey(path))
  )

const createHostKey = (path: string): Effect.Effect<KeyPair, KeyError> =>
  Effect.gen(function*() {
    const key = yield* generateEd25519("sandbox-ssh host key")
    const temporary = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`
    const created = yield* Effect.tryPromise({
      try: async () => {
        await fs.mkdir(Path.dirname(path), { recursive: true, mode: 0o700 })
        await fs.writeFile(temporary, key.privateKey, { mode: 0o600, flag: "wx" })
        try {
          // link(2) fails with EEXIST instead of replacing: the first writer wins, others load its key.
          await fs.link(temporary, path)
          return true
        } catch (error) {
          if (errno(error) === "EEXIST") return false
          throw error
        } finally {
          await fs.rm(temporary, { force: true })
        }
      },
      catch: (cause) => new KeyError({ reason: "WriteFailed", path, detail: String(cause), cause })
    })
    return created ? key : yield* loadHostKey(path)
  })
