import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { createHash, randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import type * as Sandbox from "../../src/Sandbox.js"
import { encoder, eventually, exchange, processesWith, sh } from "../local/support.js"
import { fileSystemConformance } from "../support/fileSystemConformance.js"
import { docker, makeSandbox } from "./support.js"

const writeFile = (fs: Sandbox.SandboxFileSystem, path: string, data: Uint8Array | string) =>
  Effect.flatMap(
    fs.open(path, { write: true, create: true, truncate: true }),
    (file) => Effect.zipRight(file.write(0, typeof data === "string" ? encoder.encode(data) : data), file.close)
  )

const readFile = (fs: Sandbox.SandboxFileSystem, path: string, chunk = 256 * 1024) =>
  Effect.gen(function*() {
    const file = yield* fs.open(path, { read: true })
    const parts: Array<Uint8Array> = []
    let offset = 0
    while (true) {
      const data = yield* file.read(offset, chunk)
      if (data.length === 0) break
      parts.push(data)
      offset += data.length
    }
    yield* file.close
    return Buffer.concat(parts)
  })

describe("DockerSandbox file operations (busybox-only image)", () => {
  fileSystemConformance(() => makeSandbox({ workdir: "/tmp" }))

  it.scopedLive("works relative to the working directory; chown as root; the file system's name limit", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox({ workdir: "/root" })
      const fs = sandbox.fs
      yield* writeFile(fs, "a.txt", "hello WORLD")
      assert.strictEqual((yield* sh(sandbox, "cat /root/a.txt")).stdout.toString(), "hello WORLD")
      yield* fs.setStat("a.txt", { uid: 1000, gid: 1000 })
      const owned = yield* fs.lstat("a.txt")
      assert.deepStrictEqual([owned.uid, owned.gid], [1000, 1000])
      assert.strictEqual((yield* fs.statFileSystem(".")).nameMax, 255)
    }))

  it.scopedLive("checks permissions as the sandbox's user", () =>
    Effect.gen(function*() {
      const { fs } = yield* makeSandbox({ user: "user", workdir: "/home/user" })
      assert.strictEqual((yield* Effect.flip(fs.readDirectory("/root"))).reason, "PermissionDenied")
      assert.strictEqual((yield* Effect.flip(fs.makeDirectory("/root/x"))).reason, "PermissionDenied")
      const denied = yield* Effect.flip(fs.open("/etc/passwd", { write: true }))
      assert.strictEqual(denied.reason, "PermissionDenied")
      yield* writeFile(fs, "mine", "ok")
      assert.strictEqual((yield* fs.stat("mine")).uid, 1000)
    }))

  it.scopedLive("fileSystemFor(user) acts as that user; the default user shares fs; an unknown user is refused", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      yield* writeFile(sandbox.fs, "/root-only", "secret")
      yield* sandbox.fs.setStat("/root-only", { mode: 0o600 })
      assert.strictEqual(yield* sandbox.fileSystemFor!("root"), sandbox.fs)
      yield* Effect.scoped(Effect.gen(function*() {
        const fs = yield* sandbox.fileSystemFor!("user")
        assert.strictEqual((yield* Effect.flip(fs.open("/root-only", { read: true }))).reason, "PermissionDenied")
        assert.strictEqual((yield* Effect.flip(fs.makeDirectory("/root/x"))).reason, "PermissionDenied")
        yield* writeFile(fs, "/tmp/by-user", "mine")
        assert.strictEqual((yield* fs.stat("/tmp/by-user")).uid, 1000)
        assert.strictEqual((yield* readFile(fs, "/tmp/by-user")).toString(), "mine")
      }))
      // the root file system is untouched by the user's scope closing
      assert.strictEqual((yield* readFile(sandbox.fs, "/root-only")).toString(), "secret")
      assert.strictEqual((yield* sandbox.fs.stat("/tmp/by-user")).uid, 1000)
      const unknown = yield* Effect.flip(Effect.scoped(sandbox.fileSystemFor!("mallory")))
      assert.strictEqual(unknown.reason, "InvalidArgument")
      assert.include(unknown.message, "mallory")
      // the user's file agent and dd execs ended with its scope
      const userProcesses = () =>
        Effect.map(
          sh(sandbox, "ps -o user,args"),
          (ps) => ps.stdout.toString().split("\n").filter((line) => line.startsWith("user "))
        )
      let left = yield* userProcesses()
      for (let i = 0; i < 50 && left.length > 0; i++) {
        yield* Effect.sleep("100 millis")
        left = yield* userProcesses()
      }
      assert.deepStrictEqual(left, [])
    }))

  it.scopedLive("handles names with spaces, quotes, newlines, backslashes and non-ASCII", () =>
    Effect.gen(function*() {
      const { fs } = yield* makeSandbox({ workdir: "/tmp" })
      const names = [
        "a b",
        "it's \"quoted\"",
        "new\nline",
        "back\\slash",
        "ünï €",
        "-dash",
        ".hidden",
        "..dots",
        "$(x)*"
      ]
      yield* fs.makeDirectory("odd")
      for (const name of names) yield* writeFile(fs, `odd/${name}`, name)
      const entries = yield* fs.readDirectory("odd")
      assert.deepStrictEqual(entries.map((e) => e.name).sort(), [...names].sort())
      for (const entry of entries) assert.strictEqual(entry.attributes.size, Buffer.byteLength(entry.name))
      for (const name of names) assert.strictEqual((yield* readFile(fs, `odd/${name}`)).toString(), name)
      yield* fs.symlink("new\nline", "odd/link to it")
      assert.strictEqual(yield* fs.readLink("odd/link to it"), "new\nline")
      yield* fs.rename("odd/a b", "odd/c d")
      assert.strictEqual((yield* fs.stat("odd/c d")).size, 3)
    }))

  it.scopedLive("answers 200 concurrent requests, and an interrupted one does not shift the answers", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const { fs } = sandbox
      yield* sh(sandbox, "mkdir /tmp/c && cd /tmp/c && for i in $(seq 1 200); do head -c $i /dev/zero > f$i; done")
      const sizes = yield* Effect.all(
        Array.from({ length: 200 }, (_, i) => Effect.map(fs.stat(`/tmp/c/f${i + 1}`), (a) => a.size)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(sizes, Array.from({ length: 200 }, (_, i) => i + 1))
      // interrupted while its answer is on the way
      yield* Effect.timeoutOption(fs.readDirectory("/tmp/c"), "1 millis")
      assert.strictEqual((yield* fs.stat("/tmp/c/f7")).size, 7)
      assert.strictEqual((yield* fs.readDirectory("/tmp/c")).length, 200)
    }))

  it.scopedLive("lists 1,000 entries", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      yield* sh(sandbox, "mkdir /tmp/many && cd /tmp/many && for i in $(seq 1 1000); do : > f$i; done")
      const entries = yield* sandbox.fs.readDirectory("/tmp/many")
      assert.strictEqual(entries.length, 1000)
      assert.isTrue(entries.every((e) => e.attributes.type === "File"))
    }))

  it.scopedLive(
    "moves 64 MiB both ways intact, with writes out of order and reads at offsets",
    () =>
      Effect.gen(function*() {
        const sandbox = yield* makeSandbox()
        const { fs } = sandbox
        const data = randomBytes(64 * 1024 * 1024)
        const chunk = 256 * 1024
        const started = Date.now()
        const file = yield* fs.open("/tmp/big", { write: true, create: true, truncate: true })
        // as a pipelining SFTP server may call them: a few requests in flight, not strictly in order
        const offsets = Array.from({ length: data.length / chunk }, (_, i) => i * chunk)
        for (let i = 0; i + 1 < offsets.length; i += 8) {
          const j = i + 1
          ;[offsets[i], offsets[j]] = [offsets[j]!, offsets[i]!]
        }
        yield* Effect.forEach(offsets, (offset) => file.write(offset, data.subarray(offset, offset + chunk)), {
          concurrency: 4,
          discard: true
        })
        yield* file.close
        const wrote = Date.now() - started
        const remote = yield* sh(sandbox, "sha256sum /tmp/big")
        assert.strictEqual(remote.stdout.toString().split(" ")[0], createHash("sha256").update(data).digest("hex"))
        const readStarted = Date.now()
        const back = yield* readFile(fs, "/tmp/big")
        const read = Date.now() - readStarted
        assert.isTrue(back.equals(data), "read back what was written")
        console.log(`64 MiB through DockerSandbox fs: write ${wrote} ms, read ${read} ms`)

        const reader = yield* fs.open("/tmp/big", { read: true })
        for (const offset of [12345, 5, 40 * 1024 * 1024 + 7, 100]) {
          const got = yield* reader.read(offset, 1000)
          assert.isTrue(Buffer.from(got).equals(data.subarray(offset, offset + 1000)), `read at ${offset}`)
        }
        yield* reader.close

        const both = yield* fs.open("/tmp/big", { read: true, write: true })
        yield* both.write(10, encoder.encode("XYZ"))
        assert.strictEqual(
          Buffer.from(yield* both.read(9, 5)).toString("latin1"),
          data.toString("latin1", 9, 10) + "XYZ" + data.toString("latin1", 13, 14)
        )
        yield* both.setStat({ size: 100 })
        assert.strictEqual((yield* both.stat).size, 100)
        yield* both.close
        const appender = yield* fs.open("/tmp/big", { write: true, append: true })
        yield* appender.write(0, encoder.encode("tail"))
        yield* appender.close
        assert.strictEqual((yield* fs.stat("/tmp/big")).size, 104)
      }),
    120_000
  )

  it.scopedLive("a write owns its data once it returns: the caller may reuse the buffer", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const buffer = Buffer.alloc(1024 * 1024)
      const file = yield* sandbox.fs.open("/tmp/reuse", { write: true, create: true })
      for (let i = 0; i < 8; i++) {
        buffer.fill(i + 1)
        yield* file.write(i * buffer.length, buffer)
      }
      buffer.fill(0)
      yield* file.close
      const counts = yield* sh(sandbox, "od -An -v -tu1 -w1 /tmp/reuse | sort | uniq -c")
      const lines = counts.stdout.toString().trim().split("\n").map((line) => line.trim().split(/\s+/).map(Number))
      assert.deepStrictEqual(lines, Array.from({ length: 8 }, (_, i) => [1024 * 1024, i + 1]))
    }))

  it.scopedLive("reports a failed write at close", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      yield* sh(sandbox, "mkdir /tmp/small && mount -t tmpfs -o size=64k tmpfs /tmp/small 2>/dev/null || true")
      const mounted = (yield* sh(sandbox, "grep -q ' /tmp/small ' /proc/mounts && echo yes")).stdout.toString()
      // containers are not privileged: fall back to /dev/full, which always fails writes
      const path = mounted === "yes\n" ? "/tmp/small/f" : "/dev/full"
      const file = yield* sandbox.fs.open(path, { write: true, create: true })
      yield* Effect.ignore(file.write(0, new Uint8Array(1024 * 1024)))
      const error = yield* Effect.flip(file.close)
      assert.include(["TransportFailed", "PermissionDenied"], error.reason)
      assert.match(error.message, /space/i)
    }))
})

describe("DockerSandbox connections", () => {
  it.scopedLive("connects to a server on the container's loopback; refusals and bad ports are typed", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      // busybox nc as an echo server, started in the background by one exec
      yield* sh(sandbox, "nc -ll -p 7777 -e cat >/dev/null 2>&1 & sleep 0.2")
      const echoed = yield* exchange(sandbox, "127.0.0.1", 7777, ["ping ", "pong"])
      assert.strictEqual(echoed, "ping pong")
      const many = yield* Effect.all(
        Array.from({ length: 8 }, (_, i) => exchange(sandbox, "127.0.0.1", 7777, [`hello ${i}`])),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(many, Array.from({ length: 8 }, (_, i) => `hello ${i}`))
      const refused = yield* Effect.flip(Effect.scoped(sandbox.connect("127.0.0.1", 1)))
      assert.strictEqual(refused.reason, "ConnectFailed")
      const bad = yield* Effect.flip(Effect.scoped(sandbox.connect("127.0.0.1", 70000)))
      assert.strictEqual(bad.reason, "InvalidArgument")
    }))

  it.scopedLive("the connection helper ends with the sandbox", () =>
    Effect.gen(function*() {
      const name = `sandbox-ssh-test-${randomBytes(4).toString("hex")}`
      const helpers = yield* Effect.scoped(
        Effect.gen(function*() {
          const sandbox = yield* makeSandbox({ name })
          const id = docker(["inspect", "-f", "{{.Id}}", name]).trim()
          yield* Effect.flip(Effect.scoped(sandbox.connect("127.0.0.1", 1)))
          const running = processesWith(`sandbox-ssh-connect:${id}`)
          assert.strictEqual(running.length, 1)
          return running
        })
      )
      const left = yield* eventually(
        () => helpers.filter((pid) => Fs.existsSync(`/proc/${pid}`)),
        (l) => l.length === 0
      )
      assert.deepStrictEqual(left, [])
    }))
})
