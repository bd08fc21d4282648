/**
 * READ without a copy. ssh2's `read` copies each reply into a buffer given up front, so a stream
 * paid for two buffers per reply: the packet ssh2 reassembled and its own. A request whose
 * `buffer` is taken away gets, from ssh2's `DATA` handler, a view on that packet instead: a buffer
 * nothing else refers to, handed to the caller as is. `readStream` went from ~500 to ~590 MiB/s
 * (`scratchpad/sftp/prof2.ts`, 256 MiB × 4, isolated sandbox).
 *
 * ssh2's request table is not public, so each request is looked up right after it is sent and
 * taken over only if it is the newest one and carries a view of the buffer given. If not, ssh2
 * copies the reply into that shared buffer and calls back in the same turn, where the bytes are
 * copied out: slower, never wrong.
 *
 * @internal
 */
import type * as ssh2 from "ssh2"

interface PendingRequest {
  buffer?: unknown
  cb?: unknown
}

interface Internals {
  readonly _writeReqid?: unknown
  readonly _requests?: Record<number, PendingRequest | undefined>
}

const EOF = 1

/** Given to ssh2 only to pass its bounds check; a request that is taken over never writes to it. */
let placeholder = Buffer.alloc(0)

const isEof = (error: unknown) => (error as { code?: unknown } | undefined)?.code === EOF

const empty = Buffer.alloc(0)

/**
 * Sends READ for `length` bytes (at most the session's read length) at `position`; `callback`
 * gets the bytes, fewer at the end of the file and none past it, or ssh2's error. Returns whether
 * the request was taken over (the bytes arrive without a copy).
 *
 * @internal
 */
export const readView = (
  sftp: ssh2.SFTPWrapper,
  handle: Buffer,
  position: number,
  length: number,
  callback: (error: Error | undefined, data: Buffer) => void
): boolean => {
  if (placeholder.length < length) placeholder = Buffer.alloc(length)
  const target = placeholder
  let settled = false
  sftp.read(handle, target, 0, length, position, (error, bytes) => {
    // Only for a request that was not taken over: ssh2 has just copied its bytes into the shared
    // buffer, synchronously before this call, so they are still there.
    if (settled) return
    settled = true
    if (error && !isEof(error)) return callback(error, empty)
    callback(undefined, Buffer.from(target.subarray(0, error ? 0 : bytes)))
  })
  const internals = sftp as unknown as Internals
  const id = internals._writeReqid
  const request = typeof id === "number" ? internals._requests?.[id] : undefined
  if (
    request === undefined || typeof request.cb !== "function" || !Buffer.isBuffer(request.buffer) ||
    request.buffer.buffer !== target.buffer
  ) return false
  request.buffer = undefined
  request.cb = (error: Error | undefined, data: unknown) => {
    if (settled) return
    settled = true
    if (error) return isEof(error) ? callback(undefined, empty) : callback(error, empty)
    if (!Buffer.isBuffer(data)) return callback(new Error("READ was answered without data"), empty)
    if (data.length > length) return callback(new Error("Received more data than requested"), empty)
    callback(undefined, data)
  }
  return true
}
