/**
 * What every transport's `SandboxFileSystem` must do alike, written once and run against each
 * (LocalSandbox on the host and through its in-sandbox agent, DockerSandbox): writes, reads and
 * attributes, the error reasons, and rename, links, symlinks and realpath. Each test works in a fresh directory of its own.
 */
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { randomUUID } from "node:crypto"
import type * as Sandbox from "../../src/Sandbox.js"
import { encoder } from "../local/support.js"

const writeFile = (fs: Sandbox.SandboxFileSystem, path: string, text: string) =>
  Effect.flatMap(
    fs.open(path, { write: true, create: true, truncate: true }),
    (file) => Effect.zipRight(file.write(0, encoder.encode(text)), file.close)
  )

const readText = (fs: Sandbox.SandboxFileSystem, path: string) =>
  Effect.gen(function*() {
    const file = yield* fs.open(path, { read: true })
    const data = yield* file.read(0, 1024)
    yield* file.close
    return Buffer.from(data).toString()
  })

/** A fresh directory under the working directory: its absolute path and a path builder. */
const freshDirectory = (fs: Sandbox.SandboxFileSystem) =>
  Effect.gen(function*() {
    const name = `conformance-${randomUUID()}`
    yield* fs.makeDirectory(name)
    const dir = yield* fs.realPath(name)
    return { dir, at: (path: string) => `${dir}/${path}` }
  })

/** Registers the shared file tests (call inside a `describe`); `make` gives a fresh sandbox. */
export const fileSystemConformance = (make: () => Effect.Effect<Sandbox.Sandbox, unknown, Scope.Scope>): void => {
  it.scopedLive("writes, reads at offsets, stats, lists, refuses exclusive re-creation, sets attributes", () =>
    Effect.gen(function*() {
      const { fs } = yield* make()
      const { at } = yield* freshDirectory(fs)
      yield* fs.makeDirectory(at("dir"), 0o755)
      const file = yield* fs.open(at("dir/a.txt"), { write: true, create: true, exclusive: true }, 0o640)
      yield* file.write(0, encoder.encode("hello world"))
      yield* file.write(6, encoder.encode("WORLD"))
      yield* file.sync
      yield* file.close
      yield* file.close // idempotent

      const reader = yield* fs.open(at("dir/a.txt"), { read: true })
      assert.strictEqual(Buffer.from(yield* reader.read(6, 100)).toString(), "WORLD")
      assert.strictEqual(Buffer.from(yield* reader.read(0, 5)).toString(), "hello")
      assert.strictEqual((yield* reader.read(100, 10)).length, 0)
      const attributes = yield* reader.stat
      assert.strictEqual(attributes.type, "File")
      assert.strictEqual(attributes.size, 11)
      assert.strictEqual(attributes.mode & 0o777, 0o640)
      yield* reader.close
      assert.strictEqual((yield* Effect.flip(reader.read(0, 1))).reason, "Closed")

      const entries = yield* fs.readDirectory(at("dir"))
      assert.deepStrictEqual(entries.map((e) => [e.name, e.attributes.type, e.attributes.size]), [[
        "a.txt",
        "File",
        11
      ]])
      const exclusive = yield* Effect.flip(fs.open(at("dir/a.txt"), { write: true, create: true, exclusive: true }))
      assert.strictEqual(exclusive.reason, "AlreadyExists")

      yield* fs.setStat(at("dir/a.txt"), { mode: 0o600, mtime: 1_000_000, atime: 2_000_000, size: 5 })
      const changed = yield* fs.stat(at("dir/a.txt"))
      assert.strictEqual(changed.mode & 0o777, 0o600)
      assert.strictEqual(changed.mtime, 1_000_000)
      assert.strictEqual(changed.atime, 2_000_000)
      assert.strictEqual(changed.size, 5)
      assert.strictEqual(yield* readText(fs, at("dir/a.txt")), "hello")
      assert.strictEqual((yield* fs.stat(at("dir"))).mode & 0o777, 0o755)
      const stats = yield* fs.statFileSystem(at("dir"))
      assert.isAbove(stats.blocks, 0)
    }))

  it.scopedLive("maps errors to reasons", () =>
    Effect.gen(function*() {
      const { fs } = yield* make()
      const { at } = yield* freshDirectory(fs)
      const missing = yield* Effect.flip(fs.stat(at("missing")))
      assert.strictEqual(missing.reason, "NotFound")
      assert.strictEqual(missing.path, at("missing"))
      yield* fs.makeDirectory(at("d"))
      yield* fs.makeDirectory(at("d/e"))
      assert.strictEqual((yield* Effect.flip(fs.makeDirectory(at("d")))).reason, "AlreadyExists")
      assert.strictEqual((yield* Effect.flip(fs.makeDirectory(at("nope/x")))).reason, "NotFound")
      assert.strictEqual((yield* Effect.flip(fs.removeDirectory(at("d")))).reason, "NotEmpty")
      assert.strictEqual((yield* Effect.flip(fs.remove(at("d")))).reason, "IsADirectory")
      assert.strictEqual((yield* Effect.flip(fs.remove(at("nope")))).reason, "NotFound")
      yield* writeFile(fs, at("f"), "")
      assert.strictEqual((yield* Effect.flip(fs.readDirectory(at("f")))).reason, "NotADirectory")
      assert.strictEqual((yield* Effect.flip(fs.readDirectory(at("nope")))).reason, "NotFound")
      assert.strictEqual((yield* Effect.flip(fs.open(at("d"), { write: true }))).reason, "IsADirectory")
      assert.strictEqual((yield* Effect.flip(fs.open(at("nope"), { read: true }))).reason, "NotFound")
      assert.strictEqual(
        (yield* Effect.flip(fs.open(at("nope/x"), { write: true, create: true }))).reason,
        "NotFound"
      )
      assert.strictEqual((yield* Effect.flip(fs.readLink(at("f")))).reason, "InvalidArgument")
      assert.strictEqual((yield* Effect.flip(fs.realPath(at("nope/x")))).reason, "NotFound")
      yield* fs.removeDirectory(at("d/e"))
      yield* fs.remove(at("f"))
    }))

  it.scopedLive("renames without overwriting unless asked, links, symlinks and realpath", () =>
    Effect.gen(function*() {
      const { fs } = yield* make()
      const { at, dir } = yield* freshDirectory(fs)
      yield* writeFile(fs, at("a"), "A")
      yield* writeFile(fs, at("b"), "B")
      assert.strictEqual((yield* Effect.flip(fs.rename(at("a"), at("b")))).reason, "AlreadyExists")
      yield* fs.rename(at("a"), at("c"))
      assert.strictEqual((yield* Effect.flip(fs.stat(at("a")))).reason, "NotFound")
      yield* fs.rename(at("c"), at("b"), { overwrite: true })
      assert.strictEqual(yield* readText(fs, at("b")), "A")
      yield* fs.makeDirectory(at("dir1"))
      yield* fs.makeDirectory(at("dir2"))
      assert.strictEqual((yield* Effect.flip(fs.rename(at("dir1"), at("dir2")))).reason, "AlreadyExists")
      // not moved into dir2 either
      assert.deepStrictEqual(yield* fs.readDirectory(at("dir2")), [])
      yield* fs.rename(at("dir1"), at("dir3"))
      assert.strictEqual((yield* Effect.flip(fs.rename(at("nope"), at("x")))).reason, "NotFound")

      yield* fs.symlink("b", at("link"))
      assert.strictEqual(yield* fs.readLink(at("link")), "b")
      assert.strictEqual((yield* fs.lstat(at("link"))).type, "SymbolicLink")
      assert.strictEqual((yield* fs.stat(at("link"))).type, "File")
      assert.strictEqual(yield* fs.realPath(at("link")), at("b"))
      assert.strictEqual(yield* fs.realPath(at("not-yet")), at("not-yet"))
      assert.strictEqual(yield* fs.realPath(at("dir2/../dir3/./")), at("dir3"))
      assert.strictEqual((yield* Effect.flip(fs.symlink("b", at("dir3")))).reason, "AlreadyExists")
      yield* fs.symlink(at("dir3"), at("dirlink"))
      assert.strictEqual(yield* fs.realPath(at("dirlink/x")), at("dir3/x"))
      yield* fs.link(at("b"), at("hard"))
      assert.strictEqual((yield* fs.stat(at("hard"))).nlink, 2)
      assert.strictEqual((yield* Effect.flip(fs.link(at("b"), at("hard")))).reason, "AlreadyExists")
      yield* fs.remove(at("hard"))
      yield* fs.remove(at("link"))
      assert.strictEqual((yield* fs.stat(at("b"))).type, "File")
      yield* fs.removeDirectory(at("dir3"))
      const entries = yield* fs.readDirectory(dir)
      assert.deepStrictEqual(entries.map((e) => e.name).sort(), ["b", "dir2", "dirlink"])
      assert.strictEqual(entries.find((e) => e.name === "dirlink")!.attributes.type, "SymbolicLink")
    }))
}
