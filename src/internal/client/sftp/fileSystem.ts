/**
 * `@effect/platform`'s `FileSystem` over an `SftpClient`, with the semantics `NodeFileSystem`
 * users expect (Node's `fs` flags, recursive options, cursor-tracking `File`s, `SystemError`
 * reasons).
 *
 * @internal
 */
import { SystemError, type SystemErrorReason } from "@effect/platform/Error"
import type * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as Path from "node:path/posix"
import type { FileInfo, OpenFlag, SftpClient, SftpFile, WriteFlag } from "../../../SftpClient.js"
import type { SftpError } from "../../../SshError.js"
import { replaceRemote } from "./atomic.js"

const reasonOf = (error: SftpError): SystemErrorReason => {
  switch (error.reason) {
    case "NoSuchFile":
      return "NotFound"
    case "PermissionDenied":
      return "PermissionDenied"
    case "BadMessage":
      return "InvalidData"
    case "Eof":
      return "UnexpectedEof"
    default:
      return "Unknown"
  }
}

const systemError = (
  method: string,
  path: string | number,
  reason: SystemErrorReason,
  description: string,
  cause?: unknown
): PlatformError.PlatformError =>
  new SystemError({ reason, module: "FileSystem", method, pathOrDescriptor: path, description, cause })

/** An `SftpError` as the `SystemError` `NodeFileSystem` would give for the same failure. */
const toPlatform = (method: string, path: string | number) => (error: SftpError): PlatformError.PlatformError =>
  new SystemError({
    reason: reasonOf(error),
    module: "FileSystem",
    method,
    pathOrDescriptor: path,
    syscall: error.operation,
    description: error.message,
    cause: error
  })

const toInfo = (info: FileInfo): FileSystem.File.Info => ({
  type: info.type,
  mtime: Option.some(info.mtime),
  atime: Option.some(info.atime),
  birthtime: Option.none(),
  dev: 0,
  ino: Option.none(),
  mode: info.mode,
  nlink: Option.none(),
  uid: Option.some(info.uid),
  gid: Option.some(info.gid),
  rdev: Option.none(),
  size: FileSystem.Size(info.size),
  blksize: Option.none(),
  blocks: Option.none()
})

const writeFlagOf = (flag: FileSystem.OpenFlag | undefined): WriteFlag => {
  switch (flag) {
    case undefined:
    case "w":
    case "w+":
      return "w"
    case "wx":
    case "wx+":
      return "wx"
    case "a":
    case "a+":
      return "a"
    case "ax":
    case "ax+":
      return "ax"
    default:
      return "r+"
  }
}

const randomName = () => randomBytes(6).toString("base64url").slice(0, 6)

let nextDescriptor = 1_000

class SftpFileImpl implements FileSystem.File {
  readonly [FileSystem.FileTypeId]: FileSystem.FileTypeId = FileSystem.FileTypeId
  readonly fd: FileSystem.File.Descriptor = FileSystem.FileDescriptor(nextDescriptor++)
  private readonly semaphore = Effect.unsafeMakeSemaphore(1)
  private position = 0n

  constructor(private readonly file: SftpFile, private readonly append: boolean) {}

  private lift<A>(method: string, effect: Effect.Effect<A, SftpError>): Effect.Effect<A, PlatformError.PlatformError> {
    return Effect.mapError(effect, toPlatform(method, this.file.path))
  }

  get stat() {
    return this.lift("stat", Effect.map(this.file.stat, toInfo))
  }

  get sync() {
    return this.lift(
      "sync",
      Effect.catchIf(this.file.sync, (error) => error.reason === "Unsupported", () => Effect.void)
    )
  }

  seek(offset: FileSystem.SizeInput, from: FileSystem.SeekMode) {
    return this.semaphore.withPermits(1)(Effect.sync(() => {
      const size = FileSystem.Size(offset)
      this.position = from === "start" ? size : this.position + size
      // Typed `void`, but NodeFileSystem yields the new position and callers rely on it.
      return this.position
    }))
  }

  read(buffer: Uint8Array) {
    return this.semaphore.withPermits(1)(
      this.lift(
        "read",
        Effect.map(Effect.suspend(() => this.file.read(Number(this.position), buffer.length)), (data) => {
          buffer.set(data)
          this.position += BigInt(data.length)
          return FileSystem.Size(data.length)
        })
      )
    )
  }

  readAlloc(size: FileSystem.SizeInput) {
    return this.semaphore.withPermits(1)(
      this.lift(
        "readAlloc",
        Effect.map(Effect.suspend(() => this.file.read(Number(this.position), Number(size))), (data) => {
          if (data.length === 0) return Option.none<Uint8Array>()
          this.position += BigInt(data.length)
          return Option.some(data)
        })
      )
    )
  }

  truncate(length?: FileSystem.SizeInput) {
    return this.semaphore.withPermits(1)(
      this.lift(
        "truncate",
        Effect.map(this.file.setstat({ size: Number(length ?? 0) }), () => {
          if (!this.append) {
            const size = BigInt(length ?? 0)
            if (this.position > size) this.position = size
          }
        })
      )
    )
  }

  private writeChunk(method: string, buffer: Uint8Array) {
    // In append mode every write goes to the current end of file and the cursor stays for reads.
    const offset = this.append
      ? Effect.map(this.file.stat, (info) => info.size)
      : Effect.sync(() => Number(this.position))
    return this.lift(
      method,
      Effect.flatMap(offset, (at) =>
        Effect.map(this.file.write(at, buffer), () => {
          if (!this.append) this.position += BigInt(buffer.length)
          return FileSystem.Size(buffer.length)
        }))
    )
  }

  write(buffer: Uint8Array) {
    return this.semaphore.withPermits(1)(this.writeChunk("write", buffer))
  }

  writeAll(buffer: Uint8Array) {
    return this.semaphore.withPermits(1)(Effect.asVoid(this.writeChunk("writeAll", buffer)))
  }
}

/** @internal */
export const make = (sftp: SftpClient): FileSystem.FileSystem => {
  const lift = <A>(method: string, path: string, effect: Effect.Effect<A, SftpError>) =>
    Effect.mapError(effect, toPlatform(method, path))

  /** SFTP v3 reports "already exists" as a bare `Failure`: look before calling it that. */
  const failureMeansExists = (method: string, path: string) => (error: SftpError) =>
    error.reason === "Failure"
      ? Effect.flatMap(
        Effect.orElseSucceed(sftp.exists(path), () => false),
        (exists) =>
          Effect.fail(
            exists
              ? systemError(method, path, "AlreadyExists", `${path} already exists`, error)
              : toPlatform(method, path)(error)
          )
      )
      : Effect.fail(toPlatform(method, path)(error))

  const stat = (path: string) => lift("stat", path, Effect.map(sftp.stat(path), toInfo))

  const access: FileSystem.FileSystem["access"] = (path, options) =>
    Effect.gen(function*() {
      const info = yield* lift("access", path, sftp.stat(path))
      const check = (wanted: boolean | undefined, flag: OpenFlag, bits: number) => {
        if (wanted !== true) return Effect.void
        if (info.type === "Directory") {
          return (info.mode & bits) !== 0
            ? Effect.void
            : Effect.fail(systemError("access", path, "PermissionDenied", `${path} is not accessible`))
        }
        return lift("access", path, Effect.scoped(sftp.open(path, flag)))
      }
      yield* check(options?.readable, "r", 0o444)
      yield* check(options?.writable, "r+", 0o222)
    })

  const copyFile: FileSystem.FileSystem["copyFile"] = (fromPath, toPath) =>
    Effect.gen(function*() {
      const info = yield* lift("copyFile", fromPath, sftp.stat(fromPath))
      yield* lift(
        "copyFile",
        toPath,
        Stream.run(sftp.readStream(fromPath), sftp.writeSink(toPath, { mode: info.mode & 0o7777 }))
      )
      yield* lift("copyFile", toPath, sftp.chmod(toPath, info.mode & 0o7777))
    })

  const copy: FileSystem.FileSystem["copy"] = (fromPath, toPath, options) => {
    const overwrite = options?.overwrite ?? false
    const go = (from: string, to: string): Effect.Effect<void, PlatformError.PlatformError> =>
      Effect.gen(function*() {
        const info = yield* lift("copy", from, sftp.lstat(from))
        if (info.type === "Directory") {
          yield* makeDirectory(to, { recursive: true, mode: info.mode & 0o7777 })
          const entries = yield* lift("copy", from, sftp.readdir(from))
          yield* Effect.forEach(entries, (entry) => go(Path.join(from, entry.name), Path.join(to, entry.name)), {
            concurrency: 4,
            discard: true
          })
        } else {
          const exists = yield* lift("copy", to, sftp.exists(to))
          if (exists && !overwrite) return
          if (info.type === "SymbolicLink") {
            const target = yield* lift("copy", from, sftp.readLink(from))
            if (exists) yield* lift("copy", to, sftp.removeFile(to))
            yield* lift("copy", to, sftp.symlink(target, to))
            return
          }
          yield* copyFile(from, to)
        }
        if (options?.preserveTimestamps === true) {
          yield* lift("copy", to, sftp.setstat(to, { atime: info.atime, mtime: info.mtime }))
        }
      })
    return go(fromPath, toPath)
  }

  const makeDirectory: FileSystem.FileSystem["makeDirectory"] = (path, options) => {
    const mode = options?.mode ?? 0o777
    if (options?.recursive !== true) {
      return Effect.catchAll(sftp.mkdir(path, { mode }), failureMeansExists("makeDirectory", path))
    }
    const isDirectory = (p: string) =>
      Effect.map(Effect.option(sftp.stat(p)), (info) => Option.isSome(info) && info.value.type === "Directory")
    const go = (p: string): Effect.Effect<void, SftpError> =>
      sftp.mkdir(p, { mode }).pipe(
        Effect.catchAll((error) => {
          if (error.reason === "NoSuchFile" && Path.dirname(p) !== p) {
            return Effect.zipRight(go(Path.dirname(p)), go(p))
          }
          return Effect.flatMap(isDirectory(p), (ok) => ok ? Effect.void : Effect.fail(error))
        })
      )
    return Effect.catchAll(go(path), failureMeansExists("makeDirectory", path))
  }

  const makeTempDirectory: FileSystem.FileSystem["makeTempDirectory"] = (options) => {
    const directory = options?.directory ?? "/tmp"
    const prefix = options?.prefix ?? ""
    const attempt = (left: number): Effect.Effect<string, PlatformError.PlatformError> => {
      const path = Path.join(directory, `${prefix}${randomName()}`)
      return Effect.as(sftp.mkdir(path, { mode: 0o700 }), path).pipe(
        Effect.catchAll((error) =>
          error.reason === "Failure" && left > 0
            ? attempt(left - 1)
            : Effect.fail(toPlatform("makeTempDirectory", path)(error))
        )
      )
    }
    return attempt(8)
  }

  const removeQuietly = (method: string, path: string) =>
    remove(path, { recursive: true, force: true }).pipe(
      Effect.catchAllCause((cause) => Effect.logWarning(`${method}: could not remove ${path}`, cause))
    )

  const makeTempFile: FileSystem.FileSystem["makeTempFile"] = (options) =>
    Effect.gen(function*() {
      const directory = yield* makeTempDirectory({
        ...(options?.directory === undefined ? {} : { directory: options.directory }),
        ...(options?.prefix === undefined ? {} : { prefix: options.prefix })
      })
      const path = Path.join(directory, `${randomName()}${options?.suffix ?? ""}`)
      yield* lift("makeTempFile", path, sftp.write(path, new Uint8Array(0), { mode: 0o600 }))
      return path
    })

  const open: FileSystem.FileSystem["open"] = (path, options) => {
    const flag = options?.flag ?? "r"
    return sftp.open(path, flag, options?.mode).pipe(
      Effect.catchAll((error) =>
        flag.includes("x") ? failureMeansExists("open", path)(error) : Effect.fail(toPlatform("open", path)(error))
      ),
      Effect.map((file) => new SftpFileImpl(file, flag.startsWith("a")))
    )
  }

  const readDirectory: FileSystem.FileSystem["readDirectory"] = (path, options) => {
    const go = (relative: string): Effect.Effect<Array<string>, PlatformError.PlatformError> =>
      Effect.gen(function*() {
        const directory = relative === "" ? path : Path.join(path, relative)
        const entries = yield* lift("readDirectory", directory, sftp.readdir(directory))
        const names: Array<string> = []
        const subdirectories: Array<string> = []
        for (const entry of entries) {
          const name = relative === "" ? entry.name : Path.join(relative, entry.name)
          names.push(name)
          if (options?.recursive === true && entry.info.type === "Directory") subdirectories.push(name)
        }
        const nested = yield* Effect.forEach(subdirectories, go, { concurrency: 4 })
        return names.concat(...nested)
      })
    return go("")
  }

  const rename: FileSystem.FileSystem["rename"] = (oldPath, newPath) =>
    // Node's rename replaces the target, SFTP v3's does not: as upload's final step does
    lift("rename", oldPath, replaceRemote(sftp, oldPath, newPath))

  const remove: FileSystem.FileSystem["remove"] = (path, options) => {
    const tree = (p: string): Effect.Effect<void, SftpError> =>
      Effect.gen(function*() {
        const entries = yield* sftp.readdir(p)
        yield* Effect.forEach(entries, (entry) => {
          const child = Path.join(p, entry.name)
          return entry.info.type === "Directory" ? tree(child) : sftp.removeFile(child)
        }, { concurrency: 8, discard: true })
        yield* sftp.removeDir(p)
      })
    return Effect.gen(function*() {
      const info = yield* Effect.either(sftp.lstat(path))
      if (info._tag === "Left") {
        if (info.left.reason === "NoSuchFile" && options?.force === true) return
        return yield* Effect.fail(toPlatform("remove", path)(info.left))
      }
      if (info.right.type !== "Directory") return yield* lift("remove", path, sftp.removeFile(path))
      if (options?.recursive !== true) {
        return yield* Effect.fail(
          systemError("remove", path, "BadResource", `${path} is a directory (use { recursive: true })`)
        )
      }
      yield* lift("remove", path, tree(path))
    })
  }

  const symlink: FileSystem.FileSystem["symlink"] = (target, path) =>
    Effect.catchAll(sftp.symlink(target, path), failureMeansExists("symlink", path))

  const link: FileSystem.FileSystem["link"] = (existingPath, newPath) =>
    Effect.catchAll(sftp.link(existingPath, newPath), failureMeansExists("link", newPath))

  const writeFile: FileSystem.FileSystem["writeFile"] = (path, data, options) => {
    const flag = writeFlagOf(options?.flag)
    const write = flag === "w"
      ? sftp.write(path, data, { mode: options?.mode })
      : Stream.run(Stream.make(data), sftp.writeSink(path, { flags: flag, mode: options?.mode }))
    return Effect.catchAll(
      write,
      (error) =>
        flag.includes("x")
          ? failureMeansExists("writeFile", path)(error)
          : Effect.fail(toPlatform("writeFile", path)(error))
    )
  }

  const fileSystem = FileSystem.make({
    access,
    chmod: (path, mode) => lift("chmod", path, sftp.chmod(path, mode)),
    chown: (path, uid, gid) => lift("chown", path, sftp.setstat(path, { uid, gid })),
    copy,
    copyFile,
    link,
    makeDirectory,
    makeTempDirectory,
    makeTempDirectoryScoped: (options) =>
      Effect.acquireRelease(makeTempDirectory(options), (path) => removeQuietly("makeTempDirectoryScoped", path)),
    makeTempFile,
    makeTempFileScoped: (options) =>
      Effect.acquireRelease(
        makeTempFile(options),
        (path) => removeQuietly("makeTempFileScoped", Path.dirname(path))
      ),
    open,
    readDirectory,
    readFile: (path) => lift("readFile", path, sftp.read(path)),
    readLink: (path) => lift("readLink", path, sftp.readLink(path)),
    realPath: (path) => lift("realPath", path, sftp.realPath(path)),
    remove,
    rename,
    stat,
    symlink,
    truncate: (path, length) => lift("truncate", path, sftp.setstat(path, { size: Number(length ?? 0) })),
    utimes: (path, atime, mtime) => lift("utimes", path, sftp.setstat(path, { atime, mtime })),
    watch: (path) => Stream.fail(systemError("watch", path, "Unknown", "watching files is not supported over SFTP")),
    writeFile
  })

  // The derived stream and sink go through `open` one request at a time; these keep requests in
  // flight.
  return {
    ...fileSystem,
    stream: (path, options) =>
      sftp.readStream(path, {
        offset: options?.offset === undefined ? undefined : Number(options.offset),
        length: options?.bytesToRead === undefined ? undefined : Number(options.bytesToRead),
        chunkSize: options?.chunkSize === undefined ? undefined : Number(options.chunkSize)
      }).pipe(Stream.mapError(toPlatform("stream", path))),
    sink: (path, options) =>
      sftp.writeSink(path, { flags: writeFlagOf(options?.flag), mode: options?.mode }).pipe(
        Sink.mapError(toPlatform("sink", path))
      )
  }
}

/** @internal */
export const layer = (sftp: SftpClient): Layer.Layer<FileSystem.FileSystem> =>
  Layer.succeed(FileSystem.FileSystem, make(sftp))
