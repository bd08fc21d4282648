/**
 * WRITE requests encoded in one reused buffer instead of a fresh one each.
 *
 * ssh2's `write` allocates a buffer per request and copies the data into it: 255 KiB per request,
 * the whole upload again in garbage ArrayBuffers. On a small heap V8 counts them against its
 * old-generation limit, and every in-process `writeSink` of 256 MiB had 8–11 full GCs
 * (`npm run bench`). ssh2 then copies the request into its SSH packets (`channelData`, which copies
 * before it returns); when the channel's window takes the whole request at once and nothing is
 * queued before it, that happens right away, so one buffer can serve every request.
 *
 * Here the request is encoded exactly as ssh2's `write` encodes it, registered in ssh2's request
 * table under the next id as ssh2 registers it (its STATUS handler then calls back the same way),
 * and handed to the channel in pieces of the peer's packet size, as ssh2 does. Anything else — a
 * window too small, requests queued, internals not as expected — goes through ssh2's own `write`.
 *
 * @internal
 */
import type * as ssh2 from "ssh2"
import { internalsOf } from "./ssh2Internals.js"

const REQUEST_WRITE = 6
/** ssh2's request ids wrap at this mask (`MAX_REQID`), with the same 32-bit arithmetic. */
const MAX_REQID = 2 ** 32 - 1

let scratch = Buffer.alloc(0)
let fromScratch = 0

/**
 * Requests sent from the reused buffer so far, in this process (for tests).
 *
 * @internal
 */
export const sentFromScratch = (): number => fromScratch

/**
 * Sends WRITE of `data[start, start + length)` at `position` on `handle`; `callback` once the server
 * answered (`error` from ssh2 as its `write` gives it). `length` is at most the session's write length.
 *
 * @internal
 */
export const write = (
  sftp: ssh2.SFTPWrapper,
  handle: Buffer,
  data: Buffer,
  start: number,
  length: number,
  position: number,
  callback: (error: Error | undefined) => void
): void => {
  const internals = internalsOf(sftp)
  const outgoing = internals.outgoing
  const requests = internals._requests
  const channelData = internals._protocol?.channelData
  const size = 4 + 1 + 4 + 4 + handle.length + 8 + 4 + length
  if (
    length === 0 || typeof internals._writeReqid !== "number" || typeof requests !== "object" ||
    requests === null || !Array.isArray(internals._buffer) || internals._buffer.length > 0 ||
    typeof internals._maxWriteLen !== "number" || length > internals._maxWriteLen ||
    typeof channelData !== "function" || outgoing === undefined || outgoing.state !== "open" ||
    typeof outgoing.id !== "number" || typeof outgoing.window !== "number" || outgoing.window < size ||
    typeof outgoing.packetSize !== "number" || outgoing.packetSize <= 0
  ) {
    return sftp.write(handle, data, start, length, position, (error) => callback(error ?? undefined))
  }
  if (scratch.length < size) scratch = Buffer.allocUnsafeSlow(size)
  const out = scratch
  // as ssh2's `write`: uint32 length, byte WRITE, uint32 id, string handle, uint64 offset, string data
  const id = internals._writeReqid = (internals._writeReqid + 1) & MAX_REQID
  out.writeUInt32BE(size - 4, 0)
  out[4] = REQUEST_WRITE
  out.writeUInt32BE(id >>> 0, 5)
  out.writeUInt32BE(handle.length, 9)
  handle.copy(out, 13)
  let p = 13 + handle.length
  out.writeUInt32BE(Math.floor(position / 0x1_0000_0000), p)
  out.writeUInt32BE(position >>> 0, p + 4)
  out.writeUInt32BE(length, p + 8)
  data.copy(out, p + 12, start, start + length)
  requests[id] = { cb: (error?: Error) => callback(error) }
  outgoing.window -= size
  const send = channelData as (this: unknown, channel: number, bytes: Buffer) => void
  for (p = 0; p < size; p += outgoing.packetSize) {
    send.call(internals._protocol, outgoing.id, out.subarray(p, Math.min(size, p + outgoing.packetSize)))
  }
  fromScratch++
}
