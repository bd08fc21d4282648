/**
 * SFTP version 3 numbers (draft-ietf-secsh-filexfer-02) and the OpenSSH extensions our server
 * offers (OpenSSH `PROTOCOL` §4), plus the limits it enforces; the client reads status codes and
 * open flags from here too.
 *
 * @internal
 */

/** Packet types. @internal */
export const FXP = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  DATA: 103,
  NAME: 104,
  ATTRS: 105,
  EXTENDED: 200,
  EXTENDED_REPLY: 201
} as const

/** Status codes. @internal */
export const FX = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8
} as const

/** @internal */
export type StatusCode = (typeof FX)[keyof typeof FX]

/** The messages OpenSSH's `sftp-server` sends with each status. @internal */
export const statusMessages: Record<StatusCode, string> = {
  0: "Success",
  1: "End of file",
  2: "No such file",
  3: "Permission denied",
  4: "Failure",
  5: "Bad message",
  6: "No connection",
  7: "Connection lost",
  8: "Operation unsupported"
}

/** `SSH_FXF_*` open flags. @internal */
export const FXF = {
  READ: 0x01,
  WRITE: 0x02,
  APPEND: 0x04,
  CREAT: 0x08,
  TRUNC: 0x10,
  EXCL: 0x20
} as const

/** `SSH_FILEXFER_ATTR_*` attribute flags. @internal */
export const ATTR = {
  SIZE: 0x01,
  UIDGID: 0x02,
  PERMISSIONS: 0x04,
  ACMODTIME: 0x08,
  EXTENDED: 0x80000000
} as const

/** `statvfs` `f_flag` bits as OpenSSH encodes them. @internal */
export const SSH2_FXE_STATVFS_ST_RDONLY = 0x1

/** @internal */
export const VERSION = 3

/**
 * Largest packet accepted or sent, length field excluded: OpenSSH's `SFTP_MAX_MSG_LENGTH`. A client
 * announcing a longer one is closed (as `sftp-server` does).
 *
 * @internal
 */
export const MAX_PACKET_LENGTH = 256 * 1024

/** Largest READ answered and WRITE expected, as OpenSSH: room for the headers in a packet. @internal */
export const MAX_DATA_LENGTH = MAX_PACKET_LENGTH - 1024

/**
 * Requests processed at once; the channel is not read while this many are in flight (the rest
 * wait in the transport, still outstanding for the client). OpenSSH's `sftp` keeps 64 out.
 * `sftp-server` itself takes one at a time. When this was chosen every request was a fiber (READ
 * and WRITE on files that offer callbacks no longer are, `fileCallbacks.ts`), and those that
 * waited long enough were promoted to V8's old generation, where they stayed until a full GC:
 * fewer at once held less. A cold 1 GiB `put` grew the process by 66–70 MiB with 64, 56–64 with
 * 32, 54–57 with 16 (`scratchpad/sftp/memcoldget.ts`, 3 A/B pairs), a `get` by 31–33 with 32 and
 * 25 with 16.
 * Speed (`scratchpad/sftp/getab.ts`, 32 vs 16): with OpenSSH's 255 KiB requests the same (put
 * 464–491 vs 420–481 MiB/s, get 412–468 vs 464–469); with 32 KiB ones (`-B 32768`) put ~7% slower
 * (437–451 vs 396–429), get no slower (249–253 vs 257–289).
 *
 * @internal
 */
export const DEFAULT_MAX_IN_FLIGHT = 16

/** Open file and directory handles per session. @internal */
export const DEFAULT_MAX_HANDLES = 1024

/** Entries per READDIR reply (as OpenSSH), and a size cap that keeps replies under the packet limit. @internal */
export const READDIR_BATCH = 100
/** @internal */
export const READDIR_MAX_BYTES = 128 * 1024

/** Extensions announced in VERSION, in OpenSSH's order, with their versions. @internal */
export const EXTENSIONS: ReadonlyArray<readonly [string, string]> = [
  ["posix-rename@openssh.com", "1"],
  ["statvfs@openssh.com", "2"],
  ["fstatvfs@openssh.com", "2"],
  ["hardlink@openssh.com", "1"],
  ["fsync@openssh.com", "1"],
  ["limits@openssh.com", "1"]
]
