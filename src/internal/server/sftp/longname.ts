/**
 * The `ls -l` line READDIR sends with each name, in the format of OpenSSH's `ls_file`
 * (`"%s %3u %-8s %-8s %8llu %s %s"`), which clients such as `sftp`'s `ls -l` print as is.
 *
 * @internal
 */
import type { FileAttributes } from "../../../Sandbox.js"
import { fullMode } from "./codec.js"

const typeChar = (mode: number): string => {
  switch (mode & 0o170000) {
    case 0o040000:
      return "d"
    case 0o120000:
      return "l"
    case 0o020000:
      return "c"
    case 0o060000:
      return "b"
    case 0o010000:
      return "p"
    case 0o140000:
      return "s"
    case 0o100000:
      return "-"
    default:
      return "?"
  }
}

const triplet = (mode: number, shift: number, special: number, specialChar: string): string => {
  const bits = (mode >> shift) & 7
  const execute = bits & 1
  const last = mode & special ? (execute ? specialChar : specialChar.toUpperCase()) : execute ? "x" : "-"
  return (bits & 4 ? "r" : "-") + (bits & 2 ? "w" : "-") + last
}

/** `strmode(3)` without the trailing space: `drwxr-xr-x`, `-rwsr-x--T`, ... @internal */
export const modeString = (mode: number): string =>
  typeChar(mode) +
  triplet(mode, 6, 0o4000, "s") +
  triplet(mode, 3, 0o2000, "s") +
  triplet(mode, 0, 0o1000, "t")

const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
const SIX_MONTHS = (365 * 24 * 60 * 60) / 2

/** `%b %e %H:%M` for recent times, `%b %e  %Y` otherwise, in the server's local time. @internal */
export const timeString = (mtime: number, now: number): string => {
  if (mtime === 0) return ""
  const date = new Date(mtime * 1000)
  const day = String(date.getDate()).padStart(2, " ")
  const recent = now - SIX_MONTHS < mtime && now >= mtime
  const tail = recent
    ? `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`
    : ` ${date.getFullYear()}`
  return `${months[date.getMonth()]} ${day} ${tail}`
}

/**
 * The owner column. The sandbox interface carries numeric ids only and the host's user database is
 * not the sandbox's, so names are shown for uid/gid 0 (root on every system) and numbers otherwise.
 */
const owner = (id: number): string => id === 0 ? "root" : String(id)

/** @internal */
export const longname = (name: string, attributes: FileAttributes, now: number): string => {
  const user = owner(attributes.uid).padEnd(8, " ")
  const group = owner(attributes.gid).padEnd(8, " ")
  const links = String(attributes.nlink ?? 1).padStart(3, " ")
  const size = String(attributes.size).padStart(8, " ")
  return `${modeString(fullMode(attributes))}  ${links} ${user} ${group} ${size} ${
    timeString(attributes.mtime, now)
  } ${name}`
}
