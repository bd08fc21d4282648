/**
 * `upload` and `download` of a file or a directory tree between this host and the sandbox:
 * directories first (parents before children), then files with bounded parallelism, then symbolic
 * links. Each regular file is written to a temporary sibling and renamed onto its target once
 * complete (`atomic.ts`). Local failures are `@effect/platform` `SystemError`s, as
 * `NodeFileSystem` reports them.
 *
 * @internal
 */
import * as NodeSink from "@effect/platform-node/NodeSink"
import { SystemError, type SystemErrorReason } from "@effect/platform/Error"
import type * as PlatformError from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as NFS from "node:fs"
import * as FSP from "node:fs/promises"
import * as LocalPath from "node:path"
import * as PosixPath from "node:path/posix"
import type { SftpClient, TransferOptions, TransferProgress, TransferSummary } from "../../../SftpClient.js"
import type { SftpError } from "../../../SshError.js"
import * as ReadableStream from "../../readableStream.js"
import { replaceRemote, temporarySibling, viaTemporary } from "./atomic.js"

type TransferError = SftpError | PlatformError.PlatformError

const DEFAULT_CONCURRENCY = 4

const localReason = (code: unknown): SystemErrorReason => {
  switch (code) {
    case "ENOENT":
      return "NotFound"
    case "EACCES":
    case "EPERM":
      return "PermissionDenied"
    case "EEXIST":
      return "AlreadyExists"
    case "EISDIR":
    case "ENOTDIR":
    case "ELOOP":
      return "BadResource"
    case "EBUSY":
      return "Busy"
    default:
      return "Unknown"
  }
}

/** A local Node error as `NodeFileSystem` would report it. @internal */
export const localError = (method: string, path: string) => (cause: unknown): PlatformError.PlatformError => {
  const error = cause as NodeJS.ErrnoException
  return new SystemError({
    reason: localReason(error?.code),
    module: "FileSystem",
    method,
    pathOrDescriptor: path,
    ...(typeof error?.syscall === "string" ? { syscall: error.syscall } : {}),
    description: error instanceof Error ? error.message : String(cause),
    cause
  })
}

const local = <A>(method: string, path: string, f: () => Promise<A>): Effect.Effect<A, PlatformError.PlatformError> =>
  Effect.tryPromise({ try: f, catch: localError(method, path) })

interface Plan {
  /** Relative paths ("" is the root), parents before children. */
  readonly directories: Array<{ readonly relative: string; readonly mode: number }>
  readonly files: Array<{ readonly relative: string; readonly size: number; readonly mode: number }>
  readonly links: Array<{ readonly relative: string }>
}

const emptyPlan = (): Plan => ({ directories: [], files: [], links: [] })

const progressReporter = (options: TransferOptions | undefined, expectedBytes: number) => {
  let transferredBytes = 0
  const onProgress = options?.onProgress
  // One report at a time, counted when delivered: `transferredBytes` only grows across reports.
  const lock = Effect.unsafeMakeSemaphore(1)
  return (path: string, totalBytes: number) => {
    let bytes = 0
    return (delta: number): Effect.Effect<void> =>
      lock.withPermits(1)(Effect.suspend(() => {
        bytes += delta
        transferredBytes += delta
        if (onProgress === undefined) return Effect.void
        const report: TransferProgress = { path, bytes, totalBytes, transferredBytes, expectedBytes }
        return onProgress(report)
      }))
  }
}

const summaryOf = (plan: Plan): TransferSummary => ({
  files: plan.files.length,
  directories: plan.directories.length,
  symlinks: plan.links.length,
  bytes: plan.files.reduce((total, file) => total + file.size, 0)
})

const join = (base: string, relative: string, path: typeof PosixPath) =>
  relative === "" ? base : path.join(base, relative)

const planLocal = (root: string): Effect.Effect<Plan, PlatformError.PlatformError> =>
  Effect.gen(function*() {
    const plan = emptyPlan()
    const rootStat = yield* local("lstat", root, () => FSP.lstat(root))
    if (!rootStat.isDirectory()) {
      if (rootStat.isSymbolicLink()) plan.links.push({ relative: "" })
      else if (rootStat.isFile()) plan.files.push({ relative: "", size: rootStat.size, mode: rootStat.mode })
      else {
        return yield* Effect.fail(localError("upload", root)(Object.assign(new Error("not a regular file"), {})))
      }
      return plan
    }
    plan.directories.push({ relative: "", mode: rootStat.mode })
    const walk = (relative: string): Effect.Effect<void, PlatformError.PlatformError> =>
      Effect.gen(function*() {
        const directory = LocalPath.join(root, relative)
        const entries = yield* local("readDirectory", directory, () => FSP.readdir(directory))
        for (const name of entries.sort()) {
          const child = relative === "" ? name : PosixPath.join(relative, name)
          const path = LocalPath.join(root, child)
          const stat = yield* local("lstat", path, () => FSP.lstat(path))
          if (stat.isDirectory()) {
            plan.directories.push({ relative: child, mode: stat.mode })
            yield* walk(child)
          } else if (stat.isFile()) {
            plan.files.push({ relative: child, size: stat.size, mode: stat.mode })
          } else if (stat.isSymbolicLink()) {
            plan.links.push({ relative: child })
          }
        }
      })
    yield* walk("")
    return plan
  })

const planRemote = (sftp: SftpClient, root: string): Effect.Effect<Plan, SftpError> =>
  Effect.gen(function*() {
    const plan = emptyPlan()
    const rootInfo = yield* sftp.lstat(root)
    if (rootInfo.type !== "Directory") {
      if (rootInfo.type === "SymbolicLink") plan.links.push({ relative: "" })
      else plan.files.push({ relative: "", size: rootInfo.size, mode: rootInfo.mode })
      return plan
    }
    plan.directories.push({ relative: "", mode: rootInfo.mode })
    const walk = (relative: string): Effect.Effect<void, SftpError> =>
      Effect.gen(function*() {
        const entries = yield* sftp.readdir(join(root, relative, PosixPath))
        const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        for (const entry of sorted) {
          const child = relative === "" ? entry.name : PosixPath.join(relative, entry.name)
          if (entry.info.type === "Directory") {
            plan.directories.push({ relative: child, mode: entry.info.mode })
            yield* walk(child)
          } else if (entry.info.type === "File") {
            plan.files.push({ relative: child, size: entry.info.size, mode: entry.info.mode })
          } else if (entry.info.type === "SymbolicLink") {
            plan.links.push({ relative: child })
          }
        }
      })
    yield* walk("")
    return plan
  })

/** Makes a remote directory unless one is already there. */
const ensureRemoteDirectory = (sftp: SftpClient, path: string, mode: number) =>
  sftp.mkdir(path, { mode: mode & 0o7777 }).pipe(
    Effect.catchIf(
      (error) => error.reason === "Failure",
      (error) =>
        Effect.flatMap(
          Effect.orElseFail(sftp.stat(path), () => error),
          (info) => info.type === "Directory" ? Effect.void : Effect.fail(error)
        )
    )
  )

/**
 * Waits until a local write stream has closed its descriptor, destroying it first unless it
 * already ended: `NodeSink.fromWritable` ends it on success but leaves it open when interrupted.
 */
const closeWritable = (get: () => NFS.WriteStream | undefined): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const writable = get()
    if (writable === undefined || writable.closed) return resume(Effect.void)
    const onClose = () => resume(Effect.void)
    writable.once("close", onClose)
    if (!writable.writableFinished) writable.destroy()
    return Effect.sync(() => {
      writable.removeListener("close", onClose)
    })
  }).pipe(Effect.interruptible, Effect.timeoutOption("5 seconds"), Effect.asVoid)

/** @internal */
export const upload = (
  sftp: SftpClient,
  localPath: string,
  remotePath: string,
  options?: TransferOptions
): Effect.Effect<TransferSummary, TransferError> =>
  Effect.gen(function*() {
    const plan = yield* planLocal(localPath)
    const summary = summaryOf(plan)
    const reporter = progressReporter(options, summary.bytes)
    for (const directory of plan.directories) {
      yield* ensureRemoteDirectory(sftp, join(remotePath, directory.relative, PosixPath), directory.mode)
    }
    yield* Effect.forEach(plan.files, (file) => {
      const source = LocalPath.join(localPath, file.relative)
      const target = join(remotePath, file.relative, PosixPath)
      const mode = file.mode & 0o7777
      const report = reporter(source, file.size)
      return viaTemporary({
        temporary: () => temporarySibling(target, PosixPath),
        write: (temporary) =>
          ReadableStream.fromReadable<PlatformError.PlatformError>(
            () => NFS.createReadStream(source, { highWaterMark: sftp.limits.maxWriteLength }),
            localError("readFile", source)
          ).pipe(
            Stream.tap((chunk) => report(chunk.length)),
            // Completes once the server acknowledged every write and the close.
            Stream.run(sftp.writeSink(temporary, { mode, flags: "wx" })),
            Effect.zipRight(sftp.chmod(temporary, mode))
          ),
        replace: (temporary, keep) => replaceRemote(sftp, temporary, target, keep),
        remove: sftp.removeFile
      }).pipe(Effect.zipRight(file.size === 0 ? report(0) : Effect.void))
    }, { concurrency: options?.concurrency ?? DEFAULT_CONCURRENCY, discard: true })
    for (const link of plan.links) {
      const source = LocalPath.join(localPath, link.relative)
      const target = join(remotePath, link.relative, PosixPath)
      const destination = yield* local("readLink", source, () => FSP.readlink(source))
      yield* sftp.removeFile(target).pipe(Effect.catchIf((error) => error.reason === "NoSuchFile", () => Effect.void))
      yield* sftp.symlink(destination, target)
    }
    return summary
  }).pipe(Effect.withSpan("SftpClient.upload", { attributes: { localPath, remotePath } }))

/** @internal */
export const download = (
  sftp: SftpClient,
  remotePath: string,
  localPath: string,
  options?: TransferOptions
): Effect.Effect<TransferSummary, TransferError> =>
  Effect.gen(function*() {
    const plan = yield* planRemote(sftp, remotePath)
    const summary = summaryOf(plan)
    const reporter = progressReporter(options, summary.bytes)
    for (const directory of plan.directories) {
      const path = LocalPath.join(localPath, directory.relative)
      yield* local("makeDirectory", path, () => FSP.mkdir(path, { recursive: true, mode: directory.mode & 0o7777 }))
    }
    yield* Effect.forEach(plan.files, (file) => {
      const source = join(remotePath, file.relative, PosixPath)
      const target = LocalPath.join(localPath, file.relative)
      const mode = file.mode & 0o7777
      const report = reporter(source, file.size)
      return viaTemporary({
        temporary: () => temporarySibling(target, LocalPath),
        write: (temporary) => {
          let writable: NFS.WriteStream | undefined = undefined
          return sftp.readStream(source).pipe(
            Stream.tap((chunk) => report(chunk.length)),
            Stream.run(
              NodeSink.fromWritable<PlatformError.PlatformError, Uint8Array>(
                () => (writable = NFS.createWriteStream(temporary, { mode, flags: "wx" })),
                localError("writeFile", temporary)
              )
            ),
            Effect.ensuring(closeWritable(() => writable)),
            Effect.zipRight(local("chmod", temporary, () => FSP.chmod(temporary, mode)))
          )
        },
        replace: (temporary) => local("rename", target, () => FSP.rename(temporary, target)),
        remove: (temporary) => local("remove", temporary, () => FSP.rm(temporary, { force: true }))
      }).pipe(Effect.zipRight(file.size === 0 ? report(0) : Effect.void))
    }, { concurrency: options?.concurrency ?? DEFAULT_CONCURRENCY, discard: true })
    for (const link of plan.links) {
      const source = join(remotePath, link.relative, PosixPath)
      const target = LocalPath.join(localPath, link.relative)
      const destination = yield* sftp.readLink(source)
      yield* local("remove", target, () => FSP.rm(target, { force: true }))
      yield* local("symlink", target, () => FSP.symlink(destination, target))
    }
    return summary
  }).pipe(Effect.withSpan("SftpClient.download", { attributes: { remotePath, localPath } }))
