import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import { encoder, exchange } from "./support.js"

const make = LocalSandbox.make({ isolation: "none" })

describe("LocalSandbox file operations and connections (none)", () => {
  it.scopedLive("works relative to the working directory: the sandbox's host directory", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const file = yield* sandbox.fs.open("a.txt", { write: true, create: true }, 0o640)
      yield* file.write(0, encoder.encode("hello"))
      yield* file.close
      assert.strictEqual(Fs.readFileSync(Path.join(sandbox.info.workdir, "a.txt"), "utf8"), "hello")
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
      const echoed = yield* exchange(sandbox, "127.0.0.1", port, ["ping ", "pong"])
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
