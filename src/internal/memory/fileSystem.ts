/**
 * An in-memory POSIX-like file tree: inodes (files, directories, symlinks) with hard links, modes,
 * owners and times, and a `SandboxFileSystem` view over it.
 *
 * Every operation is synchronous on the tree and therefore atomic: JavaScript runs one operation
 * to completion before another starts, so there are no races between concurrent execs and SFTP
 * sessions of the same sandbox.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Sandbox from "../../Sandbox.js"
import { SandboxError, type SandboxErrorReason } from "../../SshError.js"

const S_IFMT = 0o170000
const S_IFREG = 0o100000
const S_IFDIR = 0o040000
const S_IFLNK = 0o120000
const UMASK = 0o022
const MAX_SYMLINK_HOPS = 40
const NAME_MAX = 255
/** Keeps a stray offset from allocating the host's memory away (EFBIG). */
const MAX_FILE_SIZE = 2 ** 31
const BLOCK_SIZE = 4096
const TOTAL_BLOCKS = 262_144 // 1 GiB
const TOTAL_INODES = 65_536

interface NodeBase {
  readonly ino: number
  mode: number
  uid: number
  gid: number
  atime: number
  mtime: number
  ctime: number
}

/** @internal */
export interface FileNode extends NodeBase {
  readonly _tag: "File"
  /** Capacity may exceed `size`; bytes past `size` are always zero. */
  data: Uint8Array
  size: number
  nlink: number
}

/** @internal */
export interface DirectoryNode extends NodeBase {
  readonly _tag: "Directory"
  readonly entries: Map<string, Node>
  /** Directories cannot be hard-linked, so each has exactly one parent (the root is its own). */
  parent: DirectoryNode
  name: string
}

/** @internal */
export interface LinkNode extends NodeBase {
  readonly _tag: "SymbolicLink"
  readonly target: string
  nlink: number
}

/** @internal */
export type Node = FileNode | DirectoryNode | LinkNode

/** A failure inside a synchronous tree operation; the Effect wrapper adds operation and path. */
class Failure {
  constructor(
    readonly reason: SandboxErrorReason,
    readonly detail?: string,
    readonly path?: string
  ) {}
}

const fail = (reason: SandboxErrorReason, detail?: string, path?: string): never => {
  throw new Failure(reason, detail, path)
}

/** Where a path led: the directory holding its last entry, that entry's name, and the entry. */
interface Resolved {
  readonly parent: DirectoryNode
  /** `undefined` when the path ends at a directory through `/`, `.` or `..`. */
  readonly name: string | undefined
  readonly node: Node | undefined
}

const encoder = new TextEncoder()

/** @internal */
export const toBytes = (data: string | Uint8Array): Uint8Array => typeof data === "string" ? encoder.encode(data) : data

/**
 * The tree. Paths given to it are absolute or relative to a base directory; `..` at the root
 * stays at the root.
 *
 * @internal
 */
export class MemoryTree {
  readonly root: DirectoryNode
  private nextIno = 1

  constructor(now: number) {
    const root = {
      _tag: "Directory",
      ino: this.nextIno++,
      mode: S_IFDIR | 0o755,
      uid: 0,
      gid: 0,
      atime: now,
      mtime: now,
      ctime: now,
      entries: new Map(),
      name: ""
    } as Omit<DirectoryNode, "parent"> as DirectoryNode
    root.parent = root
    this.root = root
  }

  // --- path resolution --------------------------------------------------------------------------

  /**
   * Walks `path` component by component as the kernel does: symlinks met on the way are expanded
   * in place (absolute targets restart at the root), `..` follows the physical parent. The last
   * component is followed only when `follow` is set or the path ends with `/`.
   */
  resolve(path: string, base: string, follow: boolean): Resolved {
    if (path === "") fail("NotFound", "empty path")
    if (path.includes("\0")) fail("InvalidArgument", "path contains a NUL byte")
    const full = path.startsWith("/") ? path : `${base}/${path}`
    const trailingSlash = full.length > 1 && full.endsWith("/")
    const followLast = follow || trailingSlash
    const stack = components(full).reverse()
    let current = this.root
    let hops = 0
    for (;;) {
      const name = stack.pop()
      if (name === undefined) return { parent: current.parent, name: undefined, node: current }
      if (name === ".") continue
      if (name === "..") {
        current = current.parent
        continue
      }
      if (name.length > NAME_MAX) fail("InvalidArgument", "file name too long")
      const isLast = stack.length === 0
      const child = current.entries.get(name)
      if (child === undefined) {
        if (isLast) return { parent: current, name, node: undefined }
        return fail("NotFound", "no such file or directory")
      }
      if (child._tag === "SymbolicLink" && (!isLast || followLast)) {
        if (++hops > MAX_SYMLINK_HOPS) fail("InvalidArgument", "too many levels of symbolic links")
        if (child.target.startsWith("/")) current = this.root
        stack.push(...components(child.target).reverse())
        continue
      }
      if (isLast) {
        if (trailingSlash && child._tag !== "Directory") fail("NotADirectory", "not a directory")
        return { parent: current, name, node: child }
      }
      if (child._tag !== "Directory") return fail("NotADirectory", "not a directory")
      current = child
    }
  }

  /** The canonical absolute path of a directory. */
  directoryPath(directory: DirectoryNode): string {
    const names: Array<string> = []
    for (let d = directory; d !== this.root; d = d.parent) names.push(d.name)
    return `/${names.reverse().join("/")}`
  }

  /** The canonical path of an existing directory, e.g. a process's working directory. */
  workingDirectory(path: string, base: string): string {
    const node = this.existing(path, base, true)
    if (node._tag !== "Directory") return fail("NotADirectory", "not a directory")
    return this.directoryPath(node)
  }

  private existing(path: string, base: string, follow: boolean): Node {
    const resolved = this.resolve(path, base, follow)
    if (resolved.node === undefined) return fail("NotFound", "no such file or directory")
    return resolved.node
  }

  // --- nodes ------------------------------------------------------------------------------------

  private newFile(mode: number, now: number): FileNode {
    return {
      _tag: "File",
      ino: this.nextIno++,
      mode: S_IFREG | (mode & 0o7777),
      uid: 0,
      gid: 0,
      atime: now,
      mtime: now,
      ctime: now,
      data: new Uint8Array(0),
      size: 0,
      nlink: 1
    }
  }

  private addEntry(parent: DirectoryNode, name: string, node: Node, now: number): void {
    parent.entries.set(name, node)
    if (node._tag === "Directory") {
      node.parent = parent
      node.name = name
    }
    parent.mtime = parent.ctime = now
  }

  private removeEntry(parent: DirectoryNode, name: string, now: number): void {
    const node = parent.entries.get(name)
    parent.entries.delete(name)
    parent.mtime = parent.ctime = now
    if (node !== undefined && node._tag !== "Directory") {
      node.nlink--
      node.ctime = now
    }
  }

  attributes(node: Node): Sandbox.FileAttributes {
    const common = { uid: node.uid, gid: node.gid, mode: node.mode, atime: node.atime, mtime: node.mtime }
    switch (node._tag) {
      case "File":
        return { type: "File", size: node.size, nlink: node.nlink, ...common }
      case "Directory": {
        let subdirectories = 0
        for (const child of node.entries.values()) if (child._tag === "Directory") subdirectories++
        return { type: "Directory", size: BLOCK_SIZE, nlink: 2 + subdirectories, ...common }
      }
      case "SymbolicLink":
        return { type: "SymbolicLink", size: encoder.encode(node.target).length, nlink: node.nlink, ...common }
    }
  }

  resizeFile(file: FileNode, size: number, now: number): void {
    if (!Number.isSafeInteger(size) || size < 0) fail("InvalidArgument", `invalid size ${size}`)
    if (size > MAX_FILE_SIZE) fail("InvalidArgument", "file too large")
    if (size < file.size) {
      file.data.fill(0, size, file.size)
    } else {
      ensureCapacity(file, size)
    }
    file.size = size
    file.mtime = file.ctime = now
  }

  writeFile(file: FileNode, offset: number, data: Uint8Array, now: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) fail("InvalidArgument", `invalid offset ${offset}`)
    const end = offset + data.length
    if (end > MAX_FILE_SIZE) fail("InvalidArgument", "file too large")
    // Bytes between the old end and `offset` are already zero (see FileNode.data).
    ensureCapacity(file, end)
    file.data.set(data, offset)
    if (end > file.size) file.size = end
    file.mtime = file.ctime = now
  }

  setAttributes(node: Node, attributes: Sandbox.SetAttributes, now: number): void {
    if (attributes.size !== undefined) {
      if (node._tag === "Directory") fail("IsADirectory", "is a directory")
      if (node._tag !== "File") fail("InvalidArgument", "not a regular file")
      this.resizeFile(node as FileNode, attributes.size, now)
    }
    if (attributes.mode !== undefined) node.mode = (node.mode & S_IFMT) | (attributes.mode & 0o7777)
    if (attributes.uid !== undefined) node.uid = attributes.uid
    if (attributes.gid !== undefined) node.gid = attributes.gid
    if (attributes.atime !== undefined) node.atime = attributes.atime
    if (attributes.mtime !== undefined) node.mtime = attributes.mtime
    node.ctime = now
  }

  // --- operations -------------------------------------------------------------------------------

  stat(path: string, base: string, follow: boolean): Sandbox.FileAttributes {
    return this.attributes(this.existing(path, base, follow))
  }

  openFile(path: string, base: string, flags: Sandbox.OpenFlags, mode: number | undefined, now: number): FileNode {
    const exclusive = flags.create === true && flags.exclusive === true
    // O_CREAT|O_EXCL never follows a final symlink: the link itself makes the path exist.
    const resolved = this.resolve(path, base, !exclusive)
    const node = resolved.node
    if (node === undefined) {
      if (flags.create !== true) return fail("NotFound", "no such file or directory")
      const file = this.newFile((mode ?? 0o666) & ~UMASK, now)
      this.addEntry(resolved.parent, resolved.name!, file, now)
      return file
    }
    if (exclusive) return fail("AlreadyExists", "file exists")
    if (node._tag === "Directory") return fail("IsADirectory", "is a directory")
    if (node._tag !== "File") return fail("InvalidArgument", "not a regular file")
    if (flags.truncate === true && (flags.write === true || flags.append === true)) this.resizeFile(node, 0, now)
    return node
  }

  readDirectory(path: string, base: string): Array<Sandbox.DirectoryEntry> {
    const node = this.existing(path, base, true)
    if (node._tag !== "Directory") return fail("NotADirectory", "not a directory")
    return Array.from(node.entries.keys()).sort().map((name) => ({
      name,
      attributes: this.attributes(node.entries.get(name)!)
    }))
  }

  makeDirectory(path: string, base: string, mode: number | undefined, now: number): DirectoryNode {
    const resolved = this.resolve(path, base, false)
    if (resolved.node !== undefined) return fail("AlreadyExists", "file exists")
    const directory = {
      _tag: "Directory",
      ino: this.nextIno++,
      mode: S_IFDIR | ((mode ?? 0o777) & ~UMASK & 0o7777),
      uid: 0,
      gid: 0,
      atime: now,
      mtime: now,
      ctime: now,
      entries: new Map(),
      parent: resolved.parent,
      name: resolved.name!
    } satisfies DirectoryNode
    this.addEntry(resolved.parent, resolved.name!, directory, now)
    return directory
  }

  removeDirectory(path: string, base: string, now: number): void {
    const { name, node, parent } = this.resolve(path, base, false)
    if (node === undefined) return fail("NotFound", "no such file or directory")
    if (node === this.root) return fail("InvalidArgument", "cannot remove the root directory")
    if (name === undefined) return fail("InvalidArgument", "path ends in . or ..")
    if (node._tag !== "Directory") return fail("NotADirectory", "not a directory")
    if (node.entries.size > 0) return fail("NotEmpty", "directory not empty")
    this.removeEntry(parent, name, now)
  }

  remove(path: string, base: string, now: number): void {
    const { name, node, parent } = this.resolve(path, base, false)
    if (node === undefined) return fail("NotFound", "no such file or directory")
    if (name === undefined || node._tag === "Directory") return fail("IsADirectory", "is a directory")
    this.removeEntry(parent, name, now)
  }

  rename(oldPath: string, newPath: string, base: string, overwrite: boolean, now: number): void {
    const from = this.resolve(oldPath, base, false)
    if (from.node === undefined) return fail("NotFound", "no such file or directory")
    if (from.name === undefined) return fail("InvalidArgument", "cannot rename / . or ..")
    let to: Resolved
    try {
      to = this.resolve(newPath, base, false)
    } catch (error) {
      if (error instanceof Failure) throw new Failure(error.reason, error.detail, newPath)
      throw error
    }
    if (to.name === undefined) return fail("InvalidArgument", "cannot rename onto / . or ..", newPath)
    // POSIX: renaming onto another link of the same file does nothing.
    if (to.node === from.node) return
    const moving = from.node
    if (moving._tag === "Directory") {
      for (let d = to.parent;; d = d.parent) {
        if (d === moving) return fail("InvalidArgument", "cannot move a directory into itself", newPath)
        if (d === this.root) break
      }
    }
    const existing = to.node
    if (existing !== undefined) {
      if (!overwrite) return fail("AlreadyExists", "file exists", newPath)
      if (moving._tag === "Directory") {
        if (existing._tag !== "Directory") return fail("NotADirectory", "not a directory", newPath)
        if (existing.entries.size > 0) return fail("NotEmpty", "directory not empty", newPath)
      } else if (existing._tag === "Directory") {
        return fail("IsADirectory", "is a directory", newPath)
      }
      this.removeEntry(to.parent, to.name, now)
    }
    from.parent.entries.delete(from.name)
    from.parent.mtime = from.parent.ctime = now
    this.addEntry(to.parent, to.name, moving, now)
    moving.ctime = now
  }

  realPath(path: string, base: string): string {
    const { name, node, parent } = this.resolve(path === "" ? "." : path, base, true)
    if (node !== undefined && node._tag === "Directory") return this.directoryPath(node)
    const directory = this.directoryPath(parent)
    return directory === "/" ? `/${name}` : `${directory}/${name}`
  }

  readLink(path: string, base: string): string {
    const node = this.existing(path, base, false)
    if (node._tag !== "SymbolicLink") return fail("InvalidArgument", "not a symbolic link")
    return node.target
  }

  symlink(target: string, linkPath: string, base: string, now: number): void {
    if (target === "") fail("InvalidArgument", "empty symlink target")
    if (target.includes("\0")) fail("InvalidArgument", "target contains a NUL byte")
    const resolved = this.resolve(linkPath, base, false)
    if (resolved.node !== undefined) return fail("AlreadyExists", "file exists")
    const link: LinkNode = {
      _tag: "SymbolicLink",
      ino: this.nextIno++,
      mode: S_IFLNK | 0o777,
      uid: 0,
      gid: 0,
      atime: now,
      mtime: now,
      ctime: now,
      target,
      nlink: 1
    }
    this.addEntry(resolved.parent, resolved.name!, link, now)
  }

  link(existingPath: string, newPath: string, base: string, now: number): void {
    // link(2) does not follow a final symlink: it hard-links the symlink itself.
    const node = this.existing(existingPath, base, false)
    if (node._tag === "Directory") return fail("PermissionDenied", "hard links to directories are not allowed")
    let resolved: Resolved
    try {
      resolved = this.resolve(newPath, base, false)
    } catch (error) {
      if (error instanceof Failure) throw new Failure(error.reason, error.detail, newPath)
      throw error
    }
    if (resolved.node !== undefined) return fail("AlreadyExists", "file exists", newPath)
    this.addEntry(resolved.parent, resolved.name!, node, now)
    node.nlink++
    node.ctime = now
  }

  setStat(path: string, base: string, attributes: Sandbox.SetAttributes, now: number): void {
    this.setAttributes(this.existing(path, base, true), attributes, now)
  }

  statFileSystem(path: string, base: string): Sandbox.FileSystemStats {
    this.existing(path, base, true)
    const seen = new Set<number>()
    let usedBlocks = 0
    const visit = (node: Node): void => {
      if (seen.has(node.ino)) return
      seen.add(node.ino)
      if (node._tag === "File") usedBlocks += Math.ceil(node.size / BLOCK_SIZE)
      if (node._tag === "Directory") {
        usedBlocks += 1
        for (const child of node.entries.values()) visit(child)
      }
    }
    visit(this.root)
    const blocksFree = Math.max(0, TOTAL_BLOCKS - usedBlocks)
    const filesFree = Math.max(0, TOTAL_INODES - seen.size)
    return {
      blockSize: BLOCK_SIZE,
      fragmentSize: BLOCK_SIZE,
      blocks: TOTAL_BLOCKS,
      blocksFree,
      blocksAvailable: blocksFree,
      files: TOTAL_INODES,
      filesFree,
      filesAvailable: filesFree,
      fsid: 0,
      flags: 0,
      nameMax: NAME_MAX
    }
  }

  /** `mkdir -p`; used to seed the tree. */
  makeDirectories(path: string, now: number, mode?: number): DirectoryNode {
    let current = this.root
    for (const name of components(path)) {
      if (name === "." || name === "..") {
        current = name === ".." ? current.parent : current
        continue
      }
      const child = current.entries.get(name)
      if (child === undefined) {
        current = this.makeDirectory(name, this.directoryPath(current), mode, now)
      } else if (child._tag === "Directory") {
        current = child
      } else {
        return fail("NotADirectory", "not a directory", path)
      }
    }
    return current
  }

  /** Creates or replaces a file with `content`, creating missing parents; used to seed the tree. */
  seedFile(path: string, content: Uint8Array, now: number): void {
    const index = path.lastIndexOf("/")
    this.makeDirectories(path.slice(0, index), now)
    const file = this.openFile(path, "/", { write: true, create: true, truncate: true }, 0o644, now)
    this.writeFile(file, 0, content, now)
  }
}

const components = (path: string): Array<string> => path.split("/").filter((name) => name !== "")

const ensureCapacity = (file: FileNode, size: number): void => {
  if (file.data.length >= size) return
  const data = new Uint8Array(Math.max(size, file.data.length * 2, 64))
  data.set(file.data.subarray(0, file.size))
  file.data = data
}

/** Runs a synchronous tree operation, turning a `Failure` into a `SandboxError`. */
const run = <A>(operation: string, path: string, f: (now: number) => A): Effect.Effect<A, SandboxError> =>
  Effect.flatMap(Clock.currentTimeMillis, (millis) => {
    try {
      return Effect.succeed(f(Math.floor(millis / 1000)))
    } catch (error) {
      if (error instanceof Failure) {
        return Effect.fail(
          new SandboxError({
            reason: error.reason,
            operation,
            path: error.path ?? path,
            ...(error.detail === undefined ? {} : { detail: error.detail })
          })
        )
      }
      throw error
    }
  })

/** Runs a synchronous tree operation outside of Effect (seeding); failures become `SandboxError`s. */
export const runSync = <A>(operation: string, path: string, f: () => A): A => {
  try {
    return f()
  } catch (error) {
    if (error instanceof Failure) {
      throw new SandboxError({
        reason: error.reason,
        operation,
        path: error.path ?? path,
        ...(error.detail === undefined ? {} : { detail: error.detail })
      })
    }
    throw error
  }
}

const openFile = (
  tree: MemoryTree,
  file: FileNode,
  path: string,
  flags: Sandbox.OpenFlags
): Sandbox.SandboxFile => {
  const readable = flags.read === true || (flags.write !== true && flags.append !== true)
  const writable = flags.write === true || flags.append === true
  let closed = false
  const guard = <A>(operation: string, f: (now: number) => A) =>
    run(operation, path, (now) => {
      if (closed) fail("Closed", "file handle is closed")
      return f(now)
    })
  return {
    read: (offset, length) =>
      guard("read", () => {
        if (!readable) fail("PermissionDenied", "file not opened for reading")
        if (!Number.isSafeInteger(offset) || offset < 0) fail("InvalidArgument", `invalid offset ${offset}`)
        if (!Number.isSafeInteger(length) || length < 0) fail("InvalidArgument", `invalid length ${length}`)
        if (offset >= file.size) return new Uint8Array(0)
        return file.data.slice(offset, Math.min(file.size, offset + length))
      }),
    write: (offset, data) =>
      guard("write", (now) => {
        if (!writable) fail("PermissionDenied", "file not opened for writing")
        tree.writeFile(file, flags.append === true ? file.size : offset, data, now)
      }),
    stat: guard("fstat", () => tree.attributes(file)),
    setStat: (attributes) => guard("fsetstat", (now) => tree.setAttributes(file, attributes, now)),
    sync: guard("fsync", () => undefined),
    // Closing twice is harmless, as the owner may close during its own cleanup.
    close: Effect.sync(() => {
      closed = true
    })
  }
}

/**
 * A `SandboxFileSystem` over `tree`, resolving relative paths against `base`.
 *
 * @internal
 */
export const makeFileSystem = (tree: MemoryTree, base: string): Sandbox.SandboxFileSystem => ({
  stat: (path) => run("stat", path, () => tree.stat(path, base, true)),
  lstat: (path) => run("lstat", path, () => tree.stat(path, base, false)),
  open: (path, flags, mode) =>
    run("open", path, (now) => openFile(tree, tree.openFile(path, base, flags, mode, now), path, flags)),
  readDirectory: (path) => run("readDirectory", path, () => tree.readDirectory(path, base)),
  makeDirectory: (path, mode) => run("makeDirectory", path, (now) => void tree.makeDirectory(path, base, mode, now)),
  removeDirectory: (path) => run("removeDirectory", path, (now) => tree.removeDirectory(path, base, now)),
  remove: (path) => run("remove", path, (now) => tree.remove(path, base, now)),
  rename: (oldPath, newPath, options) =>
    run("rename", oldPath, (now) => tree.rename(oldPath, newPath, base, options?.overwrite === true, now)),
  realPath: (path) => run("realPath", path, () => tree.realPath(path, base)),
  readLink: (path) => run("readLink", path, () => tree.readLink(path, base)),
  symlink: (target, linkPath) => run("symlink", linkPath, (now) => tree.symlink(target, linkPath, base, now)),
  link: (existingPath, newPath) => run("link", existingPath, (now) => tree.link(existingPath, newPath, base, now)),
  setStat: (path, attributes) => run("setStat", path, (now) => tree.setStat(path, base, attributes, now)),
  statFileSystem: (path) => run("statFileSystem", path, () => tree.statFileSystem(path, base))
})
