/**
 * `Prefault`: a buffer's pages zeroed in the threadpool ahead of its reader, each range handed
 * over once and never touched after. (That a whole-file read never gets zeros over the bytes it
 * received is the SftpClient round-trip tests' sha256, which fail if requests outrun the limit.)
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Prefault from "../../src/internal/client/sftp/prefault.js"
import { waitUntil } from "../local/support.js"

const MiB = 1024 * 1024

/** This process's descriptors open on `/dev/zero`. */
const zeroDescriptors = () =>
  Fs.readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return Fs.readlinkSync(`/proc/self/fd/${fd}`) === "/dev/zero"
    } catch {
      return false
    }
  }).length

const allBytes = (buffer: Buffer, from: number, to: number, value: number) => {
  for (let i = from; i < to; i++) if (buffer[i] !== value) return false
  return true
}

describe("Prefault", () => {
  it.live("zeroes ahead of the reader and no further, hands ranges over, then closes /dev/zero", () =>
    Effect.gen(function*() {
      const before = zeroDescriptors()
      const buffer = Buffer.alloc(32 * MiB, 0xab)
      let advances = 0
      const faults = Prefault.make(buffer, () => advances++)
      assert.strictEqual(faults.limit(0), 0, "nothing is writable before it is faulted in")
      yield* waitUntil(() => faults.limit(0) >= 8 * MiB, "8 MiB ahead of the reader")
      yield* Effect.sleep(50)
      const ahead = faults.limit(0)
      // it stops 8 MiB ahead of the reader (plus the step under way)
      assert.isAtMost(ahead, 10 * MiB)
      assert.isTrue(allBytes(buffer, 0, ahead, 0), "what is handed over is zeroed")
      assert.isTrue(allBytes(buffer, ahead + 2 * MiB, buffer.length, 0xab), "nothing far ahead is touched")
      // the reader moves on: so does the faulting, to the end
      yield* waitUntil(() => faults.limit(buffer.length) === buffer.length, "the whole buffer")
      assert.isTrue(allBytes(buffer, 0, buffer.length, 0))
      assert.isAbove(advances, 4)
      yield* waitUntil(() => zeroDescriptors() === before, "/dev/zero closed at the end")
    }))

  it.live("stop in the middle: faulting ends and its descriptor is closed", () =>
    Effect.gen(function*() {
      const before = zeroDescriptors()
      const buffer = Buffer.alloc(64 * MiB, 0xab)
      const faults = Prefault.make(buffer, () => {})
      yield* waitUntil(() => faults.limit(64 * MiB) > 0, "the first step")
      faults.stop()
      faults.stop()
      yield* waitUntil(() => zeroDescriptors() === before, "/dev/zero closed after stop")
      const reached = faults.limit(64 * MiB)
      yield* Effect.sleep(50)
      assert.strictEqual(faults.limit(64 * MiB), reached, "no more faulting after stop")
      assert.isTrue(allBytes(buffer, reached + 2 * MiB, buffer.length, 0xab))
    }))
})
