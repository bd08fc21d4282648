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
import * as FsPromises from "node:fs/promises"
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

/** Reads a small regular file at `components` under `root` without following any symlink. @internal */
export const readBeneath = async (root: string, components: ReadonlyArray<string>, maxBytes = 1 << 20) => {
  const handles: Array<FsPromises.FileHandle> = []
  try {
    let dir = await FsPromises.open(root, O_RDONLY | O_DIRECTORY)
    handles.push(dir)
    for (const name of components.slice(0, -1)) {
      dir = await FsPromises.open(`/proc/self/fd/${dir.fd}/${name}`, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
      handles.push(dir)
    }
    const file = await FsPromises.open(
      `/proc/self/fd/${dir.fd}/${components[components.length - 1]}`,
      O_RDONLY | O_NOFOLLOW | O_NONBLOCK
    )
    handles.push(file)
    const stat = await file.stat()
    if (!stat.isFile()) throw Object.assign(new Error("not a regular file"), { code: "EINVAL" })
    if (stat.size > maxBytes) throw Object.assign(new Error("file too large"), { code: "EFBIG" })
    return await file.readFile("utf8")
  } finally {
    await Promise.all(handles.map((handle) => handle.close().catch(() => undefined)))
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
  Effect.tryPromise({
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
