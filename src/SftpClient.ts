/**
 * An SFTP session over an `SshClient`: the reference's ten methods (`read`, `write`, `mkdir`,
 * `removeFile`, `removeDir`, `rename`, `realPath`, `readLink`, `symlink`, `close`) plus attributes,
 * directory listings, streaming transfers with backpressure, directory upload/download, and a
 * `FileSystem` layer so that code written against `@effect/platform` runs inside the sandbox.
 *
 * Sessions are scoped: `client.sftp()` needs a `Scope`, and closing it closes every handle the
 * session opened and ends the SFTP channel. Every failure is an `SftpError` whose `reason` is the
 * SFTP status (`NoSuchFile`, `PermissionDenied`, `Failure`, ...), with the `operation`, the `path`
 * and the server's message as `detail`. SFTP v3 has no status for "already exists", "not empty" or
 * "is a directory": servers report those as `Failure`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LocalSandbox, SandboxSsh } from "sandbox-ssh"
 *
 * const program = Effect.gen(function*() {
 *   const sandbox = yield* LocalSandbox.make()
 *   const client = yield* SandboxSsh.make(sandbox).openClient()
 *   const sftp = yield* client.sftp()
 *   yield* sftp.mkdir("/tmp/demo")
 *   yield* sftp.write("/tmp/demo/hello.txt", "hello\n")
 *   const bytes = yield* sftp.read("/tmp/demo/hello.txt")
 *   return new TextDecoder().decode(bytes)
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import type * as PlatformError from "@effect/platform/Error"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import * as internalFileSystem from "./internal/client/sftp/fileSystem.js"
import type { SftpError } from "./SshError.js"

/**
 * The type of a file, from the file-type bits of its mode.
 *
 * @since 0.1.0
 * @category models
 */
export type FileType =
  | "File"
  | "Directory"
  | "SymbolicLink"
  | "BlockDevice"
  | "CharacterDevice"
  | "FIFO"
  | "Socket"
  | "Unknown"

/**
 * Attributes of a file as the server reports them (SFTP v3 carries no nanoseconds, no inode and no
 * link count). Fields the server left out are `0` (`mode`, `uid`, `gid`, `size`) or the epoch.
 *
 * @since 0.1.0
 * @category models
 */
export interface FileInfo {
  readonly type: FileType
  readonly size: number
  /** `st_mode`: permission bits and file-type bits; `mode & 0o7777` are the permissions. */
  readonly mode: number
  readonly uid: number
  readonly gid: number
  readonly atime: Date
  readonly mtime: Date
}

/**
 * One entry of `readdir` (never `.` or `..`).
 *
 * @since 0.1.0
 * @category models
 */
export interface DirectoryEntry {
  readonly name: string
  /** The `ls -l` style line the server sent with the name. */
  readonly longname: string
  /** Attributes of the entry itself (a symbolic link is not followed). */
  readonly info: FileInfo
}

/**
 * Attributes to change with `setstat`; absent fields are left as they are. Times are `Date`s or
 * seconds since the epoch (SFTP v3 sends whole seconds).
 *
 * @since 0.1.0
 * @category models
 */
export interface SetAttributes {
  readonly size?: number | undefined
  /** SFTP sets `uid` and `gid` together: when one is given, the other keeps its value. */
  readonly uid?: number | undefined
  readonly gid?: number | undefined
  /** Permission bits. */
  readonly mode?: number | undefined
  /** SFTP sets `atime` and `mtime` together: when one is given, the other keeps its value. */
  readonly atime?: Date | number | undefined
  readonly mtime?: Date | number | undefined
}

/**
 * File-system statistics from `statvfs@openssh.com`.
 *
 * @since 0.1.0
 * @category models
 */
export interface FileSystemStats {
  readonly blockSize: number
  readonly fragmentSize: number
  readonly blocks: number
  readonly blocksFree: number
  readonly blocksAvailable: number
  readonly files: number
  readonly filesFree: number
  readonly filesAvailable: number
  readonly fsid: number
  readonly flags: number
  readonly nameMax: number
}

/**
 * How `writeSink` opens its file: `"w"` creates or truncates (the default), `"wx"` fails when the
 * file exists, `"a"` appends (creating the file), `"ax"` appends to a file that must not exist,
 * `"r+"` writes over an existing file from `offset` without truncating it.
 *
 * @since 0.1.0
 * @category models
 */
export type WriteFlag = "w" | "wx" | "a" | "ax" | "r+"

/**
 * How `open` opens a file, with the meaning of Node's flags: `"r"` read, `"r+"` read and write,
 * `"w"` write (create, truncate), `"w+"` read and write (create, truncate), `"a"` append (create),
 * `"a+"` read and append (create); an `x` fails when the file exists.
 *
 * @since 0.1.0
 * @category models
 */
export type OpenFlag = "r" | "r+" | "w" | "wx" | "w+" | "wx+" | "a" | "ax" | "a+" | "ax+"

/**
 * An open file handle of a session. It is closed when the scope of `open` closes, or by `close`.
 *
 * @since 0.1.0
 * @category models
 */
export interface SftpFile {
  readonly path: string
  /** Reads up to `length` bytes at `offset`; an empty array at end of file. */
  readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, SftpError>
  /** Writes all of `data` at `offset`. */
  readonly write: (offset: number, data: Uint8Array) => Effect.Effect<void, SftpError>
  readonly stat: Effect.Effect<FileInfo, SftpError>
  readonly setstat: (attributes: SetAttributes) => Effect.Effect<void, SftpError>
  /** `fsync@openssh.com`; `Unsupported` when the server lacks it. */
  readonly sync: Effect.Effect<void, SftpError>
  /** Closes the handle, reporting the server's status. Idempotent. */
  readonly close: Effect.Effect<void, SftpError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface WriteOptions {
  /** Permission bits of a file that gets created. Default `0o644` (minus the server's umask). */
  readonly mode?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ReadStreamOptions {
  /** Where to start reading. Default `0`. */
  readonly offset?: number | undefined
  /** Read at most this many bytes. Default: to the end of the file. */
  readonly length?: number | undefined
  /**
   * Bytes per request, and the most an emitted chunk holds (a reply is emitted as the pieces it
   * arrived in, without a copy). Default and maximum: the largest read the server accepts (its
   * `limits@openssh.com`, else ~31 KiB).
   */
  readonly chunkSize?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface WriteSinkOptions {
  /** Default `"w"`. */
  readonly flags?: WriteFlag | undefined
  /** Permission bits of a file that gets created. */
  readonly mode?: number | undefined
  /** With `"r+"`: the offset of the first byte written. Default `0`. */
  readonly offset?: number | undefined
}

/**
 * Progress of one file of an `upload` or `download`: `bytes` of `totalBytes` of `path` are done,
 * and `transferredBytes` of `expectedBytes` for the whole transfer. A report is made for each
 * chunk handed over (once for an empty file); reports are delivered one at a time, with
 * `transferredBytes` increasing.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransferProgress {
  /** The source path of the file (a local path for uploads, a remote path for downloads). */
  readonly path: string
  readonly bytes: number
  readonly totalBytes: number
  readonly transferredBytes: number
  readonly expectedBytes: number
}

/**
 * Options of `upload` and `download`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransferOptions {
  /** Files transferred at once. Default `4`. */
  readonly concurrency?: number | undefined
  /**
   * Called with each progress report, in order for a given file. It runs on the transfer's fiber:
   * a slow callback slows the transfer, a failing one is a defect.
   */
  readonly onProgress?: ((progress: TransferProgress) => Effect.Effect<void>) | undefined
}

/**
 * A summary of a finished `upload` or `download`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransferSummary {
  readonly files: number
  readonly directories: number
  readonly symlinks: number
  readonly bytes: number
}

/**
 * An SFTP session. Paths are as the sandbox sees them; relative paths resolve against the
 * directory the session started in (the sandbox's working directory).
 *
 * Whole-file `read` and `write` and the streams keep several requests in flight (up to 16 of the
 * server's largest request size), so a transfer runs at the speed of the connection rather than
 * of its round trips. Interrupting a transfer closes its file handle.
 *
 * @since 0.1.0
 * @category models
 */
export interface SftpClient {
  /** The extensions the server announced (`posix-rename@openssh.com` → `"1"`, ...). */
  readonly extensions: Readonly<Record<string, string>>
  /** The largest read and write request of this session, in bytes. */
  readonly limits: { readonly maxReadLength: number; readonly maxWriteLength: number }

  /** Reads a whole file into memory. */
  readonly read: (path: string) => Effect.Effect<Uint8Array, SftpError>
  /** Writes a whole file, creating it or truncating it first. Strings are written as UTF-8. */
  readonly write: (path: string, data: Uint8Array | string, options?: WriteOptions) => Effect.Effect<void, SftpError>
  /** Creates a directory (not its parents). Fails with `Failure` when it exists. */
  readonly mkdir: (path: string, options?: { readonly mode?: number | undefined }) => Effect.Effect<void, SftpError>
  /** Removes a file or symbolic link (never a directory). */
  readonly removeFile: (path: string) => Effect.Effect<void, SftpError>
  /** Removes an empty directory. Fails with `Failure` when it is not empty. */
  readonly removeDir: (path: string) => Effect.Effect<void, SftpError>
  /**
   * Renames a file or directory. As in SFTP v3 the rename fails (`Failure`) when `newPath` exists,
   * unless `overwrite` is set: then `posix-rename@openssh.com` replaces it atomically (`Unsupported`
   * when the server does not offer the extension).
   */
  readonly rename: (
    oldPath: string,
    newPath: string,
    options?: { readonly overwrite?: boolean | undefined }
  ) => Effect.Effect<void, SftpError>
  /** The canonical absolute form of `path` (`"."` gives the session's working directory). */
  readonly realPath: (path: string) => Effect.Effect<string, SftpError>
  /** The target of a symbolic link, as stored. */
  readonly readLink: (path: string) => Effect.Effect<string, SftpError>
  /** Creates a symbolic link at `linkPath` pointing to `target` (argument order of `ln -s`). */
  readonly symlink: (target: string, linkPath: string) => Effect.Effect<void, SftpError>
  /**
   * Closes the session: closes its open handles and ends the SFTP channel. Idempotent; later calls
   * fail with `SftpError("NoConnection")`. Closing the scope does the same.
   */
  readonly close: Effect.Effect<void>

  /** Attributes, following symbolic links. */
  readonly stat: (path: string) => Effect.Effect<FileInfo, SftpError>
  /** Attributes of the path itself (a symbolic link is not followed). */
  readonly lstat: (path: string) => Effect.Effect<FileInfo, SftpError>
  /** The entries of a directory, without `.` and `..`, in the server's order. */
  readonly readdir: (path: string) => Effect.Effect<ReadonlyArray<DirectoryEntry>, SftpError>
  /** Sets the permission bits. */
  readonly chmod: (path: string, mode: number) => Effect.Effect<void, SftpError>
  /** Changes attributes: size (truncate or extend), owner, permissions, times. */
  readonly setstat: (path: string, attributes: SetAttributes) => Effect.Effect<void, SftpError>
  /** Whether something exists at `path` (a dangling symbolic link counts). */
  readonly exists: (path: string) => Effect.Effect<boolean, SftpError>
  /** Writes `data` at `offset` of an existing file without truncating it. */
  readonly writeAt: (path: string, offset: number, data: Uint8Array | string) => Effect.Effect<void, SftpError>
  /** Creates a hard link; `Unsupported` when the server lacks `hardlink@openssh.com`. */
  readonly link: (existingPath: string, newPath: string) => Effect.Effect<void, SftpError>
  /** Opens a file handle for reads and writes at offsets. */
  readonly open: (path: string, flags?: OpenFlag, mode?: number) => Effect.Effect<SftpFile, SftpError, Scope.Scope>
  /** File-system statistics; `Unsupported` when the server lacks `statvfs@openssh.com`. */
  readonly statvfs: (path: string) => Effect.Effect<FileSystemStats, SftpError>

  /**
   * The bytes of a file as a stream of chunks, read ahead with several requests in flight
   * (bounded) and emitted in order. The handle closes when the stream ends or is interrupted.
   */
  readonly readStream: (path: string, options?: ReadStreamOptions) => Stream.Stream<Uint8Array, SftpError>
  /**
   * A sink that writes what it receives to a file, with several requests in flight: it pulls more
   * input only while fewer than the bound are unacknowledged. It completes once the server has
   * acknowledged every write and the close of the file.
   */
  readonly writeSink: (path: string, options?: WriteSinkOptions) => Sink.Sink<void, Uint8Array, never, SftpError>

  /**
   * Copies a local file or directory tree to `remotePath` (the name it gets, as `cp -r` with a new
   * name; an existing remote directory is merged into). Files keep their permission bits,
   * symbolic links are recreated as links, other special files are skipped. Local failures are
   * `PlatformError`s.
   *
   * Each regular file is written to a temporary sibling (`.<name>.sandbox-ssh-<hex>`, with the
   * final permission bits) and renamed onto its target only once every byte is acknowledged and
   * the file closed, so a failed or interrupted transfer never leaves a short file under the
   * target's name and an existing target keeps its old content; the temporary file is removed
   * (best effort: not when the connection is gone). The rename is atomic with
   * `posix-rename@openssh.com`; a server without it gets RENAME, and when the target exists,
   * remove-then-RENAME, which is not atomic (a reader may briefly find no file). Symbolic links
   * and directories are made in place. `write`, `writeSink` and `open` write in place.
   */
  readonly upload: (
    localPath: string,
    remotePath: string,
    options?: TransferOptions
  ) => Effect.Effect<TransferSummary, SftpError | PlatformError.PlatformError>
  /**
   * Copies a remote file or directory tree to `localPath`, as `upload` does the other way: each
   * file goes to a local temporary sibling and is renamed (atomically) onto its target when
   * complete; on failure or interruption the temporary file is removed and the target untouched.
   */
  readonly download: (
    remotePath: string,
    localPath: string,
    options?: TransferOptions
  ) => Effect.Effect<TransferSummary, SftpError | PlatformError.PlatformError>
}

/**
 * A `FileSystem` (from `@effect/platform`) over an SFTP session: Effect code written against
 * `FileSystem` reads and writes the sandbox unchanged. Errors are `SystemError`s with the reason
 * Node's file system would give (`NotFound`, `PermissionDenied`, `AlreadyExists`, ...) and the
 * `SftpError` as `cause`. `link` needs `hardlink@openssh.com`, `rename` replaces an existing
 * target (`posix-rename@openssh.com` when offered), `sync` needs `fsync@openssh.com` (else it
 * does nothing), `watch` is not supported; temporary files go to `/tmp` unless told otherwise.
 *
 * @example
 * ```ts
 * import { FileSystem } from "@effect/platform"
 * import { Effect } from "effect"
 * import { SftpClient } from "sandbox-ssh"
 *
 * const program = Effect.gen(function*() {
 *   const fs = yield* FileSystem.FileSystem
 *   yield* fs.writeFileString("/tmp/greeting", "hello")
 *   return yield* fs.readFileString("/tmp/greeting")
 * })
 *
 * // given `sftp: SftpClient.SftpClient` from `client.sftp()`
 * // program.pipe(Effect.provide(SftpClient.layerFileSystem(sftp)))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const fileSystem: (sftp: SftpClient) => FileSystem.FileSystem = internalFileSystem.make

/**
 * The `FileSystem` of `fileSystem(sftp)` as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem: (sftp: SftpClient) => Layer.Layer<FileSystem.FileSystem> = internalFileSystem.layer
