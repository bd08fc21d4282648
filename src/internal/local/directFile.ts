/**
 * Reads and writes of a file the in-sandbox agent opened, done by the host itself instead of
 * crossing the agent's socket: the host reopens the agent's descriptor through
 * `/proc/<agent>/fd/<n>` and does `pread`/`pwrite` on its own descriptor, in the threadpool.
 * Measured: every byte of an SFTP transfer through the agent was copied into and out of a Unix socket
 * (~1 s of host CPU per GiB written); this path does one `pread`/`pwritev` per batch of adjacent
 * requests (see `make`).
 *
 * Why it does not widen what the sandbox can reach:
 * - Opening `/proc/<pid>/fd/<n>` does not walk a path inside the sandbox: it reaches the very file
 *   (and mount) the agent has open, so `..`, symlinks and swap races play no part, and a read-only
 *   mount stays read-only (`EROFS`).
 * - The agent is sandbox-controlled (its uid is the sandbox's root, or the login user's): the fd
 *   number it reports is untrusted. The pid is the host's own knowledge, and after the reopen the
 *   kernel's `/proc/<pid>/fdinfo/<n>` must show that the agent holds that same inode (`ino`) with an
 *   access mode that covers ours and not `O_PATH` (an `O_PATH` descriptor needs no read or write
 *   permission). So the host only ever reads or writes a file the agent itself was allowed to
 *   open that way: the host's own credentials (root, which bypasses permission checks) grant
 *   nothing more.
 * - Regular files only (a FIFO or device could block a host thread); set-user-ID and set-group-ID
 *   files stay on the agent's path, so that a write clears those bits as it does for an
 *   unprivileged writer.
 * Anything that does not check out (including a `/proc` the host cannot read) leaves the file on
 * the agent's path, which is always correct.
 *
 * Only the data moves this way: stat, setstat (ownership and sizes as the sandbox sees them), fsync
 * (per inode, so it covers these writes) and close stay with the agent.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import type { SandboxError } from "../../SshError.js"
import type { FileCallbacks } from "../fileCallbacks.js"
import * as ReadBuffers from "../readBuffers.js"
import { fromNodeError } from "./errors.js"

const { O_APPEND, O_NOCTTY, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY } = Fs.constants
// Linux values, not in Node's constants
const O_ACCMODE = 0o3
const O_PATH = 0o10000000

/** What the agent's descriptor must allow for a host descriptor of access mode `mode`. */
const covers = (agentMode: number, mode: number): boolean => agentMode === O_RDWR || agentMode === mode

/** The `flags` and `ino` the kernel reports for `/proc/<pid>/fd/<fd>`, if readable. */
const fdInfo = (pid: number, fd: number): { readonly flags: number; readonly ino: string } | undefined => {
  let text: string
  try {
    text = Fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, "latin1")
  } catch {
    return undefined
  }
  const flags = /^flags:\s*([0-7]+)$/m.exec(text)?.[1]
  const ino = /^ino:\s*(\d+)$/m.exec(text)?.[1]
  return flags === undefined || ino === undefined ? undefined : { flags: parseInt(flags, 8), ino }
}

/**
 * The host's own descriptor for the agent's descriptor `fd` (a process of host pid `agentPid`),
 * opened for `openFlags`' access mode (and `O_APPEND`), or `undefined` when the checks above fail.
 *
 * @internal
 */
export const reopen = (agentPid: number, fd: number, openFlags: number): number | undefined => {
  if (!Number.isInteger(fd) || fd < 0) return undefined
  const mode = openFlags & O_ACCMODE
  if (mode !== O_RDONLY && mode !== O_WRONLY && mode !== O_RDWR) return undefined
  let own: number
  try {
    own = Fs.openSync(`/proc/${agentPid}/fd/${fd}`, mode | (openFlags & O_APPEND) | O_NONBLOCK | O_NOCTTY)
  } catch {
    return undefined
  }
  try {
    const stats = Fs.fstatSync(own, { bigint: true })
    const info = fdInfo(agentPid, fd)
    if (
      stats.isFile() && (stats.mode & 0o6000n) === 0n && info !== undefined && (info.flags & O_PATH) === 0 &&
      covers(info.flags & O_ACCMODE, mode) && info.ino === stats.ino.toString()
    ) {
      return own
    }
  } catch {
    // fall through: the agent's path
  }
  Fs.closeSync(own)
  return undefined
}

/**
 * Reads and writes on a reopened descriptor, in the threadpool, batched: requests for adjacent
 * ranges that wait while one call runs go out together as one `preadv`-like read or one `pwritev`
 * (up to 1 MiB). A threadpool call costs a thread wake-up on top of the copy (measured ~30 µs of
 * the event loop per call on 2 cores); OpenSSH's `sftp` with 32 KiB requests sends 32 of them for
 * each MiB, and they arrive together. One read and one write run at a time per file; ordering
 * between overlapping requests is the SFTP server's (requests on a handle wait for the overlapping
 * ones before them).
 *
 * Its close waits for the calls in flight and those queued: a descriptor number closed under a
 * pending `pwrite` could be reused by the next `open` of this process, and the write would land
 * in that file.
 *
 * @internal
 */
export interface DirectFile {
  readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, SandboxError>
  readonly write: (offset: number, data: Uint8Array) => Effect.Effect<void, SandboxError>
  /** `read` and `write` reporting by callback (`fileCallbacks.ts`). */
  readonly callbacks: FileCallbacks
  /** Closes the descriptor once no call is in flight. Idempotent, never fails. */
  readonly close: Effect.Effect<void>
  /** `close` for a caller that does not wait (the agent's client shutting down). */
  readonly dispose: () => void
}

/** The most one batched call moves (a batched read fills one lent slab), and the most requests it serves. */
const MAX_BATCH_BYTES = ReadBuffers.SLAB_BYTES
const MAX_BATCH_REQUESTS = 64

interface PendingRead {
  readonly offset: number
  readonly length: number
  readonly done: (error: SandboxError | undefined, data: Uint8Array) => void
}

interface PendingWrite {
  readonly offset: number
  readonly data: Uint8Array
  readonly done: (error: SandboxError | undefined) => void
}

const EMPTY = new Uint8Array(0)

/** How many requests from the head of `queue` cover one run of adjacent ranges, within the bounds. */
const adjacentRun = <A>(queue: ReadonlyArray<A>, offset: (a: A) => number, length: (a: A) => number): number => {
  let count = 1
  let bytes = length(queue[0]!)
  while (count < queue.length && count < MAX_BATCH_REQUESTS) {
    const previous = queue[count - 1]!
    const next = queue[count]!
    if (offset(next) !== offset(previous) + length(previous) || bytes + length(next) > MAX_BATCH_BYTES) break
    bytes += length(next)
    count++
  }
  return count
}

/** @internal */
export const make = (fd: number, path: string): DirectFile => {
  let busy = 0
  let closing = false
  let onIdle: (() => void) | undefined
  const release = () => {
    busy--
    if (busy === 0) onIdle?.()
  }
  const failure = (operation: string, code: string, message: string) =>
    fromNodeError(operation, path)(Object.assign(new Error(message), { code }))
  const closedError = (operation: string) => failure(operation, "EBADF", "the file is closed")
  const closeThen = (callback: () => void) => {
    if (closing) return callback()
    closing = true
    const done = () => Fs.close(fd, () => callback())
    if (busy === 0) done()
    else onIdle = done
  }

  const reads: Array<PendingRead> = []
  let reading = false
  const flushReads = (): void => {
    if (reading || reads.length === 0) return
    const run = reads.splice(0, adjacentRun(reads, (r) => r.offset, (r) => r.length))
    let total = 0
    for (const request of run) total += request.length
    // the bytes of a read usually go straight out (SFTP DATA) and come back (ReadBuffers.giveBack)
    const lent = total <= ReadBuffers.SLAB_BYTES ? ReadBuffers.reserve(total) : undefined
    const buffer = lent?.buffer ?? Buffer.allocUnsafe(total)
    reading = true
    // `reading` stays set while the requests are told: those they let in queue up and go out
    // together in the next call.
    Fs.read(fd, buffer, 0, total, run[0]!.offset, (error, bytesRead) => {
      let start = 0
      const failed = error ? fromNodeError("read", path)(error) : undefined
      for (const request of run) {
        release()
        if (failed !== undefined) {
          request.done(failed, EMPTY)
        } else {
          // a short read of a regular file is its end: what lies beyond reads as nothing
          const end = Math.min(start + request.length, Math.max(start, bytesRead))
          request.done(undefined, lent ? ReadBuffers.part(lent, start, end) : buffer.subarray(start, end))
        }
        start += request.length
      }
      if (lent) ReadBuffers.release(lent)
      reading = false
      flushReads()
    })
  }

  const writes: Array<PendingWrite> = []
  const finishWrite = (request: PendingWrite, error: SandboxError | undefined) => {
    release()
    request.done(error)
  }
  let writing = false
  const nextWrite = () => {
    writing = false
    flushWrites()
  }
  const flushWrites = (): void => {
    if (writing || writes.length === 0) return
    const run = writes.splice(0, adjacentRun(writes, (w) => w.offset, (w) => w.data.length))
    // `writing` stays set while the requests are told: those they let in (a caller answering one
    // sends the next) queue up and go out together in the next call.
    const onWritten = (error: NodeJS.ErrnoException | null, written: number) => {
      if (error) {
        const failed = fromNodeError("write", path)(error)
        for (const request of run) finishWrite(request, failed)
        return nextWrite()
      }
      // the requests written whole are done; the rest go back to the front of the queue
      let left = written
      let whole = 0
      while (whole < run.length && left >= run[whole]!.data.length) left -= run[whole++]!.data.length
      if (whole < run.length) {
        if (written === 0) {
          const failed = failure("write", "EIO", "the write made no progress")
          for (const request of run) finishWrite(request, failed)
          return nextWrite()
        }
        const partial = run[whole]!
        writes.unshift(
          { offset: partial.offset + left, data: partial.data.subarray(left), done: partial.done },
          ...run.slice(whole + 1)
        )
      }
      for (let i = 0; i < whole; i++) finishWrite(run[i]!, undefined)
      nextWrite()
    }
    writing = true
    if (run.length === 1) {
      const only = run[0]!
      Fs.write(fd, only.data, 0, only.data.length, only.offset, onWritten)
    } else {
      Fs.writev(fd, run.map((request) => request.data), run[0]!.offset, onWritten)
    }
  }

  const callbacks: FileCallbacks = {
    read: (offset, length, done) => {
      if (closing) return done(closedError("read"), EMPTY)
      busy++
      reads.push({ offset, length, done })
      flushReads()
    },
    write: (offset, data, done) => {
      if (closing) return done(closedError("write"))
      if (data.length === 0) return done(undefined)
      busy++
      writes.push({ offset, data, done })
      flushWrites()
    }
  }

  return {
    read: (offset, length) =>
      Effect.async((resume) =>
        callbacks.read(offset, length, (error, data) => resume(error ? Effect.fail(error) : Effect.succeed(data)))
      ),
    write: (offset, data) =>
      Effect.async((resume) =>
        callbacks.write(offset, data, (error) => resume(error ? Effect.fail(error) : Effect.void))
      ),
    callbacks,
    close: Effect.async((resume) => closeThen(() => resume(Effect.void))),
    dispose: () => closeThen(() => {})
  }
}
