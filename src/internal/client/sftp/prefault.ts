/**
 * A fresh buffer's pages faulted in ahead of the reader that fills it, off the event loop.
 *
 * A whole-file `read` fills a buffer the size of the file, and the first write to each 4 KiB page
 * of fresh memory is a page fault. Here that was ~140 ms per 256 MiB (`Buffer.allocUnsafeSlow`
 * then `fill`: 137–145 ms, against 10 ms for the same fill again), on the event loop, in the middle
 * of the transfer: a quarter of its time. Reading `/dev/zero` into the buffer faults the pages in
 * a threadpool thread instead, a few MiB ahead of where the replies land. Whole-file reads of
 * 256 MiB went from 353–493 to 450–732 MiB/s (`scratchpad/sftp/readab.ts`, 6 reads × 2 runs each).
 *
 * The zeros must never land on bytes already received, so the reader asks `limit(position)` before
 * each request and only requests what lies below it: a range is handed over once its faulting has
 * finished, and never touched again.
 *
 * @internal
 */
import * as Fs from "node:fs"

/** Buffers smaller than this are filled as they are. */
export const MIN_BYTES = 8 * 1024 * 1024
/** How far ahead of the reader pages are faulted in, and in what steps. */
const AHEAD_BYTES = 8 * 1024 * 1024
const STEP_BYTES = 2 * 1024 * 1024

/** @internal */
export interface Prefault {
  /**
   * How much of the buffer (from its start) may be written now, given that the reader has
   * requested everything below `position`; starts more faulting if that is near.
   */
  readonly limit: (position: number) => number
  /** Stops faulting; the descriptor is closed once no read is in flight. Idempotent. */
  readonly stop: () => void
}

/**
 * Starts faulting `target` in; `advanced` is called whenever more of it may be written. Without
 * `/dev/zero` the whole buffer may be written at once (and faults as it is filled).
 *
 * @internal
 */
export const make = (target: Buffer, advanced: () => void): Prefault => {
  let faulted = 0
  let fd: number | undefined = undefined
  let busy = false
  let stopped = false
  let wanted = 0

  const close = () => {
    if (fd === undefined) return
    const open = fd
    fd = undefined
    Fs.close(open, () => {})
  }
  const giveUp = () => {
    faulted = target.length
    close()
    advanced()
  }
  const step = () => {
    if (busy || fd === undefined) return
    if (stopped || faulted >= target.length) return close()
    if (faulted >= wanted + AHEAD_BYTES) return
    const length = Math.min(STEP_BYTES, target.length - faulted)
    busy = true
    Fs.read(fd, target, faulted, length, null, (error, bytes) => {
      busy = false
      if (stopped) return close()
      if (error || bytes !== length) return giveUp()
      faulted += length
      advanced()
      step()
    })
  }

  busy = true
  Fs.open("/dev/zero", "r", (error, opened) => {
    busy = false
    if (error) return giveUp()
    if (stopped) return Fs.close(opened, () => {})
    fd = opened
    step()
  })

  return {
    limit: (position) => {
      wanted = Math.max(wanted, position)
      step()
      return faulted
    },
    stop: () => {
      stopped = true
      if (!busy) close()
    }
  }
}
