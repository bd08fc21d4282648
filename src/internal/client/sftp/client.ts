/**
 * `SftpClient` over one SFTP channel.
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type * as ssh2 from "ssh2"
import type {
  DirectoryEntry,
  FileInfo,
  OpenFlag,
  ReadStreamOptions,
  SetAttributes,
  SftpClient,
  SftpFile,
  WriteFlag,
  WriteSinkOptions
} from "../../../SftpClient.js"
import { SftpError, type SshError } from "../../../SshError.js"
import { FX, FXF } from "../../sftpProtocol.js"
import type { ClientState } from "../process.js"
import { needsCurrent, toFileInfo, toFileSystemStats, toSsh2Attributes } from "./attributes.js"
import { openSession, type Session } from "./session.js"
import { readInto, sinkHandle, streamHandle, writeFrom } from "./transfer.js"
import { download, upload } from "./tree.js"

const openFlags: Record<OpenFlag, number> = {
  "r": FXF.READ,
  "r+": FXF.READ | FXF.WRITE,
  "w": FXF.WRITE | FXF.CREAT | FXF.TRUNC,
  "wx": FXF.WRITE | FXF.CREAT | FXF.TRUNC | FXF.EXCL,
  "w+": FXF.READ | FXF.WRITE | FXF.CREAT | FXF.TRUNC,
  "wx+": FXF.READ | FXF.WRITE | FXF.CREAT | FXF.TRUNC | FXF.EXCL,
  "a": FXF.WRITE | FXF.CREAT | FXF.APPEND,
  "ax": FXF.WRITE | FXF.CREAT | FXF.APPEND | FXF.EXCL,
  "a+": FXF.READ | FXF.WRITE | FXF.CREAT | FXF.APPEND,
  "ax+": FXF.READ | FXF.WRITE | FXF.CREAT | FXF.APPEND | FXF.EXCL
}

// Appends are written at explicit offsets (the size when opened), so no APPEND flag: the bytes
// land in order even on a server that handles pipelined requests concurrently.
const writeFlags: Record<WriteFlag, number> = {
  "w": FXF.WRITE | FXF.CREAT | FXF.TRUNC,
  "wx": FXF.WRITE | FXF.CREAT | FXF.EXCL,
  "a": FXF.WRITE | FXF.CREAT,
  "ax": FXF.WRITE | FXF.CREAT | FXF.EXCL,
  "r+": FXF.WRITE
}

const bytesOf = (data: Uint8Array | string): Uint8Array => typeof data === "string" ? Buffer.from(data, "utf8") : data

const isEof = (error: unknown) =>
  typeof error === "object" && error !== null && (error as { code?: unknown }).code === FX.EOF

/**
 * Opens an SFTP session on the client's connection; closing the scope closes it.
 *
 * @internal
 */
export const openSftp = (state: ClientState): Effect.Effect<SftpClient, SshError, Scope.Scope> =>
  Effect.map(openSession(state), makeSftpClient).pipe(Effect.withSpan("SshClient.sftp"))

/** @internal */
export const makeSftpClient = (session: Session): SftpClient => {
  const { request, sftp } = session

  const fstat = (handle: Buffer, path: string) =>
    Effect.map(request<ssh2.Stats>("fstat", path, (cb) => sftp.fstat(handle, cb)), toFileInfo)

  const stat = (path: string) => Effect.map(request<ssh2.Stats>("stat", path, (cb) => sftp.stat(path, cb)), toFileInfo)

  const lstat = (path: string) =>
    Effect.map(request<ssh2.Stats>("lstat", path, (cb) => sftp.lstat(path, cb)), toFileInfo)

  const read = (path: string) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* session.openHandle(path, FXF.READ)
      const { size } = yield* fstat(handle, path)
      const head = Buffer.allocUnsafeSlow(size)
      const got = yield* readInto(session, handle, path, head, 0)
      if (got < size) return new Uint8Array(head.buffer, head.byteOffset, got)
      // The size was a hint: the file may have grown, or be a /proc-like file reporting 0. One
      // request finds out (usually end of file) before reading ahead with many.
      const probe = Buffer.allocUnsafe(session.maxReadLength)
      const more = yield* readInto(session, handle, path, probe, size)
      if (more === 0) return new Uint8Array(head.buffer, head.byteOffset, head.length)
      const tail = more < probe.length ? Chunk.empty<Uint8Array>() : yield* Stream.runCollect(
        streamHandle(session, handle, path, { offset: size + more, chunkSize: session.maxReadLength })
      )
      return new Uint8Array(Buffer.concat([head, probe.subarray(0, more), ...tail]))
    })).pipe(Effect.withSpan("SftpClient.read", { attributes: { path } }))

  const writeWith = (path: string, flags: number, data: Uint8Array, offset: number, mode?: number) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* session.openHandle(path, flags, mode)
      yield* writeFrom(session, handle, path, data, offset)
      // The status of CLOSE is part of the write (a server may report a failed flush there).
      yield* session.closeHandle(handle, path)
    }))

  const write: SftpClient["write"] = (path, data, options) =>
    writeWith(path, writeFlags.w, bytesOf(data), 0, options?.mode).pipe(
      Effect.withSpan("SftpClient.write", { attributes: { path } })
    )

  const writeAt: SftpClient["writeAt"] = (path, offset, data) => writeWith(path, FXF.WRITE, bytesOf(data), offset)

  const mkdir: SftpClient["mkdir"] = (path, options) =>
    request("mkdir", path, (cb) => sftp.mkdir(path, options?.mode === undefined ? {} : { mode: options.mode }, cb))

  const removeFile: SftpClient["removeFile"] = (path) => request("remove", path, (cb) => sftp.unlink(path, cb))

  const removeDir: SftpClient["removeDir"] = (path) => request("rmdir", path, (cb) => sftp.rmdir(path, cb))

  const rename: SftpClient["rename"] = (oldPath, newPath, options) =>
    options?.overwrite === true
      ? request("posix-rename", oldPath, (cb) => sftp.ext_openssh_rename(oldPath, newPath, cb))
      : request("rename", oldPath, (cb) => sftp.rename(oldPath, newPath, cb))

  const realPath: SftpClient["realPath"] = (path) => request<string>("realpath", path, (cb) => sftp.realpath(path, cb))

  const readLink: SftpClient["readLink"] = (path) => request<string>("readlink", path, (cb) => sftp.readlink(path, cb))

  // OpenSSH's sftp-server takes SYMLINK's arguments as (target, link), the reverse of the draft;
  // every server OpenSSH clients work with follows it, and ssh2 only uses that order when the
  // server's identification says OpenSSH. Send OpenSSH's order to every server.
  const symlink: SftpClient["symlink"] = (target, linkPath) =>
    request("symlink", linkPath, (cb) => {
      const openSshOrder = (sftp as unknown as { _isOpenSSH?: boolean })._isOpenSSH === true
      return openSshOrder ? sftp.symlink(target, linkPath, cb) : sftp.symlink(linkPath, target, cb)
    })

  const readdirHandle = (handle: Buffer, path: string) =>
    Effect.gen(function*() {
      const entries: Array<DirectoryEntry> = []
      while (true) {
        const batch = yield* Effect.async<ReadonlyArray<ssh2.FileEntry> | undefined, SftpError>((resume) => {
          if (session.gone() !== undefined) {
            return resume(Effect.fail(session.error(new Error("the SFTP channel is closed"), "readdir", path)))
          }
          sftp.readdir(handle, (error, list) => {
            if (error) {
              return resume(
                isEof(error) ? Effect.succeed(undefined) : Effect.fail(session.error(error, "readdir", path))
              )
            }
            resume(Effect.succeed(list))
          })
        })
        if (batch === undefined) return entries
        for (const entry of batch) {
          if (entry.filename === "." || entry.filename === "..") continue
          entries.push({ name: entry.filename, longname: entry.longname, info: toFileInfo(entry.attrs) })
        }
      }
    })

  const readdir: SftpClient["readdir"] = (path) =>
    Effect.scoped(Effect.flatMap(session.openDirectory(path), (handle) => readdirHandle(handle, path)))

  const setstatWith = (
    operation: string,
    path: string,
    attributes: SetAttributes,
    current: Effect.Effect<FileInfo, SftpError>,
    send: (attrs: ssh2.InputAttributes, cb: (error: Error | null | undefined) => void) => void
  ) =>
    Effect.gen(function*() {
      const now = needsCurrent(attributes) ? yield* current : undefined
      const attrs = toSsh2Attributes(attributes, now)
      yield* request(operation, path, (cb) => send(attrs, cb))
    })

  const setstat: SftpClient["setstat"] = (path, attributes) =>
    setstatWith("setstat", path, attributes, stat(path), (attrs, cb) => sftp.setstat(path, attrs, cb))

  const chmod: SftpClient["chmod"] = (path, mode) => setstat(path, { mode })

  const exists: SftpClient["exists"] = (path) =>
    lstat(path).pipe(
      Effect.as(true),
      Effect.catchIf((error) => error.reason === "NoSuchFile", () => Effect.succeed(false))
    )

  const statvfs: SftpClient["statvfs"] = (path) =>
    Effect.suspend(() =>
      session.extensions["statvfs@openssh.com"] === undefined
        ? Effect.fail(
          new SftpError({
            reason: "Unsupported",
            operation: "statvfs",
            path,
            detail: "the server does not offer statvfs@openssh.com"
          })
        )
        : Effect.map(
          request<Record<string, unknown>>("statvfs", path, (cb) => sftp.ext_openssh_statvfs(path, cb)),
          toFileSystemStats
        )
    )

  const link: SftpClient["link"] = (existingPath, newPath) =>
    request("hardlink", newPath, (cb) => sftp.ext_openssh_hardlink(existingPath, newPath, cb))

  const open: SftpClient["open"] = (path, flags = "r", mode) =>
    Effect.gen(function*() {
      const handle = yield* session.openHandle(path, openFlags[flags], mode)
      const file: SftpFile = {
        path,
        read: (offset, length) =>
          Effect.suspend(() => {
            if (length <= 0) return Effect.succeed(new Uint8Array(0))
            const buffer = Buffer.allocUnsafeSlow(length)
            return Effect.map(readInto(session, handle, path, buffer, offset), (got) => buffer.subarray(0, got))
          }),
        write: (offset, data) => writeFrom(session, handle, path, data, offset),
        stat: fstat(handle, path),
        setstat: (attributes) =>
          setstatWith(
            "fsetstat",
            path,
            attributes,
            fstat(handle, path),
            (attrs, cb) => sftp.fsetstat(handle, attrs, cb)
          ),
        sync: request("fsync", path, (cb) => sftp.ext_openssh_fsync(handle, cb)),
        close: session.closeHandle(handle, path)
      }
      return file
    })

  const readStream: SftpClient["readStream"] = (path, options: ReadStreamOptions = {}) =>
    Stream.unwrapScoped(Effect.gen(function*() {
      const handle = yield* session.openHandle(path, FXF.READ)
      const offset = Math.max(0, options.offset ?? 0)
      const chunkSize = Math.max(1, Math.min(options.chunkSize ?? session.maxReadLength, session.maxReadLength))
      return streamHandle(session, handle, path, {
        offset,
        end: options.length === undefined ? undefined : offset + Math.max(0, options.length),
        chunkSize
      })
    }))

  const writeSink: SftpClient["writeSink"] = (path, options: WriteSinkOptions = {}) =>
    Sink.unwrapScoped(Effect.gen(function*() {
      const flags = options.flags ?? "w"
      const handle = yield* session.openHandle(path, writeFlags[flags], options.mode)
      const offset = flags === "a" || flags === "ax"
        ? (yield* fstat(handle, path)).size
        : flags === "r+"
        ? Math.max(0, options.offset ?? 0)
        : 0
      return sinkHandle(session, handle, path, offset).pipe(
        Sink.mapEffect(() => session.closeHandle(handle, path))
      )
    }))

  const self: SftpClient = {
    extensions: session.extensions,
    limits: { maxReadLength: session.maxReadLength, maxWriteLength: session.maxWriteLength },
    read,
    write,
    mkdir,
    removeFile,
    removeDir,
    rename,
    realPath,
    readLink,
    symlink,
    close: session.close,
    stat,
    lstat,
    readdir,
    chmod,
    setstat,
    exists,
    writeAt,
    link,
    open,
    statvfs,
    readStream,
    writeSink,
    upload: (localPath, remotePath, options) => upload(self, localPath, remotePath, options),
    download: (remotePath, localPath, options) => download(self, remotePath, localPath, options)
  }
  return self
}
