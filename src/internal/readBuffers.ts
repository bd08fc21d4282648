/**
 * Buffers for file reads whose bytes are copied out soon after, lent and handed back: the SFTP
 * server's DATA replies, which ssh2 copies into its packets before it calls back.
 *
 * A fresh buffer per read was a third of what a download allocated (with ssh2's packets on each
 * side). V8 starts a full collection by the bytes of ArrayBuffers allocated since the last one,
 * so each of those megabytes brought the next full GC nearer. Measured here: 85 full GCs per GiB
 * of `readStream` before, 65–74 with the pool; OpenSSH `sftp get` from our listener 243, 244 and
 * 252 MiB/s against 225, 223 and 218 without it, in alternating runs
 * (`scratchpad/sftp/memget.ts`). `readStream` itself and the memory figures did not move beyond
 * the noise.
 *
 * A reader takes a slab, cuts it into `part`s (one per request of a batched read) and `seal`s it.
 * Whoever receives a part hands it back with `giveBack` once nothing refers to its bytes; the slab
 * returns to the pool when every part of it is back. A part that is never handed back (an error
 * path, or a caller that keeps the bytes) leaves its slab to the garbage collector, as before:
 * only a hand-back makes bytes reusable, so a caller that keeps them is never surprised.
 *
 * @internal
 */

/** A slab's size: the largest batched read (`directFile.ts`). */
export const SLAB_BYTES = 1024 * 1024

/**
 * Slabs kept for reuse. An SFTP session holds at most 4 MiB of replies (`OUTPUT_LIMIT`) plus the
 * reads being done, so 8 cover one transfer at full speed; past that the pool allocates. The
 * pool keeps them for the life of the process: 8 MiB at most.
 */
const POOL_SLABS = 8

/** @internal */
export interface Slab {
  readonly buffer: Buffer
  /** Parts handed out and not yet back. */
  outstanding: number
  sealed: boolean
}

const pool: Array<Buffer> = []
const owners = new WeakMap<Uint8Array, Slab>()
let reused = 0

/**
 * A slab of `SLAB_BYTES`, from the pool when one is free.
 *
 * @internal
 */
export const take = (): Slab => {
  const buffer = pool.pop()
  if (buffer !== undefined) reused++
  return { buffer: buffer ?? Buffer.allocUnsafeSlow(SLAB_BYTES), outstanding: 0, sealed: false }
}

const settle = (slab: Slab) => {
  if (slab.sealed && slab.outstanding === 0 && pool.length < POOL_SLABS) pool.push(slab.buffer)
}

const empty = Buffer.alloc(0)

/**
 * The bytes `[start, end)` of `slab` as a buffer of their own identity, for `giveBack`. An empty
 * range (a read past the end of the file) is no part: nobody sends it, so nobody would hand it back.
 *
 * @internal
 */
export const part = (slab: Slab, start: number, end: number): Buffer => {
  if (end <= start) return empty
  const bytes = slab.buffer.subarray(start, end)
  slab.outstanding++
  owners.set(bytes, slab)
  return bytes
}

/**
 * No more parts will be cut from `slab`; it returns to the pool once they are all back (at once
 * if there are none).
 *
 * @internal
 */
export const seal = (slab: Slab): void => {
  slab.sealed = true
  settle(slab)
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
 * Slabs in the pool, and how many `take`s the pool has served (for tests).
 *
 * @internal
 */
export const stats = (): { readonly pooled: number; readonly reused: number } => ({ pooled: pool.length, reused })
