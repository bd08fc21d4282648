/**
 * Buffers for file reads whose bytes are copied out soon after, lent and handed back: the SFTP
 * server's DATA replies, which ssh2 copies into its packets before it calls back.
 *
 * A fresh buffer per read was a third of what a download allocated (with ssh2's packets on each
 * side). V8 starts a full collection by the bytes of ArrayBuffers allocated since the last one, so
 * each of those megabytes brought the next full GC nearer, and the process grew by the garbage
 * waiting for it. Measured here (`scratchpad/sftp/memcoldget.ts`, a fresh process, OpenSSH `sftp
 * get` of 1 GiB from our listener): +68–69 MiB at 328–415 MiB/s before; +27–40 MiB at 561–585
 * MiB/s with this pool, the read gate of `server.ts` and `packetBuffers.ts` together.
 *
 * A read `reserve`s its bytes in the current slab (slabs are cut in turn, so 32 KiB reads share
 * one), cuts `part`s from them (one per request of a batched read) and `release`s its reservation.
 * Whoever receives a part hands it back with `giveBack` once nothing refers to its bytes. A slab
 * returns to the pool once it is full (another one is current) and every reservation and part of
 * it is back. A part that is never handed back (an error path, or a caller that keeps the bytes)
 * leaves its slab to the garbage collector, as before: only a hand-back makes bytes reusable, so a
 * caller that keeps them is never surprised.
 *
 * @internal
 */

/** A slab's size, and so the most one batched read of `directFile.ts` moves. */
export const SLAB_BYTES = 1024 * 1024

/**
 * Slabs kept for reuse. An SFTP session holds at most 4 MiB of replies (`OUTPUT_LIMIT`) plus 8
 * reads (`READS_AT_ONCE`), and a slab comes back only with its last part, so an OpenSSH `get` kept
 * 15–18 slabs busy; with 8 kept it still allocated ~50 per GiB, with 12 those 15–18. Past that the
 * pool allocates. It keeps them for the life of the process: 12 MiB at most.
 */
const POOL_SLABS = 12

interface Slab {
  readonly buffer: Buffer
  /** Reservations and parts not yet back. */
  outstanding: number
  /** No longer the current slab: nothing more is reserved in it. */
  full: boolean
}

/** @internal */
export interface Reservation {
  readonly slab: Slab
  /** The reserved bytes. */
  readonly buffer: Buffer
}

const pool: Array<Buffer> = []
const owners = new WeakMap<Uint8Array, Slab>()
let current: Slab | undefined = undefined
let used = 0
let reused = 0

const settle = (slab: Slab) => {
  if (slab.full && slab.outstanding === 0 && pool.length < POOL_SLABS) pool.push(slab.buffer)
}

/**
 * `size` bytes (at most `SLAB_BYTES`) in the current slab, or in a new one (from the pool when one
 * is free) when they do not fit.
 *
 * @internal
 */
export const reserve = (size: number): Reservation => {
  if (current === undefined || used + size > SLAB_BYTES) {
    if (current !== undefined) {
      current.full = true
      settle(current)
    }
    const buffer = pool.pop()
    if (buffer !== undefined) reused++
    current = { buffer: buffer ?? Buffer.allocUnsafeSlow(SLAB_BYTES), outstanding: 0, full: false }
    used = 0
  }
  const reservation = { slab: current, buffer: current.buffer.subarray(used, used + size) }
  used += size
  current.outstanding++
  return reservation
}

const empty = Buffer.alloc(0)

/**
 * The bytes `[start, end)` of a reservation as a buffer of their own identity, for `giveBack`. An
 * empty range (a read past the end of the file) is no part: nobody sends it, so nobody would hand
 * it back.
 *
 * @internal
 */
export const part = (reservation: Reservation, start: number, end: number): Buffer => {
  if (end <= start) return empty
  const bytes = reservation.buffer.subarray(start, end)
  reservation.slab.outstanding++
  owners.set(bytes, reservation.slab)
  return bytes
}

/**
 * The reader is done with its reservation (its parts are cut).
 *
 * @internal
 */
export const release = (reservation: Reservation): void => {
  reservation.slab.outstanding--
  settle(reservation.slab)
}

/**
 * Hands back a part once nothing refers to its bytes any more; anything else is ignored.
 *
 * @internal
 */
export const giveBack = (bytes: Uint8Array): void => {
  const slab = owners.get(bytes)
  if (slab === undefined) return
  owners.delete(bytes)
  slab.outstanding--
  settle(slab)
}

/**
 * Slabs in the pool, and how many times a new slab came from the pool rather than a fresh allocation
 * (for tests).
 *
 * @internal
 */
export const stats = (): { readonly pooled: number; readonly reused: number } => ({ pooled: pool.length, reused })
