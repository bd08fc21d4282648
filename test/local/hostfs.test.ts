import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import { collectBytes, encoder } from "./support.js"

const make = LocalSandbox.make({ isolation: "none" })

describe("LocalSandbox file operations and connections (none)", () => {
  it.scopedLive("writes, reads, stats and lists files relative to the working directory", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const fs = sandbox.fs
      yield* fs.makeDirectory("dir", 0o755)
      const file = yield* fs.open("dir/a.txt", { write: true, create: true, exclusive: true }, 0o640)
      yield* file.write(0, encoder.encode("hello world"))
      yield* file.write(6, encoder.encode("WORLD"))
      yield* file.sync
      yield* file.close
      yield* file.close // idempotent
      assert.strictEqual(Fs.readFileSync(Path.join(sandbox.info.workdir, "dir/a.txt"), "utf8"), "hello WORLD")

      const reader = yield* fs.open("dir/a.txt", { read: true })
      assert.strictEqual(Buffer.from(yield* reader.read(6, 100)).toString(), "WORLD")
      assert.strictEqual((yield* reader.read(100, 10)).length, 0)
      const attributes = yield* reader.stat
      assert.strictEqual(attributes.type, "File")
      assert.strictEqual(attributes.size, 11)
      assert.strictEqual(attributes.mode & 0o777, 0o640)
      yield* reader.close
      assert.strictEqual((yield* Effect.flip(reader.read(0, 1))).reason, "Closed")

      const entries = yield* fs.readDirectory("dir")
      assert.deepStrictEqual(entries.map((e) => [e.name, e.attributes.type]), [["a.txt", "File"]])
      const exclusive = yield* Effect.flip(fs.open("dir/a.txt", { write: true, create: true, exclusive: true }))
      assert.strictEqual(exclusive.reason, "AlreadyExists")

      yield* fs.setStat("dir/a.txt", { mode: 0o600, mtime: 1_000_000, size: 5 })
      const changed = yield* fs.stat("dir/a.txt")
      assert.strictEqual(changed.mode & 0o777, 0o600)
      assert.strictEqual(changed.mtime, 1_000_000)
      assert.strictEqual(changed.size, 5)
      const stats = yield* fs.statFileSystem(".")
      assert.isAbove(stats.blocks, 0)
    }))

  it.scopedLive("connects to a TCP server with the host's network", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const server = yield* Effect.acquireRelease(
        Effect.async<Net.Server>((resume) => {
          const server = Net.createServer((socket) => socket.pipe(socket))
          server.listen(0, "127.0.0.1", () => {
            resume(Effect.succeed(server))
          })
        }),
        (server) =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
          })
      )
      const port = (server.address() as Net.AddressInfo).port
      const echoed = yield* Effect.scoped(
        Effect.gen(function*() {
          const connection = yield* sandbox.connect("127.0.0.1", port)
          const [, output] = yield* Effect.all([
            Stream.run(Stream.make(encoder.encode("ping "), encoder.encode("pong")), connection.input),
            collectBytes(connection.output)
          ], { concurrency: "unbounded" })
          return output.toString()
        })
      )
      assert.strictEqual(echoed, "ping pong")
      const refused = yield* Effect.flip(Effect.scoped(sandbox.connect("127.0.0.1", 1)))
      assert.strictEqual(refused.reason, "ConnectFailed")
      const bad = yield* Effect.flip(Effect.scoped(sandbox.connect("127.0.0.1", 70000)))
      assert.strictEqual(bad.reason, "InvalidArgument")
    }))

  it.scopedLive("runs processes as the host user only", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const error = yield* Effect.flip(sandbox.spawn({ command: "true", user: "someone-else" }))
      assert.strictEqual(error.reason, "Unsupported")
    }))
})
