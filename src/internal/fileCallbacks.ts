/**
 * Reads and writes of a `SandboxFile` that report by callback, for the SFTP server's data path.
 *
 * Run as an Effect, every READ and WRITE of an SFTP session is a fiber: measured ~40 µs of the
 * event loop per request (fiber start, fiber refs, scheduler turns, latches), which at the 32 KiB
 * requests of `sftp -B 32768`, paramiko or ssh2's `fastGet` made the server CPU-bound at half
 * OpenSSH's speed. A file whose implementation completes by callback anyway (`directFile.ts`)
 * offers that here too, and the server uses it instead of running the Effect.
 *
 * The callbacks are attached as a non-enumerable property: a wrapper made by spreading a file
 * (`{ ...file, read }`, as tests and guards do) does not carry them, so its own `read`/`write` is
 * what runs.
 *
 * @internal
 */
import type { SandboxFile } from "../Sandbox.js"
import type { SandboxError } from "../SshError.js"

/**
 * The callback form of `SandboxFile`'s `read` and `write`, with the same meaning. Each calls
 * `done` exactly once, possibly before returning.
 *
 * @internal
 */
export interface FileCallbacks {
  readonly read: (
    offset: number,
    length: number,
    done: (error: SandboxError | undefined, data: Uint8Array) => void
  ) => void
  readonly write: (offset: number, data: Uint8Array, done: (error: SandboxError | undefined) => void) => void
}

const key = Symbol.for("sandbox-ssh/FileCallbacks")

/**
 * `file`, offering `callbacks` too.
 *
 * @internal
 */
export const attach = <F extends SandboxFile>(file: F, callbacks: FileCallbacks): F =>
  Object.defineProperty(file, key, { value: callbacks, enumerable: false })

/**
 * The callbacks `file` offers, if any.
 *
 * @internal
 */
export const of = (file: SandboxFile): FileCallbacks | undefined =>
  (file as unknown as { readonly [key]?: FileCallbacks })[key]
