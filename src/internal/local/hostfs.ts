/**
 * File operations of a non-isolated sandbox: plain `node:fs/promises` on host paths, relative paths
 * resolved against the working directory. Nothing here confines paths: a non-isolated sandbox is,
 * by definition, the host (`info.isolated` is `false`).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as FsPromises from "node:fs/promises"
import * as Path from "node:path"
import type {
  DirectoryEntry,
  FileAttributes,
  FileSystemStats,
  OpenFlags,
  SandboxFile,
  SandboxFileSystem,
  SetAttributes
} from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import { fromNodeError } from "./errors.js"

const maxRead = 16 * 1024 * 1024

const typeOf = (stats: Fs.Stats): FileAttributes["type"] =>
  stats.isFile()
    ? "File"
    : stats.isDirectory()
    ? "Directory"
    : stats.isSymbolicLink()
    ? "SymbolicLink"
    : stats.isBlockDevice()
    ? "BlockDevice"
    : stats.isCharacterDevice()
    ? "CharacterDevice"
    : stats.isFIFO()
    ? "FIFO"
    : stats.isSocket()
    ? "Socket"
    : "Unknown"

/** @internal */
export const toAttributes = (stats: Fs.Stats): FileAttributes => ({
  type: typeOf(stats),
  size: stats.size,
  uid: stats.uid,
  gid: stats.gid,
  mode: stats.mode,
  atime: Math.floor(stats.atimeMs / 1000),
  mtime: Math.floor(stats.mtimeMs / 1000),
  nlink: stats.nlink
})

/** SFTP-style open flags as `O_*` bits. @internal */
export const openFlags = (flags: OpenFlags): number => {
  const { O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } = Fs.constants
  const write = flags.write === true || flags.append === true
  let result = flags.read === true && write ? O_RDWR : write ? O_WRONLY : O_RDONLY
  if (flags.append === true) result |= O_APPEND
  if (flags.create === true) result |= O_CREAT
  if (flags.truncate === true) result |= O_TRUNC
  if (flags.exclusive === true) result |= O_EXCL
  return result
}

type Target = {
  readonly truncate: (size: number) => Promise<void>
  readonly chown: (uid: number, gid: number) => Promise<void>
  readonly chmod: (mode: number) => Promise<void>
  readonly utimes: (atime: number, mtime: number) => Promise<void>
  readonly stat: () => Promise<Fs.Stats>
}

const applyAttributes = async (target: Target, attributes: SetAttributes) => {
  if (attributes.size !== undefined) await target.truncate(attributes.size)
  if (attributes.uid !== undefined || attributes.gid !== undefined) {
    await target.chown(attributes.uid ?? -1, attributes.gid ?? -1)
  }
  if (attributes.mode !== undefined) await target.chmod(attributes.mode & 0o7777)
  if (attributes.atime !== undefined || attributes.mtime !== undefined) {
    const stats = attributes.atime === undefined || attributes.mtime === undefined ? await target.stat() : undefined
    await target.utimes(
      attributes.atime ?? Math.floor(stats!.atimeMs / 1000),
      attributes.mtime ?? Math.floor(stats!.mtimeMs / 1000)
    )
  }
}

const fileHandle = (handle: FsPromises.FileHandle, path: string): SandboxFile => {
  let closed = false
  const use = <A>(operation: string, f: () => Promise<A>) =>
    closed
      ? Effect.fail(new SandboxError({ reason: "Closed", operation, path, detail: "the file is closed" }))
      : Effect.tryPromise({ try: f, catch: fromNodeError(operation, path) })
  return {
    read: (offset, length) =>
      use("read", async () => {
        const buffer = Buffer.allocUnsafe(Math.max(0, Math.min(length, maxRead)))
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset)
        return new Uint8Array(buffer.buffer, buffer.byteOffset, bytesRead)
      }),
    write: (offset, data) =>
      use("write", async () => {
        let written = 0
        while (written < data.length) {
          const result = await handle.write(data, written, data.length - written, offset + written)
          written += result.bytesWritten
        }
      }),
    stat: use("fstat", async () => toAttributes(await handle.stat())),
    setStat: (attributes) =>
      use("fsetstat", () =>
        applyAttributes({
          truncate: (size) => handle.truncate(size),
          chown: (uid, gid) => handle.chown(uid, gid),
          chmod: (mode) => handle.chmod(mode),
          utimes: (atime, mtime) => handle.utimes(atime, mtime),
          stat: () => handle.stat()
        }, attributes)),
    sync: use("fsync", () => handle.sync()),
    close: Effect.suspend(() => {
      if (closed) return Effect.void
      closed = true
      return Effect.tryPromise({ try: () => handle.close(), catch: fromNodeError("close", path) })
    })
  }
}

/**
 * `rename` without overwrite: `link` + `unlink` is atomic against a concurrent creator of the target
 * (it fails with `EEXIST`). Directories (and file systems without hard links) fall back to
 * check-then-rename, which is racy against a concurrent creator but never overwrites what existed
 * at the check.
 */
const renameNoReplace = async (from: string, to: string) => {
  try {
    await FsPromises.link(from, to)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === "EEXIST" || code === "ENOENT") throw error
    // EPERM (a directory, protected_hardlinks), EXDEV, EMLINK, ENOTSUP...
    const exists = await FsPromises.lstat(to).then(() => true, () => false)
    if (exists) throw Object.assign(new Error(`${to} already exists`), { code: "EEXIST" })
    await FsPromises.rename(from, to)
    return
  }
  await FsPromises.unlink(from)
}

/** @internal */
export const make = (workdir: string): SandboxFileSystem => {
  const resolve = (path: string) => Path.resolve(workdir, path)
  const op = <A>(operation: string, path: string, f: (resolved: string) => Promise<A>) =>
    Effect.suspend(() => {
      const resolved = resolve(path)
      return Effect.tryPromise({ try: () => f(resolved), catch: fromNodeError(operation, path) })
    })

  const realPath = async (path: string): Promise<string> => {
    try {
      return await FsPromises.realpath(path)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT" || path === "/") throw error
      // the last component may be missing
      return Path.join(await FsPromises.realpath(Path.dirname(path)), Path.basename(path))
    }
  }

  return {
    stat: (path) => op("stat", path, async (p) => toAttributes(await FsPromises.stat(p))),
    lstat: (path) => op("lstat", path, async (p) => toAttributes(await FsPromises.lstat(p))),
    open: (path, flags, mode) =>
      Effect.async<SandboxFile, SandboxError>((resume) => {
        // An open can block (a FIFO): keep it interruptible, and close what it opens too late.
        let interrupted = false
        const opening = FsPromises.open(resolve(path), openFlags(flags), mode ?? 0o666)
        opening.then(
          (handle) => {
            if (interrupted) void handle.close().catch(() => {})
            else resume(Effect.succeed(fileHandle(handle, path)))
          },
          (error) => {
            if (!interrupted) resume(Effect.fail(fromNodeError("open", path)(error)))
          }
        )
        return Effect.sync(() => {
          interrupted = true
        })
      }),
    readDirectory: (path) =>
      op("readdir", path, async (p) => {
        const names = await FsPromises.readdir(p)
        const entries = await Promise.all(names.map(async (name): Promise<DirectoryEntry | undefined> => {
          try {
            return { name, attributes: toAttributes(await FsPromises.lstat(Path.join(p, name))) }
          } catch {
            return undefined // removed meanwhile
          }
        }))
        return entries.filter((entry): entry is DirectoryEntry => entry !== undefined)
      }),
    makeDirectory: (path, mode) => op("mkdir", path, (p) => FsPromises.mkdir(p, { mode: mode ?? 0o777 })),
    removeDirectory: (path) => op("rmdir", path, (p) => FsPromises.rmdir(p)),
    remove: (path) => op("remove", path, (p) => FsPromises.unlink(p)),
    rename: (oldPath, newPath, options) =>
      op(
        "rename",
        oldPath,
        (p) =>
          options?.overwrite === true ? FsPromises.rename(p, resolve(newPath)) : renameNoReplace(p, resolve(newPath))
      ),
    realPath: (path) => op("realpath", path, realPath),
    readLink: (path) => op("readlink", path, (p) => FsPromises.readlink(p)),
    symlink: (target, linkPath) => op("symlink", linkPath, (p) => FsPromises.symlink(target, p)),
    link: (existingPath, newPath) => op("link", newPath, (p) => FsPromises.link(resolve(existingPath), p)),
    setStat: (path, attributes) =>
      op("setstat", path, (p) =>
        applyAttributes({
          truncate: (size) => FsPromises.truncate(p, size),
          chown: (uid, gid) => FsPromises.chown(p, uid, gid),
          chmod: (mode) => FsPromises.chmod(p, mode),
          utimes: (atime, mtime) => FsPromises.utimes(p, atime, mtime),
          stat: () => FsPromises.stat(p)
        }, attributes)),
    statFileSystem: (path) =>
      op("statvfs", path, async (p): Promise<FileSystemStats> => {
        const s = await FsPromises.statfs(p)
        return {
          blockSize: s.bsize,
          fragmentSize: s.bsize,
          blocks: s.blocks,
          blocksFree: s.bfree,
          blocksAvailable: s.bavail,
          files: s.files,
          filesFree: s.ffree,
          filesAvailable: s.ffree,
          fsid: 0,
          flags: 0,
          nameMax: 255
        }
      })
  }
}
