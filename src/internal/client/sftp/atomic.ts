/**
 * The write-then-rename step of `upload` and `download`: each file goes to a temporary sibling of
 * its target and replaces the target only once complete, so a failed or interrupted transfer never
 * leaves a short file under the target's name, and an existing target keeps its old bytes until
 * the new ones are all there.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import { randomBytes } from "node:crypto"
import type * as PosixPath from "node:path/posix"
import type { SftpClient } from "../../../SftpClient.js"
import type { SftpError } from "../../../SshError.js"

/** Longest name most file systems accept (NAME_MAX), in bytes. */
const NAME_MAX = 255

/** A removal of a temporary file waits at most this long (a hung connection must not hang the caller). */
const CLEANUP_TIMEOUT = "5 seconds"

/**
 * `.<name>.sandbox-ssh-<12 hex>` next to `target` (rsync's pattern): hidden, in the same directory
 * (so the rename stays on one file system), unique per transfer. A long name is shortened to keep
 * the temporary name within NAME_MAX.
 *
 * @internal
 */
export const temporarySibling = (target: string, path: Pick<typeof PosixPath, "dirname" | "basename" | "join">) => {
  const suffix = `.sandbox-ssh-${randomBytes(6).toString("hex")}`
  let name = path.basename(target)
  while (name.length > 0 && Buffer.byteLength(`.${name}${suffix}`) > NAME_MAX) name = name.slice(0, -1)
  return path.join(path.dirname(target), `.${name}${suffix}`)
}

/**
 * Runs `write(temporary)`, then `replace(temporary)`. When either fails or is interrupted, the
 * temporary file is removed (best effort, bounded, errors ignored) and the original failure stands
 * — unless `replace` called `keep()`: then the temporary file may be the only copy left of the new
 * bytes and stays.
 *
 * @internal
 */
export const viaTemporary = <E1, R1, E2, R2>(options: {
  /** Chooses the temporary file's name, afresh each time the effect runs. */
  readonly temporary: () => string
  readonly write: (temporary: string) => Effect.Effect<void, E1, R1>
  readonly replace: (temporary: string, keep: () => void) => Effect.Effect<void, E2, R2>
  readonly remove: (temporary: string) => Effect.Effect<void, unknown>
}): Effect.Effect<void, E1 | E2, R1 | R2> =>
  Effect.suspend(() => {
    const temporary = options.temporary()
    let kept = false
    const keep = () => {
      kept = true
    }
    return Effect.onExit(
      Effect.zipRight(options.write(temporary), options.replace(temporary, keep)),
      (exit) =>
        Exit.isSuccess(exit) || kept
          ? Effect.void
          : options.remove(temporary).pipe(
            // A finalizer runs uninterruptibly; the timeout has to be able to abandon the removal.
            Effect.interruptible,
            Effect.timeoutOption(CLEANUP_TIMEOUT),
            Effect.ignore
          )
    )
  })

/**
 * Renames `temporary` onto `target`, replacing it. With `posix-rename@openssh.com` this is one
 * atomic step. Without it SFTP v3's RENAME fails when the target exists, so the target is removed
 * first and the rename retried: NOT atomic — between the two a reader finds no file, and if the
 * second rename fails the new bytes are left in `temporary` (kept; the error's `path` names it)
 * while the old target is gone. (`layerFileSystem`'s `rename` is this too: Node's replaces.)
 *
 * @internal
 */
export const replaceRemote = (
  sftp: SftpClient,
  temporary: string,
  target: string,
  keep: () => void = () => {}
): Effect.Effect<void, SftpError> =>
  sftp.extensions["posix-rename@openssh.com"] !== undefined
    ? sftp.rename(temporary, target, { overwrite: true })
    : sftp.rename(temporary, target).pipe(
      Effect.catchIf(
        (error) => error.reason === "Failure",
        (error) =>
          Effect.flatMap(Effect.option(sftp.lstat(target)), (existing) =>
            Option.isSome(existing) && existing.value.type !== "Directory"
              // Once the old target is gone, stopping halfway would lose both: no interruption here.
              ? Effect.uninterruptible(
                Effect.zipRight(
                  sftp.removeFile(target),
                  Effect.zipRight(Effect.sync(keep), sftp.rename(temporary, target))
                )
              )
              : Effect.fail(error))
      )
    )
