/**
 * Buffers for the SSH packets ssh2 sends, reused once a TCP socket has taken them, or once the
 * in-process receiver is done with them.
 *
 * ssh2 allocates every outgoing packet (`allocPacket`, which `padding.ts` provides for the AEAD
 * ciphers), encrypts it in place, hands it to `socket.write` and forgets it. For a download that is
 * a fresh 32 KiB buffer per packet: the whole transfer again in garbage ArrayBuffers, which V8
 * collects only after tens of MiB of them have piled up (the process grew by ~70 MiB per GiB sent,
 * all of it such buffers at the peak).
 *
 * Large packets (bulk channel data) come from a pool here. A packet goes back to the pool in two
 * ways, and never otherwise:
 * - from `socket.write` of a socket set up with `recycleOn`, when that write left nothing in the
 *   socket: Node then wrote it to the kernel synchronously and keeps no reference to it (a write
 *   that has to wait keeps the buffer until it is done, and counts in `writableLength`);
 * - from `giveBack`, by a receiver on the in-process pair, which gets the sender's very buffer
 *   (decrypted in place) and has copied everything out of it (the SFTP server's input).
 * Packets written anywhere else (a pipe of ours, a write that waited, in-process data nobody hands
 * back) are left to the garbage collector, as before.
 *
 * @internal
 */
import type * as Net from "node:net"

/** The largest packet: 32 KiB of channel data, its headers, padding and tag. */
const ITEM_BYTES = 33 * 1024
/** Smaller packets come from Node's shared 8 KiB pool, as `Buffer.allocUnsafe` gives them. */
const MIN_BYTES = 8 * 1024
/** Items kept: more than a 2 MiB channel window's worth of packets in flight. */
const MAX_POOLED = 80

const pool: Array<Buffer> = []
const items = new WeakSet<ArrayBufferLike>()
/** Items in `pool` now: one handed back twice must not be handed out twice. */
const pooled = new WeakSet<ArrayBufferLike>()
let reused = 0

/**
 * A packet buffer of `size` bytes, from the pool when it is a large one.
 *
 * @internal
 */
export const allocate = (size: number): Buffer => {
  if (size < MIN_BYTES || size > ITEM_BYTES) return Buffer.allocUnsafe(size)
  let item = pool.pop()
  if (item === undefined) {
    item = Buffer.allocUnsafeSlow(ITEM_BYTES)
    items.add(item.buffer)
  } else {
    pooled.delete(item.buffer)
    reused++
  }
  return item.subarray(0, size)
}

/**
 * Hands back the packet `bytes` lie in, if it is one of ours and not in the pool already, for a
 * holder that is done with it: a socket that wrote it (`recycleOn`), or on the in-process pair a
 * receiver that got the sender's very packet (decrypted in place), copied everything out of it and
 * keeps no view of it.
 *
 * @internal
 */
export const giveBack = (bytes: Uint8Array): void => {
  const buffer = bytes.buffer
  if (!items.has(buffer) || pooled.has(buffer) || pool.length >= MAX_POOLED) return
  pooled.add(buffer)
  pool.push(Buffer.from(buffer, 0, ITEM_BYTES))
}

const sockets = new WeakSet<Net.Socket>()

/**
 * Makes `socket` hand back the pooled packets it writes to the kernel at once. Idempotent.
 *
 * @internal
 */
export const recycleOn = (socket: Net.Socket): void => {
  if (sockets.has(socket)) return
  sockets.add(socket)
  const write = socket.write
  socket.write = function(this: Net.Socket, chunk: unknown, ...rest: Array<unknown>): boolean {
    const result = (write as (...args: Array<unknown>) => boolean).call(this, chunk, ...rest)
    // written to the kernel at once: Node keeps no reference to it
    if (Buffer.isBuffer(chunk) && this.writableLength === 0) giveBack(chunk)
    return result
  } as Net.Socket["write"]
}

/**
 * Items in the pool, and how many `allocate`s it served from the pool (for tests).
 *
 * @internal
 */
export const stats = (): { readonly pooled: number; readonly reused: number } => ({ pooled: pool.length, reused })
