/**
 * SFTP status codes and attributes, converted between ssh2's shapes and ours in one place.
 *
 * @internal
 */
import type * as ssh2 from "ssh2"
import type { FileInfo, FileSystemStats, FileType, SetAttributes } from "../../../SftpClient.js"
import { SftpError, type SftpErrorReason } from "../../../SshError.js"
import { fileTypeOf } from "../../fileMode.js"
import { FX } from "../../sftpProtocol.js"

const reasonOfStatus = (code: unknown): SftpErrorReason | undefined => {
  switch (code) {
    case FX.EOF:
      return "Eof"
    case FX.NO_SUCH_FILE:
      return "NoSuchFile"
    case FX.PERMISSION_DENIED:
      return "PermissionDenied"
    case FX.FAILURE:
      return "Failure"
    case FX.BAD_MESSAGE:
      return "BadMessage"
    case FX.NO_CONNECTION:
      return "NoConnection"
    case FX.CONNECTION_LOST:
      return "ConnectionLost"
    case FX.OP_UNSUPPORTED:
      return "Unsupported"
    default:
      return undefined
  }
}

/**
 * An ssh2 callback error as an `SftpError`. Errors without a status code come from ssh2 itself:
 * the channel ended with the request outstanding ("No response from server") or a reply was
 * malformed; `gone` tells which reason the session is in when the channel is gone.
 *
 * @internal
 */
export const fromSsh2Error = (
  error: unknown,
  operation: string,
  path: string | undefined,
  gone: () => SftpErrorReason | undefined
): SftpError => {
  const code = typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined
  const message = error instanceof Error ? error.message : String(error)
  // "No response from server": ssh2 failing the requests of a channel that ended.
  const reason = reasonOfStatus(code) ?? gone() ??
    (message === "No response from server" ? "ConnectionLost" : "BadMessage")
  return new SftpError({ reason, operation, path, detail: message, cause: error })
}

/** @internal */
export const fileType: (mode: number) => FileType = fileTypeOf

const num = (value: unknown): number => (typeof value === "number" && Number.isFinite(value) ? value : 0)

/** @internal */
export const toFileInfo = (attrs: Partial<ssh2.Attributes>): FileInfo => {
  const mode = num(attrs.mode)
  return {
    type: fileType(mode),
    size: num(attrs.size),
    mode,
    uid: num(attrs.uid),
    gid: num(attrs.gid),
    atime: new Date(num(attrs.atime) * 1000),
    mtime: new Date(num(attrs.mtime) * 1000)
  }
}

const seconds = (time: Date | number): number =>
  typeof time === "number" ? Math.floor(time) : Math.floor(time.getTime() / 1000)

/**
 * Our attributes as ssh2's. SFTP carries uid with gid and atime with mtime: a half pair is
 * completed from `current` (the caller stats first when `needsCurrent` says so).
 *
 * @internal
 */
export const toSsh2Attributes = (attributes: SetAttributes, current?: FileInfo): ssh2.InputAttributes => {
  const out: ssh2.InputAttributes = {}
  if (attributes.size !== undefined) out.size = attributes.size
  if (attributes.mode !== undefined) out.mode = attributes.mode & 0o7777
  if (attributes.uid !== undefined || attributes.gid !== undefined) {
    out.uid = attributes.uid ?? current?.uid ?? 0
    out.gid = attributes.gid ?? current?.gid ?? 0
  }
  if (attributes.atime !== undefined || attributes.mtime !== undefined) {
    out.atime = seconds(attributes.atime ?? current?.atime ?? new Date())
    out.mtime = seconds(attributes.mtime ?? current?.mtime ?? new Date())
  }
  return out
}

/** @internal */
export const needsCurrent = (attributes: SetAttributes): boolean =>
  (attributes.uid === undefined) !== (attributes.gid === undefined) ||
  (attributes.atime === undefined) !== (attributes.mtime === undefined)

/** @internal */
export const toFileSystemStats = (stats: Record<string, unknown>): FileSystemStats => ({
  blockSize: num(Number(stats.f_bsize)),
  fragmentSize: num(Number(stats.f_frsize)),
  blocks: num(Number(stats.f_blocks)),
  blocksFree: num(Number(stats.f_bfree)),
  blocksAvailable: num(Number(stats.f_bavail)),
  files: num(Number(stats.f_files)),
  filesFree: num(Number(stats.f_ffree)),
  filesAvailable: num(Number(stats.f_favail)),
  fsid: num(Number(stats.f_sid)),
  flags: num(Number(stats.f_flag)),
  nameMax: num(Number(stats.f_namemax))
})
