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

describe("ReadBuffers", () => {
  it("a slab returns to the pool once sealed and every part is back, not before", () => {
    const before = ReadBuffers.stats().pooled
    const slab = ReadBuffers.take()
    const a = ReadBuffers.part(slab, 0, 10)
    const b = ReadBuffers.part(slab, 10, 20)
    ReadBuffers.giveBack(a)
    ReadBuffers.giveBack(a) // twice: ignored
    ReadBuffers.giveBack(Buffer.from(b)) // a copy is not the part
    assert.strictEqual(ReadBuffers.stats().pooled, before)
    ReadBuffers.giveBack(b)
    assert.strictEqual(ReadBuffers.stats().pooled, before, "not sealed yet: more parts may be cut")
    ReadBuffers.seal(slab)
    assert.strictEqual(ReadBuffers.stats().pooled, before + 1)
    // the next slab is that one
    assert.strictEqual(ReadBuffers.take().buffer, slab.buffer)
  })

  it("a slab with a part never handed back stays out of the pool", () => {
    const before = ReadBuffers.stats().pooled
    const slab = ReadBuffers.take()
    ReadBuffers.part(slab, 0, 100)
    const kept = ReadBuffers.part(slab, 100, 200)
    ReadBuffers.seal(slab)
    ReadBuffers.giveBack(kept)
    assert.strictEqual(ReadBuffers.stats().pooled, before)
    // a slab whose only range is empty (a read past the end of the file) returns when sealed
    const past = ReadBuffers.take()
    assert.strictEqual(ReadBuffers.part(past, 0, 0).length, 0)
    ReadBuffers.seal(past)
    assert.strictEqual(ReadBuffers.stats().pooled, before + 1)
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
          const slab = ReadBuffers.take()
          slab.buffer.set(bytes)
          const part = ReadBuffers.part(slab, 0, bytes.length)
          ReadBuffers.seal(slab)
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
      while (ReadBuffers.stats().pooled > 0) ReadBuffers.take() // the read's slab is then the only one
      input.write(request(T.READ, 2, str(handle), u64(0), u32(100_000)))
      yield* waitUntil(() => held.length === 1, "the DATA reply")
      yield* Effect.sleep(20)
      assert.strictEqual(ReadBuffers.stats().pooled, 0, "back in the pool while the output still holds it")
      const { callback, chunk } = held[0]!
      assert.isTrue(chunk.equals(content))
      callback()
      assert.strictEqual(ReadBuffers.stats().pooled, 1)
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
