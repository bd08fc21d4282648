/**
 * An in-memory pair of connected duplex streams for running an ssh2 client and server in one
 * process.
 *
 * ssh2 corrupts its transport when a write is delivered synchronously into the peer (FACTS.md:
 * `Bad packet length` with chacha20, `Invalid MAC` with aes-ctr), so every write reaches the peer
 * on a later tick. Backpressure is end to end: a write's callback is held until the peer's reader
 * asks for more, so a slow reader stalls the writer instead of growing a buffer.
 *
 * @internal
 */
import { Duplex } from "node:stream"

class PairedDuplex extends Duplex {
  peer!: PairedDuplex
  private pendingCallback: ((error?: Error | null) => void) | undefined = undefined

  constructor() {
    super({ allowHalfOpen: false, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    process.nextTick(() => {
      if (this.peer.destroyed) {
        callback()
        return
      }
      if (this.peer.push(chunk)) {
        callback()
      } else {
        this.pendingCallback = callback
      }
    })
  }

  override _final(callback: (error?: Error | null) => void): void {
    process.nextTick(() => {
      if (!this.peer.destroyed) this.peer.push(null)
      callback()
    })
  }

  override _read(): void {
    const callback = this.peer.pendingCallback
    if (callback !== undefined) {
      this.peer.pendingCallback = undefined
      callback()
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const pending = this.pendingCallback
    this.pendingCallback = undefined
    if (pending !== undefined) pending()
    process.nextTick(() => {
      if (!this.peer.destroyed) this.peer.destroy()
    })
    callback(error)
  }
}

/** @internal */
export const makeDuplexPair = (): readonly [Duplex, Duplex] => {
  const a = new PairedDuplex()
  const b = new PairedDuplex()
  a.peer = b
  b.peer = a
  return [a, b]
}
