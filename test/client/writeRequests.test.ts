/**
 * WRITE requests from one reused buffer (`src/internal/client/sftp/writeRequests.ts`), through the
 * public API against our server: they are used, they land byte-exact, offsets past 4 GiB keep their
 * high word, and a session whose internals look different falls back to ssh2's own `write`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type * as ssh2 from "ssh2"
import * as WriteRequests from "../../src/internal/client/sftp/writeRequests.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as MemorySandbox from "../../src/MemorySandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"

describe("WRITE requests from a reused buffer", () => {
  it.scopedLive("an upload's requests come from it and land byte-exact, whole-file and streamed", () =>
    Effect.gen(function*() {
      const sandbox = yield* MemorySandbox.make()
      const sftp = yield* (yield* SandboxSsh.make(sandbox).openClient()).sftp()
      const data = randomBytes(8 * 1024 * 1024 + 3)
      const before = WriteRequests.sentFromScratch()
      yield* sftp.write("/root/a.bin", data)
      // 33 requests of up to 255 KiB: at least the first window's worth (2 MiB, 8 of them) is sent at
      // once; those that meet a full window go through ssh2's write (13 measured here; over a
      // 256 MiB upload to an isolated sandbox, 1017–1021 of 1024)
      assert.isAtLeast(WriteRequests.sentFromScratch() - before, 8)
      assert.isTrue(Buffer.from(yield* sftp.read("/root/a.bin")).equals(data))
      const chunks = Stream.fromIterable(
        Array.from({ length: 129 }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536))
      )
      yield* Stream.run(chunks, sftp.writeSink("/root/b.bin"))
      assert.isTrue(Buffer.from(yield* sftp.read("/root/b.bin")).equals(data))
    }))

  it.scopedLive("an offset past 4 GiB keeps its high word", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "write-requests-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const sandbox = yield* LocalSandbox.make({ root, isolation: "none" })
      const sftp = yield* (yield* SandboxSsh.make(sandbox).openClient()).sftp()
      yield* sftp.write("sparse.bin", Buffer.from("start"))
      const offset = 2 ** 32 + 7
      const before = WriteRequests.sentFromScratch()
      yield* sftp.writeAt("sparse.bin", offset, "past four GiB")
      assert.strictEqual(WriteRequests.sentFromScratch() - before, 1)
      const fd = Fs.openSync(Path.join(root, "sparse.bin"), "r")
      const back = Buffer.alloc(13)
      Fs.readSync(fd, back, 0, 13, offset)
      Fs.closeSync(fd)
      assert.strictEqual(back.toString(), "past four GiB")
      assert.strictEqual(Fs.statSync(Path.join(root, "sparse.bin")).size, offset + 13)
    }))

  it("a session without the expected internals goes through ssh2's own write", () => {
    const calls: Array<Array<unknown>> = []
    const fake = {
      write: (...args: Array<unknown>) => {
        calls.push(args.slice(0, 5))
        ;(args[5] as (error?: Error) => void)(undefined)
      }
    } as unknown as ssh2.SFTPWrapper
    let answered: Error | undefined | "no" = "no"
    const before = WriteRequests.sentFromScratch()
    WriteRequests.write(fake, Buffer.from("h"), Buffer.from("data"), 1, 2, 10, (error) => (answered = error))
    assert.deepStrictEqual(calls, [[Buffer.from("h"), Buffer.from("data"), 1, 2, 10]])
    assert.isUndefined(answered)
    assert.strictEqual(WriteRequests.sentFromScratch(), before)
  })
})
