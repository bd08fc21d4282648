/**
 * Buffers for what the peer of a connection to our listener (TCP, or the daemon's Unix socket)
 * sends: during an upload its SSH packets land in 1 MiB slabs that are used again, rather than in
 * a fresh 64 KiB buffer per socket read plus ssh2's copy of every packet that straddles two reads.
 *
 * Why: V8 (Node 20) starts a full garbage collection once the ArrayBuffers allocated since the
 * last one pass a limit that is small when the heap is small, and an upload allocated the whole
 * transfer 1.5 times over (the reads, and the copies of straddling packets). A process in that
 * state did 14–22 full collections per 256 MiB uploaded by OpenSSH `sftp` and took 700–830 ms
 * instead of 360–450 (`scratchpad/sftp/getab.ts … put` after a forced GC); with slabs used again,
 * 2 collections and 380–465 ms.
 *
 * How:
 * - `adopt` takes over the accepted socket's handle with Node's `onread` option: each read lands
 *   at the end of the connection's current slab. (It moves Node's private `_handle` and `_server`
 *   to a new socket made with `pauseOnCreate`, as `net.Server`'s `pauseOnConnect` does; a Node
 *   whose handle lacks what this needs keeps the accepted socket as it is.) While reads are small
 *   (a terminal, the handshake) they land in one buffer shared by all connections and are copied
 *   out at once, so that an idle connection holds no slab; a read that fills it switches the
 *   connection to slabs, and a small read with nothing left over switches it back.
 * - ssh2 is fed up to the end of the last whole packet (`wholePackets.ts`): its decipher then
 *   decrypts every packet in place and copies none. The rest waits for the next read, which lands
 *   right after it; at the end of a slab it is copied to the start of the next one.
 * - What ssh2 makes of those bytes are views of the slab. A slab goes back to the pool only when
 *   none can be alive:
 *   - channel data (`CHANNEL_DATA`) is either lent (`lend`) and counted until `giveBack`, or
 *     copied out (`ownCopy`). Which one is the server's choice per channel
 *     (`server/channelInput.ts`): lent to the SFTP server, which copies each chunk out as it
 *     arrives; copied for any other channel (a process's stdin, a forwarded socket), which may keep
 *     it;
 *   - a slab that carried any other message (a key exchange keeps the peer's KEXINIT, user
 *     authentication its key) or was fed while ssh2's decipher was not one `wholePackets.ts`
 *     knows or ended inside a packet, is never used again: it is left to the garbage collector,
 *     as every read buffer was before. So is every slab of a socket `attach` was not called for.
 * The pool keeps at most `POOL_SLABS` slabs for the life of the process.
 *
 * @internal
 */
import * as Net from "node:net"
import type { Duplex } from "node:stream"
import { betweenPackets, canFrame, type Ssh2Decipher, wholeEnd } from "./wholePackets.js"

/** A slab's size. */
export const SLAB_BYTES = 1024 * 1024
/** The least room a read is given: below it, the rest of a slab is skipped for a new one. */
const MIN_READ = 64 * 1024
/** The shared buffer small reads land in; a read that fills it switches to slabs. */
const LANDING_BYTES = 64 * 1024
/** A read below this, with nothing left over, switches a connection back to the landing buffer. */
const SMALL_READ = 4 * 1024
/** Slabs kept for reuse, for all connections together. */
const POOL_SLABS = 8

/** SSH message numbers (RFC 4254) whose handling keeps no view of the packet once lent or copied. */
const CHANNEL_WINDOW_ADJUST = 93
const CHANNEL_DATA = 94

interface Slab {
  readonly buffer: Buffer
  /** Chunks lent to channels and not yet handed back, by identity. */
  readonly lent: Set<Uint8Array>
  /** Something may keep a view of it that is not counted: never used again. */
  pinned: boolean
  /** No longer the slab reads land in. */
  retired: boolean
  /** Back in the pool or dropped: this record is done with. */
  settled: boolean
}

const pool: Array<Buffer> = []
const owners = new WeakMap<ArrayBufferLike, Slab>()
const landing = Buffer.allocUnsafeSlow(LANDING_BYTES)
let reused = 0
let copied = 0

const take = (): Slab => {
  let buffer = pool.pop()
  if (buffer === undefined) buffer = Buffer.allocUnsafeSlow(SLAB_BYTES)
  else reused++
  const slab: Slab = { buffer, lent: new Set(), pinned: false, retired: false, settled: false }
  owners.set(buffer.buffer, slab)
  return slab
}

/** Back to the pool once retired, with nothing lent and nothing uncounted; once. */
const settle = (slab: Slab): void => {
  if (slab.settled || !slab.retired || slab.pinned || slab.lent.size > 0) return
  slab.settled = true
  owners.delete(slab.buffer.buffer)
  if (pool.length < POOL_SLABS) pool.push(slab.buffer)
}

/** ssh2's protocol object, as far as this module relies on it (checked before use). */
interface Ssh2Protocol {
  readonly _decipher?: Ssh2Decipher
}

/** The slab being fed to ssh2 right now (feeding is synchronous): what its payloads come from. */
let feeding: Slab | undefined = undefined
/** `_onPayload` wrappers installed on deciphers. */
const wrappers = new WeakSet<object>()

/** Pins the slab being fed when a payload other than channel data or a window adjustment comes out of it. */
const watch = (decipher: Ssh2Decipher): void => {
  if (wrappers.has(decipher._onPayload)) return
  const onPayload = decipher._onPayload
  const watched = (payload: Buffer) => {
    if (feeding !== undefined && payload[0] !== CHANNEL_DATA && payload[0] !== CHANNEL_WINDOW_ADJUST) {
      feeding.pinned = true
    }
    return onPayload(payload)
  }
  wrappers.add(watched)
  decipher._onPayload = watched
}

interface Reader {
  readonly socket: Net.Socket
  /** The ssh2 protocol parsing what it reads, once `attach`ed. */
  protocol: Ssh2Protocol | undefined
  /** The slab reads land in; undefined while they land in the shared buffer. */
  slab: Slab | undefined
  /** `slab.buffer[start, end)`: read, not yet fed (less than a packet: at most ssh2's 35,020 bytes). */
  start: number
  end: number
}

const readers = new WeakMap<object, Reader>()

const retire = (slab: Slab): void => {
  slab.retired = true
  settle(slab)
}

/** Hands `chunk` to ssh2 (the socket's "data" listeners), and pins its slab if anything of it may be kept uncounted. */
const feed = (reader: Reader, chunk: Buffer, slab: Slab | undefined): void => {
  const protocol = reader.protocol
  const decipher = protocol?._decipher
  if (slab !== undefined) {
    if (decipher !== undefined && canFrame(decipher)) watch(decipher)
    else slab.pinned = true
  }
  feeding = slab
  try {
    reader.socket.emit("data", chunk)
  } finally {
    feeding = undefined
  }
  if (slab === undefined) return
  // a new decipher (a key exchange ended in this chunk), or one left inside a packet
  const after = protocol?._decipher
  if (after !== decipher || !betweenPackets(after) || !wrappers.has(after!._onPayload)) slab.pinned = true
}

/**
 * Feeds the whole packets read into the slab so far, one run at a time until none is left (a run
 * ends where the decipher's state must be read again).
 *
 * A paused socket gets no reads (Node stops reading an `onread` socket on `pause`), and ssh2
 * pauses its socket only before it starts parsing: nothing waits here for a `resume`.
 */
const pump = (reader: Reader): void => {
  const slab = reader.slab!
  while (!reader.socket.destroyed) {
    const end = wholeEnd(reader.protocol?._decipher, slab.buffer, reader.start, reader.end)
    if (end === reader.start) return
    const chunk = slab.buffer.subarray(reader.start, end)
    reader.start = end
    feed(reader, chunk, slab)
  }
}

/** Where the next read lands. */
const nextBuffer = (reader: Reader): Buffer => {
  const slab = reader.slab
  if (slab === undefined) return landing
  if (SLAB_BYTES - reader.end < MIN_READ) {
    const rest = reader.end - reader.start
    const next = take()
    slab.buffer.copy(next.buffer, 0, reader.start, reader.end)
    retire(slab)
    reader.slab = next
    reader.start = 0
    reader.end = rest
    return next.buffer.subarray(rest)
  }
  return slab.buffer.subarray(reader.end)
}

const onRead = (reader: Reader, length: number): void => {
  const slab = reader.slab
  if (slab === undefined) {
    // a copy: the landing buffer is the next read's
    const chunk = Buffer.allocUnsafe(length)
    landing.copy(chunk, 0, 0, length)
    if (length === LANDING_BYTES) {
      reader.slab = take()
      reader.start = 0
      reader.end = 0
    }
    feed(reader, chunk, undefined)
    return
  }
  reader.end += length
  pump(reader)
  if (length < SMALL_READ && reader.start === reader.end && reader.slab === slab) {
    reader.slab = undefined
    retire(slab)
  }
}

/**
 * A socket on `accepted`'s connection whose reads land in slabs (see above), emitting "data" as
 * the socket it replaces did. `accepted` must come from a server made with `pauseOnConnect`; it is
 * not to be used afterwards. The new socket starts paused, as ssh2 expects of an injected one.
 *
 * @internal
 */
export const adopt = (accepted: Net.Socket): Net.Socket => {
  const internals = accepted as unknown as { _handle: unknown; _server: unknown }
  const handle = internals._handle as { readonly readStart?: unknown; readonly useUserBuffer?: unknown } | null
  // another Node's layout, or a connection already gone: the socket as it is (it reads as before)
  if (typeof handle?.readStart !== "function" || typeof handle.useUserBuffer !== "function") return accepted
  let reader: Reader | undefined = undefined
  const socket: Net.Socket = new Net.Socket({
    handle,
    pauseOnCreate: true,
    onread: {
      buffer: () => (reader === undefined ? landing : nextBuffer(reader)),
      callback: (length: number) => {
        onRead(reader!, length)
      }
    }
  } as Net.SocketConstructorOpts)
  reader = { socket, protocol: undefined, slab: undefined, start: 0, end: 0 }
  readers.set(socket, reader)
  // the listening server counts its connections by their sockets' "close"
  const adopted = socket as unknown as { _server: unknown }
  adopted._server = internals._server
  internals._server = null
  internals._handle = null
  socket.once("close", () => {
    if (reader.slab !== undefined) retire(reader.slab)
    reader.slab = undefined
  })
  return socket
}

/**
 * A `net.Server` whose connections `adopt` takes over before their first read (it accepts them
 * paused, as `adopt` needs); `onSocket` gets each adopted socket.
 *
 * @internal
 */
export const createServer = (onSocket: (socket: Net.Socket) => void): Net.Server =>
  Net.createServer({ pauseOnConnect: true }, (accepted) => onSocket(adopt(accepted)))

/**
 * Lets the slabs of `socket` (made by `adopt`; for any other socket this does nothing and returns
 * false) be used again once ssh2's `protocol` parses them. Until then every slab is pinned. The
 * caller must already route every `CHANNEL_DATA` through `lend` or `ownCopy`.
 *
 * @internal
 */
export const attach = (socket: Duplex, protocol: object): boolean => {
  const reader = readers.get(socket)
  if (reader === undefined) return false
  reader.protocol = protocol as Ssh2Protocol
  return true
}

/**
 * Counts `chunk` as lent to a reader that will hand it back with `giveBack` (the very object), if
 * it is a view of a slab; false for any other chunk.
 *
 * @internal
 */
export const lend = (chunk: Uint8Array): boolean => {
  const slab = owners.get(chunk.buffer)
  if (slab === undefined) return false
  slab.lent.add(chunk)
  return true
}

/**
 * `chunk` itself, or a copy of it if it is a view of a slab: for a reader that may keep it.
 *
 * @internal
 */
export const ownCopy = (chunk: Buffer): Buffer => {
  if (!owners.has(chunk.buffer)) return chunk
  copied += chunk.length
  return Buffer.from(chunk)
}

/**
 * Hands back a chunk of channel data lent by a slab (anything else is ignored), once nothing refers
 * to its bytes.
 *
 * @internal
 */
export const giveBack = (chunk: Uint8Array): void => {
  const slab = owners.get(chunk.buffer)
  if (slab === undefined || !slab.lent.delete(chunk)) return
  settle(slab)
}

/** Slabs taken from the pool, and bytes of channel data copied out of slabs, since the process started. @internal */
export const stats = (): { readonly pooled: number; readonly reused: number; readonly copied: number } => ({
  pooled: pool.length,
  reused,
  copied
})
