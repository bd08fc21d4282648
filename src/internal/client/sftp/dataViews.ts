/**
 * DATA replies handed over as views of the bytes they arrived in. ssh2's SFTP parser reassembles a
 * reply that spans channel packets (every 255 KiB one does) in a fresh buffer: a copy of every byte
 * read, and as many bytes again of garbage ArrayBuffers. Streams hand the views to their consumer;
 * whole-file reads copy them once into the result.
 *
 * `install` puts a reader in front of the parser (`push`, which ssh2's channel calls with each
 * CHANNEL_DATA payload) that follows the packet framing. A DATA reply to a request sent by
 * `readViews`, if it is well-formed and not longer than asked, does not reach ssh2: its bytes are
 * collected as views of the payloads that carried them, and the request is completed as ssh2's own
 * handler would (out of the table, then its callback). Everything else goes to ssh2 unchanged and
 * in order, as slices of what arrived. The payloads are views of packets decrypted in place in
 * buffers of their own (ssh2 allocates one per packet it receives or reassembles, and our in-process
 * pair passes each packet's own buffer), so nothing writes to them while a view is held: the only
 * reuse is of an in-process packet whose every reply was released by a consumer that copied it
 * (`Carrier`).
 *
 * ssh2's request table is not public: a request is taken over only if it looks as expected right
 * after it is sent (see `readViews`); otherwise ssh2 handles it, and its bytes are copied once.
 *
 * @internal
 */
import type * as ssh2 from "ssh2"
import * as PacketBuffers from "../../transport/packetBuffers.js"
import { internalsOf, type Ssh2Request } from "./ssh2Internals.js"

const FXP_DATA = 103
/** What decides a packet's fate: uint32 length, byte type, uint32 request id. */
const PREFIX = 9
/** A DATA reply's header: the prefix and the uint32 data length. */
const DATA_HEADER = 13
const EOF = 1

/**
 * `release`: the consumer has copied the views and keeps none of them, so the packets they lie in
 * may be reused (see `Carrier`). A consumer that keeps views (a stream's) never calls it.
 */
type Callback = (error: Error | undefined, views: ReadonlyArray<Buffer>, release: () => void) => void

const noRelease = () => {}

/**
 * A payload the reader took views of. On the in-process pair a payload lies in the sender's own
 * packet buffer. Once every reply holding views of it has been released and none of its bytes went
 * to ssh2 (whose parser keeps views: handles, names), the buffer goes back to the packet pool
 * (`PacketBuffers.giveBack`, which ignores buffers that are not its own, as every TCP read is).
 */
interface Carrier {
  readonly bytes: Buffer
  /** Replies holding views of it, not yet released. */
  holders: number
  /** Some of its bytes went to ssh2's parser. */
  shared: boolean
  /** Still being read through. */
  open: boolean
}

const settleCarrier = (carrier: Carrier) => {
  if (carrier.holders === 0 && !carrier.open && !carrier.shared) PacketBuffers.giveBack(carrier.bytes)
}

/** A request sent by `readViews`: what it asked for and where its bytes go. */
interface Wanted {
  readonly length: number
  readonly deliver: Callback
}

const wanted = new WeakMap<Ssh2Request, Wanted>()
const installed = new WeakSet<object>()
let intercepted = 0

/**
 * DATA replies the reader has handed over so far, in this process (for tests).
 *
 * @internal
 */
export const interceptedReplies = (): number => intercepted

interface Collecting {
  readonly id: number
  readonly request: Ssh2Request
  readonly wants: Wanted
  left: number
  readonly views: Array<Buffer>
  /** The payloads the views lie in, each once. */
  readonly carriers: Array<Carrier>
}

/**
 * Puts the reader in front of `sftp`'s parser; once per session, and only at a packet boundary
 * (which a session is at once it is ready). Returns whether it is in place.
 *
 * @internal
 */
export const install = (sftp: ssh2.SFTPWrapper): boolean => {
  const internals = internalsOf(sftp)
  if (installed.has(sftp)) return true
  if (
    typeof internals.push !== "function" || typeof internals._requests !== "object" ||
    internals._pktLenBytes !== 0 || internals._pktPos !== 0
  ) return false
  const parse = internals.push.bind(sftp)
  /** The start of a packet that arrived split: at most `DATA_HEADER` bytes. */
  const head = Buffer.alloc(DATA_HEADER)
  let headFill = 0
  /** Bytes of the current packet still to go to ssh2. */
  let forwardLeft = 0
  let collecting: Collecting | undefined = undefined

  /** The request a DATA reply of `dataLength` bytes is collected for, if any. */
  const taken = (id: number, packetLength: number, dataLength: number): Collecting | undefined => {
    if (packetLength !== PREFIX + dataLength) return undefined
    const request = internals._requests?.[id]
    const wants = request === undefined ? undefined : wanted.get(request)
    if (request === undefined || wants === undefined || dataLength > wants.length) return undefined
    return { id, request, wants, left: dataLength, views: [], carriers: [] }
  }

  const complete = (done: Collecting) => {
    const requests = internals._requests
    // gone from the table: ssh2 failed it meanwhile (the channel closed) and called back then
    if (requests?.[done.id] !== done.request) return
    delete requests[done.id]
    wanted.delete(done.request)
    intercepted++
    let released = false
    done.wants.deliver(undefined, done.views, () => {
      if (released) return
      released = true
      for (const carrier of done.carriers) {
        carrier.holders--
        settleCarrier(carrier)
      }
    })
  }

  const start = (found: Collecting) => {
    if (found.left === 0) return complete(found)
    collecting = found
  }

  internals.push = (data: Buffer | null): unknown => {
    if (data === null) return parse(null)
    let result: unknown = undefined
    const carrier: Carrier = { bytes: data, holders: 0, shared: false, open: true }
    const forward = (bytes: Buffer) => {
      if (bytes.length > 0 && parse(bytes) === false) result = false
    }
    const length = data.length
    let p = 0
    let runStart = -1
    while (p < length) {
      if (collecting !== undefined) {
        const n = Math.min(collecting.left, length - p)
        collecting.views.push(data.subarray(p, p + n))
        if (collecting.carriers[collecting.carriers.length - 1] !== carrier) {
          collecting.carriers.push(carrier)
          carrier.holders++
        }
        collecting.left -= n
        p += n
        if (collecting.left === 0) {
          const done = collecting
          collecting = undefined
          complete(done)
        }
        continue
      }
      if (forwardLeft > 0) {
        const n = Math.min(forwardLeft, length - p)
        if (runStart < 0) runStart = p
        forwardLeft -= n
        p += n
        continue
      }
      // a packet starts here, or its start is in `head`
      if (runStart >= 0) {
        carrier.shared = true
        forward(data.subarray(runStart, p))
        runStart = -1
      }
      if (headFill === 0 && length - p >= DATA_HEADER) {
        const packetLength = data.readUInt32BE(p)
        const found = data[p + 4] === FXP_DATA
          ? taken(data.readUInt32BE(p + 5), packetLength, data.readUInt32BE(p + PREFIX))
          : undefined
        if (found !== undefined) {
          p += DATA_HEADER
          start(found)
          continue
        }
        runStart = p
        forwardLeft = 4 + packetLength
        continue
      }
      // the start of a packet spread over chunks (or a packet shorter than a DATA header)
      const want = headFill >= PREFIX && head[4] === FXP_DATA ? DATA_HEADER : PREFIX
      const n = Math.min(want - headFill, length - p)
      data.copy(head, headFill, p, p + n)
      headFill += n
      p += n
      if (headFill < PREFIX) continue
      if (head[4] === FXP_DATA && headFill < DATA_HEADER) continue
      const packetLength = head.readUInt32BE(0)
      const found = head[4] === FXP_DATA
        ? taken(head.readUInt32BE(5), packetLength, head.readUInt32BE(PREFIX))
        : undefined
      const held = headFill
      headFill = 0
      if (found !== undefined) {
        start(found)
        continue
      }
      forward(Buffer.from(head.subarray(0, held)))
      forwardLeft = Math.max(0, 4 + packetLength - held)
    }
    if (runStart >= 0) {
      carrier.shared = true
      forward(data.subarray(runStart, p))
    }
    carrier.open = false
    settleCarrier(carrier)
    return result
  }
  installed.add(sftp)
  return true
}

/** Given to ssh2 only to pass its bounds check; a request that is taken over never writes to it. */
let placeholder = Buffer.alloc(0)

const isEof = (error: unknown) => (error as { code?: unknown } | undefined)?.code === EOF

/**
 * Sends READ for `length` bytes (at most the session's read length) at `position`; `callback` gets
 * the bytes as one or more views, fewer bytes at the end of the file and none past it, or ssh2's
 * error, and a `release` to call once the views are copied and dropped. Returns whether the
 * request was taken over.
 *
 * Taken over: its bytes come as views (through `install`'s reader, or as a view of the packet ssh2
 * reassembled when the reader is not in place). Not taken over (ssh2's request table looks
 * different): ssh2 copies the reply into the shared placeholder and calls back in the same turn,
 * where the bytes are copied out: slower, never wrong.
 *
 * @internal
 */
export const readViews = (
  sftp: ssh2.SFTPWrapper,
  handle: Buffer,
  position: number,
  length: number,
  callback: Callback
): boolean => {
  if (placeholder.length < length) placeholder = Buffer.alloc(length)
  const target = placeholder
  let settled = false
  const settle: Callback = (error, views, release) => {
    if (settled) return
    settled = true
    callback(error, views, release)
  }
  sftp.read(handle, target, 0, length, position, (error, bytes) => {
    // only for a request that was not taken over: its bytes were just copied into the shared
    // buffer, synchronously before this call, so they are still there
    if (error && !isEof(error)) return settle(error, [], noRelease)
    settle(undefined, error || bytes === 0 ? [] : [Buffer.from(target.subarray(0, bytes))], noRelease)
  })
  const internals = internalsOf(sftp)
  const id = internals._writeReqid
  const request = typeof id === "number" ? internals._requests?.[id] : undefined
  if (
    request === undefined || typeof request.cb !== "function" || !Buffer.isBuffer(request.buffer) ||
    request.buffer.buffer !== target.buffer
  ) return false
  // ssh2's DATA handler, without a buffer, calls back with a view of its reassembled packet
  request.buffer = undefined
  request.cb = (error: Error | undefined, data: unknown) => {
    if (error) return isEof(error) ? settle(undefined, [], noRelease) : settle(error, [], noRelease)
    if (!Buffer.isBuffer(data)) return settle(new Error("READ was answered without data"), [], noRelease)
    if (data.length > length) return settle(new Error("Received more data than requested"), [], noRelease)
    settle(undefined, data.length === 0 ? [] : [data], noRelease)
  }
  wanted.set(request, { length, deliver: settle })
  return true
}
