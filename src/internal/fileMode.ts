/**
 * POSIX `st_mode` file types, shared by every transport and the SFTP client.
 *
 * @internal
 */
import type { FileAttributes } from "../Sandbox.js"

/** The file type bits of `st_mode`. @internal */
export const S_IFMT = 0o170000

/** The file type that `st_mode` encodes. @internal */
export const fileTypeOf = (mode: number): FileAttributes["type"] => {
  switch (mode & S_IFMT) {
    case 0o100000:
      return "File"
    case 0o040000:
      return "Directory"
    case 0o120000:
      return "SymbolicLink"
    case 0o060000:
      return "BlockDevice"
    case 0o020000:
      return "CharacterDevice"
    case 0o010000:
      return "FIFO"
    case 0o140000:
      return "Socket"
    default:
      return "Unknown"
  }
}
