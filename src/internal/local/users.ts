/**
 * Login users of an isolated sandbox, read from the sandbox's own `/etc/passwd`.
 *
 * The sandbox can rewrite its `/etc` at will (it is root in there), so the host opens the file one
 * component at a time without following symlinks (`O_NOFOLLOW` through `/proc/self/fd/<dir>/name`)
 * and refuses anything that is not a regular file: a planted symlink or FIFO cannot make the host
 * read its own files or hang.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import { SandboxError } from "../../SshError.js"

/** @internal */
export interface PasswdEntry {
  readonly name: string
  readonly uid: number
  readonly gid: number
  readonly home: string
  readonly shell: string
}

const { O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_RDONLY } = Fs.constants

/**
 * Reads a small regular file at `components` under `root` without following any symlink.
 * Synchronous on purpose: a handful of syscalls on a local file, cheaper than threadpool round trips
 * on every spawn; `O_NONBLOCK` keeps a planted FIFO from blocking, and the size is checked first.
 *
 * @internal
 */
export const readBeneath = (root: string, components: ReadonlyArray<string>, maxBytes = 1 << 20): string => {
  const fds: Array<number> = []
  try {
    let dir = Fs.openSync(root, O_RDONLY | O_DIRECTORY)
    fds.push(dir)
    for (const name of components.slice(0, -1)) {
      dir = Fs.openSync(`/proc/self/fd/${dir}/${name}`, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
      fds.push(dir)
    }
    const file = Fs.openSync(
      `/proc/self/fd/${dir}/${components[components.length - 1]}`,
      O_RDONLY | O_NOFOLLOW | O_NONBLOCK
    )
    fds.push(file)
    const stat = Fs.fstatSync(file)
    if (!stat.isFile()) throw Object.assign(new Error("not a regular file"), { code: "EINVAL" })
    if (stat.size > maxBytes) throw Object.assign(new Error("file too large"), { code: "EFBIG" })
    return Fs.readFileSync(file, "utf8")
  } finally {
    for (const fd of fds) {
      try {
        Fs.closeSync(fd)
      } catch {
        // already closed
      }
    }
  }
}

/** @internal */
export const parsePasswd = (text: string): Array<PasswdEntry> =>
  text.split("\n").flatMap((line) => {
    const fields = line.split(":")
    if (fields.length < 7 || line.startsWith("#")) return []
    const uid = Number(fields[2])
    const gid = Number(fields[3])
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || fields[2] === "" || fields[3] === "") return []
    return [{ name: fields[0]!, uid, gid, home: fields[5]!, shell: fields[6]! }]
  })

/**
 * Finds `user` (a login name, or a numeric uid) in the sandbox's `/etc/passwd`.
 *
 * @internal
 */
export const lookup = (root: string, user: string): Effect.Effect<PasswdEntry, SandboxError> =>
  Effect.try({
    try: () => readBeneath(root, ["etc", "passwd"]),
    catch: (cause) =>
      new SandboxError({
        reason: "InvalidArgument",
        operation: "spawn",
        detail: `unknown user ${JSON.stringify(user)}: the sandbox's /etc/passwd is unreadable`,
        cause
      })
  }).pipe(
    Effect.flatMap((text) => {
      const entries = parsePasswd(text)
      const entry = entries.find((e) => e.name === user) ??
        (/^\d+$/.test(user) ? entries.find((e) => e.uid === Number(user)) : undefined)
      return entry === undefined
        ? Effect.fail(
          new SandboxError({
            reason: "InvalidArgument",
            operation: "spawn",
            detail: `unknown user ${JSON.stringify(user)}: not in the sandbox's /etc/passwd`
          })
        )
        : Effect.succeed(entry)
    })
  )
