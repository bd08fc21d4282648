/**
 * File bytes lent for SFTP DATA replies (`src/internal/readBuffers.ts`): the pool's bookkeeping,
 * then downloads from an isolated sandbox whose slabs are reused while other downloads run, each
 * byte checked against its file.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import { PassThrough, Writable } from "node:stream"
import * as ReadBuffers from "../../src/internal/readBuffers.js"
import { serve } from "../../src/internal/server/sftp/server.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as MemorySandbox from "../../src/MemorySandbox.js"
import type { SandboxFileSystem } from "../../src/Sandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import { attrs, init, ReplyParser, request, str, T, u32, u64 } from "../support/sftpPackets.js"
import { waitUntil } from "./support.js"
import { hasBwrap } from "./support.js"

const { SLAB_BYTES } = ReadBuffers

describe("ReadBuffers", () => {
  it("reads share the current slab, each in bytes of its own", () => {
    ReadBuffers.reserve(SLAB_BYTES) // fills a slab: the next reads start a fresh one
    const a = ReadBuffers.reserve(100)
    const b = ReadBuffers.reserve(200)
    assert.strictEqual(a.buffer.buffer, b.buffer.buffer)
    assert.strictEqual(b.buffer.byteOffset, a.buffer.byteOffset + 100)
    assert.strictEqual(b.buffer.length, 200)
    // what does not fit goes to another slab
    const c = ReadBuffers.reserve(SLAB_BYTES - 200)
    assert.notStrictEqual(c.buffer.buffer, a.buffer.buffer)
  })

  it("a full slab returns to the pool once its reservation and every part are back, not before", () => {
    const read = ReadBuffers.reserve(SLAB_BYTES)
    const a = ReadBuffers.part(read, 0, 10)
    const b = ReadBuffers.part(read, 10, 20)
    assert.strictEqual(ReadBuffers.part(read, 20, 20).length, 0, "an empty range is no part")
    ReadBuffers.release(read)
    ReadBuffers.reserve(1) // the slab is full now
    const before = ReadBuffers.stats().pooled
    ReadBuffers.giveBack(a)
    ReadBuffers.giveBack(a) // twice: ignored
    ReadBuffers.giveBack(Buffer.from(b)) // a copy is not the part
    assert.strictEqual(ReadBuffers.stats().pooled, before)
    ReadBuffers.giveBack(b)
    assert.strictEqual(ReadBuffers.stats().pooled, before + 1)
  })

  it("a slab with a part never handed back, or a reservation not released, stays out of the pool", () => {
    const kept = ReadBuffers.reserve(SLAB_BYTES)
    ReadBuffers.part(kept, 0, 100)
    ReadBuffers.release(kept)
    const unreleased = ReadBuffers.reserve(SLAB_BYTES)
    const before = ReadBuffers.stats().pooled
    ReadBuffers.reserve(SLAB_BYTES)
    ReadBuffers.reserve(SLAB_BYTES)
    assert.strictEqual(ReadBuffers.stats().pooled, Math.max(0, before - 2))
    assert.isDefined(unreleased)
  })
})

/** A sandbox's files whose reads return bytes lent from `ReadBuffers`, as `directFile.ts` does. */
const lendingFs = (fs: SandboxFileSystem): SandboxFileSystem => ({
  ...fs,
  open: (path, flags, mode) =>
    Effect.map(fs.open(path, flags, mode), (file) => ({
      ...file,
      read: (offset, length) =>
        Effect.map(file.read(offset, length), (bytes) => {
          const lent = ReadBuffers.reserve(bytes.length)
          lent.buffer.set(bytes)
          const part = ReadBuffers.part(lent, 0, bytes.length)
          ReadBuffers.release(lent)
          return part
        })
    }))
})

describe("the SFTP server hands lent bytes back", () => {
  it.scopedLive("only once the output has called back for them, as ssh2 does after copying", () =>
    Effect.gen(function*() {
      const content = randomBytes(100_000)
      const sandbox = yield* MemorySandbox.make({ files: { "/f": content } })
      const parser = new ReplyParser()
      // like an ssh2 channel: copies what it can send at once; a big chunk waits for the window
      const held: Array<{ chunk: Buffer; callback: () => void }> = []
      const output = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (chunk.length < 64 * 1024) {
            parser.push(Buffer.from(chunk))
            return callback()
          }
          held.push({ chunk, callback })
        }
      })
      const input = new PassThrough()
      yield* Effect.forkScoped(serve(input, output, { fs: lendingFs(sandbox.fs), outputCopiesWrites: true }))
      input.write(init)
      input.write(request(T.OPEN, 1, str("/f"), u32(1), attrs()))
      yield* waitUntil(() => parser.replies.some((r) => r.id === 1), "the HANDLE reply")
      const handle = parser.replies.find((r) => r.id === 1)!.fields.bytes()
      // empty the pool (slabs reserved whole and never released)
      while (ReadBuffers.stats().pooled > 0) ReadBuffers.reserve(SLAB_BYTES)
      input.write(request(T.READ, 2, str(handle), u64(0), u32(100_000)))
      yield* waitUntil(() => held.length === 1, "the DATA reply")
      yield* Effect.sleep(20)
      ReadBuffers.reserve(SLAB_BYTES) // the read's slab is full now: only its part holds it
      assert.strictEqual(ReadBuffers.stats().pooled, 0, "not in the pool while the output holds its bytes")
      const { callback, chunk } = held[0]!
      assert.isTrue(chunk.equals(content))
      callback()
      assert.strictEqual(ReadBuffers.stats().pooled, 1, "in the pool once the output called back")
    }))
})

describe.skipIf(!hasBwrap)("downloads from an isolated sandbox reuse lent slabs", () => {
  it.scopedLive(
    "concurrent streams and whole-file reads each get their own file's bytes",
    () =>
      Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
        const client = yield* SandboxSsh.make(sandbox).openClient()
        const files = Array.from(
          { length: 3 },
          (_, i) => ({ path: `/tmp/f${i}.bin`, data: randomBytes(12 * 1024 * 1024 + i) })
        )
        const sftp = yield* client.sftp()
        for (const file of files) yield* sftp.write(file.path, file.data)
        const before = ReadBuffers.stats().reused
        // each on a session of its own, all at once: a slow stream (whose replies wait in ssh2
        // for the window to reopen) while whole-file reads take and hand back slabs
        yield* Effect.forEach(files, (file, i) =>
          Effect.gen(function*() {
            const own = yield* client.sftp()
            const whole = i === 0
              ? Buffer.concat([
                ...yield* Stream.runCollect(own.readStream(file.path).pipe(Stream.tap(() => Effect.sleep(2))))
              ])
              : yield* Effect.map(Effect.replicateEffect(own.read(file.path), 3), (reads) => reads[2]!)
            assert.strictEqual(whole.length, file.data.length)
            assert.isTrue(Buffer.from(whole).equals(file.data), `${file.path} read back differs`)
          }), { concurrency: "unbounded", discard: true })
        // slabs came back once ssh2 had copied their bytes, and were lent again: 36 MiB went out
        // through a handful of them
        assert.isAtLeast(ReadBuffers.stats().reused - before, 20)
        assert.isAbove(ReadBuffers.stats().pooled, before)
      }),
    60_000
  )
})
