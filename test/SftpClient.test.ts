import * as FileSystem from "@effect/platform/FileSystem"
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import * as NFS from "node:fs"
import * as OS from "node:os"
import * as Path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as MemorySandbox from "../src/MemorySandbox.js"
import type { Sandbox, SandboxFile, SandboxFileSystem } from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import * as SftpClient from "../src/SftpClient.js"
import type * as SshClient from "../src/SshClient.js"
import type { SftpError } from "../src/SshError.js"
import { waitUntil } from "./local/support.js"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const encode = (s: string) => new TextEncoder().encode(s)

/** What the server did with the sandbox's files: counted at the `Sandbox` boundary. */
interface FileStats {
  open: number
  readBytes: number
  writtenBytes: number
}

/**
 * Wraps a sandbox so that the test sees every file the SFTP server opens, reads and writes, with
 * an optional delay per write (a slow disk).
 */
const instrument = (sandbox: Sandbox, options: { readonly writeDelayMillis?: number } = {}) => {
  const stats: FileStats = { open: 0, readBytes: 0, writtenBytes: 0 }
  const wrap = (file: SandboxFile): SandboxFile => {
    stats.open++
    let closed = false
    return {
      ...file,
      read: (offset, length) =>
        Effect.tap(file.read(offset, length), (bytes) => Effect.sync(() => (stats.readBytes += bytes.length))),
      write: (offset, data) =>
        Effect.zipRight(
          options.writeDelayMillis === undefined ? Effect.void : Effect.sleep(options.writeDelayMillis),
          Effect.tap(file.write(offset, data), () => Effect.sync(() => (stats.writtenBytes += data.length)))
        ),
      close: Effect.ensuring(
        file.close,
        Effect.sync(() => {
          if (!closed) stats.open--
          closed = true
        })
      )
    }
  }
  const instrumentFs = (fs: SandboxFileSystem): SandboxFileSystem => ({
    ...fs,
    open: (path, flags, mode) => Effect.map(fs.open(path, flags, mode), wrap)
  })
  // the SSH server's SFTP goes through fileSystemFor(user) when the sandbox has it
  const { fileSystemFor } = sandbox
  const instrumented: Sandbox = {
    ...sandbox,
    fs: instrumentFs(sandbox.fs),
    ...(fileSystemFor === undefined ? {} : {
      fileSystemFor: (user: string) => Effect.map(fileSystemFor(user), instrumentFs)
    })
  }
  return { sandbox: instrumented, stats }
}

const backends = [
  { name: "LocalSandbox (none)", make: () => LocalSandbox.make({ isolation: "none" }) },
  {
    name: "MemorySandbox",
    make: () => MemorySandbox.make({ files: { "/tmp/": "" }, handlers: MemorySandbox.builtins })
  }
] as const

describe.each(backends)("SftpClient on $name", (backend) => {
  const withClient = <A, E>(
    f: (client: SshClient.SshClient, sandbox: Sandbox) => Effect.Effect<A, E, Scope.Scope>,
    options: { readonly instrument?: (sandbox: Sandbox) => Sandbox; readonly sftp?: boolean } = {}
  ) =>
    Effect.gen(function*() {
      const base = yield* backend.make()
      const sandbox = options.instrument === undefined ? base : options.instrument(base)
      const client = yield* SandboxSsh.make(sandbox).openClient(
        options.sftp === undefined ? {} : { sftp: options.sftp }
      )
      return yield* f(client, sandbox)
    }).pipe(Effect.scoped)

  const withSftp = <A, E>(
    f: (sftp: SftpClient.SftpClient, client: SshClient.SshClient) => Effect.Effect<A, E, Scope.Scope>,
    options: { readonly instrument?: (sandbox: Sandbox) => Sandbox } = {}
  ) => withClient((client) => Effect.flatMap(client.sftp(), (sftp) => f(sftp, client)), options)

  it.live(
    "round-trips files of 0 B, 1 B, 3 MiB + 1 B and 64 MiB byte for byte",
    () =>
      withSftp((sftp) =>
        Effect.gen(function*() {
          for (const size of [0, 1, 3 * 1024 * 1024 + 1, 64 * 1024 * 1024]) {
            const data = randomBytes(size)
            const path = `file-${size}.bin`
            yield* sftp.write(path, data)
            const info = yield* sftp.stat(path)
            assert.strictEqual(info.size, size)
            assert.strictEqual(info.type, "File")
            const back = yield* sftp.read(path)
            assert.strictEqual(back.length, size)
            assert.strictEqual(sha256(back), sha256(data))
            // Whole-file write truncates what was there.
            yield* sftp.write(path, "short")
            assert.strictEqual(text(yield* sftp.read(path)), "short")
          }
        })
      ),
    120_000
  )

  it.live("writes at an offset without truncating", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        yield* sftp.write("offsets.txt", "alpha------omega")
        yield* sftp.writeAt("offsets.txt", 5, ":ssh:")
        assert.strictEqual(text(yield* sftp.read("offsets.txt")), "alpha:ssh:-omega")
        yield* sftp.writeAt("offsets.txt", 16, "!")
        assert.strictEqual(text(yield* sftp.read("offsets.txt")), "alpha:ssh:-omega!")
        const missing = yield* Effect.flip(sftp.writeAt("no-such-file", 0, "x"))
        assert.strictEqual(missing.reason, "NoSuchFile")
      })
    ))

  it.live("maps SFTP statuses to reasons, with operation, path and the server's message", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        const missing = yield* Effect.flip(sftp.read("missing/file.txt"))
        assert.strictEqual(missing._tag, "SftpError")
        assert.strictEqual(missing.reason, "NoSuchFile")
        assert.strictEqual(missing.path, "missing/file.txt")
        assert.isString(missing.operation)
        assert.isString(missing.detail)
        assert.include(missing.message, "NoSuchFile")
        assert.strictEqual((yield* Effect.flip(sftp.stat("missing"))).reason, "NoSuchFile")
        assert.strictEqual((yield* Effect.flip(sftp.removeFile("missing"))).reason, "NoSuchFile")

        yield* sftp.mkdir("full")
        yield* sftp.write("full/inside", "x")
        const notEmpty = yield* Effect.flip(sftp.removeDir("full"))
        assert.strictEqual(notEmpty.reason, "Failure")
        assert.strictEqual(notEmpty.path, "full")

        const existing = yield* Effect.flip(sftp.mkdir("full"))
        assert.strictEqual(existing.reason, "Failure")

        yield* sftp.write("a.txt", "a")
        yield* sftp.write("b.txt", "b")
        const onto = yield* Effect.flip(sftp.rename("a.txt", "b.txt"))
        assert.strictEqual(onto.reason, "Failure")
        assert.strictEqual(text(yield* sftp.read("b.txt")), "b")
        yield* sftp.rename("a.txt", "b.txt", { overwrite: true })
        assert.strictEqual(text(yield* sftp.read("b.txt")), "a")
        assert.isFalse(yield* sftp.exists("a.txt"))

        yield* sftp.removeFile("full/inside")
        yield* sftp.removeDir("full")
        assert.isFalse(yield* sftp.exists("full"))
      })
    ))

  it.live("symlink(target, linkPath), readLink and realPath", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        yield* sftp.mkdir("dir")
        yield* sftp.write("dir/target.txt", "through the link")
        yield* sftp.symlink("dir/target.txt", "link")
        assert.strictEqual(yield* sftp.readLink("link"), "dir/target.txt")
        assert.strictEqual((yield* sftp.lstat("link")).type, "SymbolicLink")
        assert.strictEqual((yield* sftp.stat("link")).type, "File")
        assert.strictEqual(text(yield* sftp.read("link")), "through the link")
        const cwd = yield* sftp.realPath(".")
        assert.isTrue(cwd.startsWith("/"))
        assert.strictEqual(yield* sftp.realPath("link"), `${cwd}/dir/target.txt`)
        assert.strictEqual(yield* sftp.realPath("dir/../dir/./target.txt"), `${cwd}/dir/target.txt`)
        // A dangling link exists as a link.
        yield* sftp.symlink("nowhere", "dangling")
        assert.isTrue(yield* sftp.exists("dangling"))
        assert.strictEqual((yield* Effect.flip(sftp.stat("dangling"))).reason, "NoSuchFile")
        assert.strictEqual((yield* Effect.flip(sftp.readLink("dir/target.txt"))).operation, "readlink")
      })
    ))

  it.live("readdir lists 1,000 entries with attributes, without . and ..", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        yield* sftp.mkdir("many")
        yield* Effect.forEach(
          Array.from({ length: 1000 }, (_, i) => i),
          (i) => sftp.write(`many/entry-${String(i).padStart(4, "0")}`, "x".repeat(i % 7)),
          { concurrency: 16, discard: true }
        )
        yield* sftp.mkdir("many/sub")
        const entries = yield* sftp.readdir("many")
        assert.strictEqual(entries.length, 1001)
        const names = new Set(entries.map((e) => e.name))
        assert.isFalse(names.has("."))
        assert.isFalse(names.has(".."))
        assert.isTrue(names.has("entry-0999"))
        const entry = entries.find((e) => e.name === "entry-0012")!
        assert.strictEqual(entry.info.type, "File")
        assert.strictEqual(entry.info.size, 12 % 7)
        assert.strictEqual(entries.find((e) => e.name === "sub")!.info.type, "Directory")
        assert.strictEqual((yield* Effect.flip(sftp.readdir("many/entry-0001"))).reason !== undefined, true)
      })
    ))

  it.live("chmod, setstat and stat: mode bits, size and times", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        yield* sftp.write("modes.sh", "#!/bin/sh\n", { mode: 0o600 })
        yield* sftp.chmod("modes.sh", 0o751)
        const info = yield* sftp.stat("modes.sh")
        assert.strictEqual(info.mode & 0o7777, 0o751)
        assert.strictEqual(info.mode & 0o170000, 0o100000)
        yield* sftp.mkdir("private", { mode: 0o700 })
        assert.strictEqual((yield* sftp.stat("private")).mode & 0o777, 0o700)
        assert.strictEqual((yield* sftp.stat("private")).type, "Directory")

        yield* sftp.setstat("modes.sh", { size: 3 })
        assert.strictEqual(text(yield* sftp.read("modes.sh")), "#!/")
        const when = new Date("2001-02-03T04:05:06Z")
        yield* sftp.setstat("modes.sh", { mtime: when })
        assert.strictEqual((yield* sftp.stat("modes.sh")).mtime.getTime(), when.getTime())
        yield* sftp.setstat("modes.sh", { atime: when, mtime: 1_000_000_000 })
        const after = yield* sftp.stat("modes.sh")
        assert.strictEqual(after.atime.getTime(), when.getTime())
        assert.strictEqual(after.mtime.getTime(), 1_000_000_000_000)
      })
    ))

  it.live("announces OpenSSH extensions and the request sizes from limits@openssh.com", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        assert.strictEqual(sftp.extensions["posix-rename@openssh.com"], "1")
        assert.isDefined(sftp.extensions["limits@openssh.com"])
        assert.isAbove(sftp.limits.maxReadLength, 64 * 1024)
        assert.isAbove(sftp.limits.maxWriteLength, 64 * 1024)
        yield* sftp.write("linked", "same inode")
        yield* sftp.link("linked", "hardlink")
        assert.strictEqual(text(yield* sftp.read("hardlink")), "same inode")
        const stats = yield* Effect.either(sftp.statvfs("."))
        if (backend.name.startsWith("LocalSandbox")) {
          assert.isTrue(stats._tag === "Right" && stats.right.blockSize > 0 && stats.right.blocks > 0)
        } else {
          assert.isTrue(stats._tag === "Right" || stats.left.reason === "Unsupported")
        }
      })
    ))

  it.live("runs several SFTP sessions at once on one client", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const sessions = yield* Effect.all(Array.from({ length: 4 }, () => client.sftp()), { concurrency: 4 })
        const datas = sessions.map(() => randomBytes(2 * 1024 * 1024 + 17))
        yield* Effect.forEach(sessions, (sftp, i) => sftp.write(`session-${i}.bin`, datas[i]!), {
          concurrency: "unbounded",
          discard: true
        })
        // Each session reads what another wrote: one sandbox behind them all.
        const back = yield* Effect.forEach(sessions, (sftp, i) => sftp.read(`session-${(i + 1) % 4}.bin`), {
          concurrency: "unbounded"
        })
        back.forEach((bytes, i) => assert.strictEqual(sha256(bytes), sha256(datas[(i + 1) % 4]!)))
        yield* sessions[0]!.close
        // Closing one session leaves the others and the client working.
        assert.strictEqual((yield* sessions[1]!.read("session-0.bin")).length, datas[0]!.length)
        assert.strictEqual((yield* client.exec("true")).status, 0)
      })
    ))

  it.live("close is idempotent; use after close fails with NoConnection; open handles are closed", () => {
    const probe = { stats: undefined as FileStats | undefined }
    return withSftp((sftp) =>
      Effect.gen(function*() {
        const stats = probe.stats!
        yield* sftp.write("held.txt", "held open")
        const handleScope = yield* Scope.make()
        const file = yield* Scope.extend(sftp.open("held.txt", "r"), handleScope)
        assert.strictEqual(text(yield* file.read(0, 4)), "held")
        assert.strictEqual(stats.open, 1)
        yield* sftp.close
        yield* sftp.close
        yield* waitUntil(() => stats.open === 0, "the server closed the handle")
        const error = yield* Effect.flip(sftp.read("held.txt"))
        assert.strictEqual(error.reason, "NoConnection")
        assert.strictEqual((yield* Effect.flip(file.read(0, 4))).reason, "NoConnection")
        assert.strictEqual((yield* Effect.flip(sftp.readdir("."))).reason, "NoConnection")
        yield* Scope.close(handleScope, Exit.void)
      }), {
      instrument: (sandbox) => {
        const { sandbox: wrapped, stats } = instrument(sandbox)
        probe.stats = stats
        return wrapped
      }
    })
  })

  it.live("closing the client fails the session's transfers and requests with NoConnection", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const sftp = yield* client.sftp()
        yield* sftp.write("big.bin", randomBytes(64 * 1024 * 1024))
        const read = yield* Effect.fork(Stream.runDrain(sftp.readStream("big.bin", { chunkSize: 4096 })))
        yield* Effect.sleep("20 millis")
        yield* client.close
        const failed = yield* Fiber.join(read).pipe(Effect.flip)
        assert.strictEqual(failed.reason, "NoConnection")
        assert.strictEqual((yield* Effect.flip(sftp.stat("big.bin"))).reason, "NoConnection")
        yield* sftp.close
        const reopen = yield* Effect.flip(client.sftp())
        assert.strictEqual(reopen._tag, "ConnectionError")
      })
    ))

  it.live("closing the scope ends the session and its handles", () => {
    const probe = { stats: undefined as FileStats | undefined }
    return withClient((client) =>
      Effect.gen(function*() {
        const stats = probe.stats!
        const scope = yield* Scope.make()
        const sftp = yield* Scope.extend(client.sftp(), scope)
        yield* sftp.write("scoped.txt", "x")
        yield* Scope.extend(sftp.open("scoped.txt", "r+"), scope)
        yield* Scope.extend(sftp.open("scoped.txt", "r"), scope)
        assert.strictEqual(stats.open, 2)
        yield* Scope.close(scope, Exit.void)
        yield* waitUntil(() => stats.open === 0, "handles closed")
        assert.strictEqual((yield* Effect.flip(sftp.stat("scoped.txt"))).reason, "NoConnection")
      }), {
      instrument: (sandbox) => {
        const { sandbox: wrapped, stats } = instrument(sandbox)
        probe.stats = stats
        return wrapped
      }
    })
  })

  it.live("interrupting a transfer closes its handle", () => {
    const probe = { stats: undefined as FileStats | undefined }
    return withSftp((sftp) =>
      Effect.gen(function*() {
        const stats = probe.stats!
        const data = randomBytes(32 * 1024 * 1024)
        const write = yield* Effect.fork(sftp.write("interrupted.bin", data))
        yield* waitUntil(() => stats.writtenBytes > 0, "the write started")
        yield* Fiber.interrupt(write)
        yield* waitUntil(() => stats.open === 0, "the write handle was closed")

        yield* sftp.write("whole.bin", data)
        const read = yield* Effect.fork(Stream.runDrain(sftp.readStream("whole.bin", { chunkSize: 4096 })))
        yield* waitUntil(() => stats.readBytes > 0, "the read started")
        yield* Fiber.interrupt(read)
        yield* waitUntil(() => stats.open === 0, "the read handle was closed")
        // The session is still usable.
        assert.strictEqual((yield* sftp.stat("whole.bin")).size, data.length)
      }), {
      instrument: (sandbox) => {
        const { sandbox: wrapped, stats } = instrument(sandbox, { writeDelayMillis: 1 })
        probe.stats = stats
        return wrapped
      }
    })
  }, 60_000)

  it.live("readStream: offset, length, chunk size, and bounded read-ahead", () => {
    const probe = { stats: undefined as FileStats | undefined }
    return withSftp((sftp) =>
      Effect.gen(function*() {
        const stats = probe.stats!
        const data = randomBytes(16 * 1024 * 1024 + 3)
        yield* sftp.write("stream.bin", data)
        const all = yield* Stream.runCollect(sftp.readStream("stream.bin"))
        assert.strictEqual(sha256(Buffer.concat([...all])), sha256(data))

        const slice = yield* Stream.runCollect(
          sftp.readStream("stream.bin", { offset: 1000, length: 70_000, chunkSize: 8192 })
        )
        assert.isTrue(Chunk.every(slice, (chunk) => chunk.length <= 8192))
        assert.strictEqual(sha256(Buffer.concat([...slice])), sha256(data.subarray(1000, 71_000)))
        assert.strictEqual(
          Chunk.size(yield* Stream.runCollect(sftp.readStream("stream.bin", { offset: data.length }))),
          0
        )

        // A consumer that stops pulling stops the reads: at most 64 requests ahead of it.
        const before = stats.readBytes
        yield* Effect.scoped(Effect.gen(function*() {
          const pull = yield* Stream.toPull(sftp.readStream("stream.bin", { chunkSize: 4096 }))
          for (let i = 0; i < 8; i++) yield* pull
          yield* Effect.sleep("300 millis")
          const read = stats.readBytes - before
          assert.isAtLeast(read, 8 * 4096)
          assert.isAtMost(read, (8 + 64 + 1) * 4096)
        }))
      }), {
      instrument: (sandbox) => {
        const { sandbox: wrapped, stats } = instrument(sandbox)
        probe.stats = stats
        return wrapped
      }
    })
  }, 60_000)

  it.live("writeSink: flags, coalescing of small chunks, and backpressure on a slow server", () => {
    const probe = { stats: undefined as FileStats | undefined }
    return withSftp((sftp) =>
      Effect.gen(function*() {
        const stats = probe.stats!
        // Many tiny chunks arrive as one file.
        const words = Array.from({ length: 5000 }, (_, i) => `${i},`)
        yield* Stream.run(Stream.fromIterable(words.map(encode)), sftp.writeSink("tiny.txt"))
        assert.strictEqual(text(yield* sftp.read("tiny.txt")), words.join(""))

        yield* Stream.run(Stream.make(encode("-appended")), sftp.writeSink("tiny.txt", { flags: "a" }))
        assert.isTrue(text(yield* sftp.read("tiny.txt")).endsWith("4999,-appended"))
        yield* Stream.run(Stream.make(encode("XY")), sftp.writeSink("tiny.txt", { flags: "r+", offset: 1 }))
        assert.isTrue(text(yield* sftp.read("tiny.txt")).startsWith("0XY,"))
        const exclusive = yield* Effect.flip(
          Stream.run(Stream.make(encode("x")), sftp.writeSink("tiny.txt", { flags: "wx" }))
        )
        assert.strictEqual(exclusive.reason, "Failure")

        // The producer can run ahead of the server only by the bounded window.
        const chunk = randomBytes(64 * 1024)
        const total = 64 * 1024 * 1024
        let produced = 0
        let maxLead = 0
        const producer = Stream.repeatEffect(Effect.sync(() => {
          produced += chunk.length
          maxLead = Math.max(maxLead, produced - stats.writtenBytes)
          return chunk
        })).pipe(Stream.take(total / chunk.length))
        const before = stats.writtenBytes
        yield* Stream.run(producer, sftp.writeSink("slow.bin"))
        assert.strictEqual(stats.writtenBytes - before, total)
        assert.strictEqual((yield* sftp.stat("slow.bin")).size, total)
        const window = 64 * sftp.limits.maxWriteLength + sftp.limits.maxWriteLength + chunk.length
        assert.isAtMost(maxLead - before, window)
        assert.isBelow(window, total / 2)
      }), {
      instrument: (sandbox) => {
        const { sandbox: wrapped, stats } = instrument(sandbox, { writeDelayMillis: 1 })
        probe.stats = stats
        return wrapped
      }
    })
  }, 60_000)

  it.live("upload and download a directory tree with progress", () =>
    withSftp((sftp) =>
      Effect.gen(function*() {
        const localRoot = yield* Effect.acquireRelease(
          Effect.sync(() => NFS.mkdtempSync(Path.join(OS.tmpdir(), "sftp-tree-"))),
          (dir) => Effect.sync(() => NFS.rmSync(dir, { recursive: true, force: true }))
        )
        const source = Path.join(localRoot, "source")
        const files: Record<string, Buffer> = {
          "top.txt": Buffer.from("top level\n"),
          "empty": Buffer.alloc(0),
          "a/one.bin": randomBytes(300 * 1024),
          "a/b/two.bin": randomBytes(1024 * 1024 + 5),
          "a/b/c/three.txt": Buffer.from("deep\n"),
          "d/four.bin": randomBytes(70_000)
        }
        for (const [name, content] of Object.entries(files)) {
          NFS.mkdirSync(Path.dirname(Path.join(source, name)), { recursive: true })
          NFS.writeFileSync(Path.join(source, name), content)
        }
        NFS.mkdirSync(Path.join(source, "empty-dir"))
        NFS.chmodSync(Path.join(source, "top.txt"), 0o750)
        NFS.symlinkSync("a/one.bin", Path.join(source, "link"))
        const totalBytes = Object.values(files).reduce((n, b) => n + b.length, 0)

        const reports: Array<SftpClient.TransferProgress> = []
        const summary = yield* sftp.upload(source, "uploaded", {
          concurrency: 3,
          onProgress: (p) => Effect.sync(() => reports.push(p))
        })
        assert.deepStrictEqual(summary, { files: 6, directories: 6, symlinks: 1, bytes: totalBytes })
        for (const [name, content] of Object.entries(files)) {
          assert.strictEqual(sha256(yield* sftp.read(`uploaded/${name}`)), sha256(content), name)
        }
        assert.strictEqual((yield* sftp.stat("uploaded/top.txt")).mode & 0o777, 0o750)
        assert.strictEqual((yield* sftp.stat("uploaded/empty-dir")).type, "Directory")
        assert.strictEqual(yield* sftp.readLink("uploaded/link"), "a/one.bin")
        // Every file reported, each reaching its size, and the running total reaching the whole.
        for (const [name, content] of Object.entries(files)) {
          const last = reports.filter((r) => r.path === Path.join(source, name)).at(-1)
          assert.isDefined(last, name)
          assert.strictEqual(last!.bytes, content.length)
          assert.strictEqual(last!.totalBytes, content.length)
        }
        assert.strictEqual(Math.max(...reports.map((r) => r.transferredBytes)), totalBytes)
        assert.isTrue(reports.every((r) => r.expectedBytes === totalBytes))
        assert.isTrue(reports.every((r, i) => i === 0 || r.transferredBytes >= reports[i - 1]!.transferredBytes))

        const target = Path.join(localRoot, "downloaded")
        let downloaded = 0
        const back = yield* sftp.download("uploaded", target, {
          onProgress: (p) => Effect.sync(() => (downloaded = p.transferredBytes))
        })
        assert.deepStrictEqual(back, summary)
        assert.strictEqual(downloaded, totalBytes)
        for (const [name, content] of Object.entries(files)) {
          assert.strictEqual(sha256(NFS.readFileSync(Path.join(target, name))), sha256(content), name)
        }
        assert.strictEqual(NFS.statSync(Path.join(target, "top.txt")).mode & 0o777, 0o750)
        assert.strictEqual(NFS.readlinkSync(Path.join(target, "link")), "a/one.bin")
        assert.isTrue(NFS.statSync(Path.join(target, "empty-dir")).isDirectory())

        // A single file, both ways.
        yield* sftp.upload(Path.join(source, "a/b/two.bin"), "single.bin")
        yield* sftp.download("single.bin", Path.join(localRoot, "single.bin"))
        assert.strictEqual(sha256(NFS.readFileSync(Path.join(localRoot, "single.bin"))), sha256(files["a/b/two.bin"]!))

        const missingLocal = yield* Effect.flip(sftp.upload(Path.join(localRoot, "nope"), "x"))
        assert.strictEqual(missingLocal._tag, "SystemError")
        const missingRemote = yield* Effect.flip(sftp.download("nope", Path.join(localRoot, "nope")))
        assert.strictEqual(missingRemote._tag, "SftpError")
        assert.strictEqual((missingRemote as SftpError).reason, "NoSuchFile")
      })
    ), 60_000)

  describe("FileSystem layer", () => {
    const withFs = <A, E>(
      f: (fs: FileSystem.FileSystem, sftp: SftpClient.SftpClient) => Effect.Effect<A, E, Scope.Scope>
    ) =>
      withSftp((sftp) =>
        Effect.flatMap(
          Effect.provide(FileSystem.FileSystem, SftpClient.layerFileSystem(sftp)),
          (fs) => f(fs, sftp)
        )
      )
    const lorem = "lorem ipsum dolar sit amet"

    it.live("readFile and writeFile round trip, strings and bytes; NotFound", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          yield* fs.writeFileString("text.txt", lorem)
          assert.strictEqual(yield* fs.readFileString("text.txt"), lorem)
          const bytes = randomBytes(1024 * 1024 + 1)
          yield* fs.writeFile("bytes.bin", bytes)
          assert.strictEqual(sha256(yield* fs.readFile("bytes.bin")), sha256(bytes))
          yield* fs.writeFileString("text.txt", "-more", { flag: "a" })
          assert.strictEqual(yield* fs.readFileString("text.txt"), `${lorem}-more`)
          const exclusive = yield* Effect.flip(fs.writeFileString("text.txt", "x", { flag: "wx" }))
          assert.isTrue(exclusive._tag === "SystemError" && exclusive.reason === "AlreadyExists")
          const missing = yield* Effect.flip(fs.readFile("missing.txt"))
          assert.isTrue(missing._tag === "SystemError" && missing.reason === "NotFound")
          assert.strictEqual(missing._tag === "SystemError" && missing.pathOrDescriptor, "missing.txt")
          assert.isTrue(yield* fs.exists("text.txt"))
          assert.isFalse(yield* fs.exists("missing.txt"))
        })
      ))

    it.live("makeTempDirectory stays, makeTempDirectoryScoped and makeTempFileScoped are removed with their scope", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          const kept = yield* Effect.scoped(fs.makeTempDirectory({ prefix: "kept-" }))
          assert.strictEqual((yield* fs.stat(kept)).type, "Directory")
          assert.isTrue(Path.posix.basename(kept).startsWith("kept-"))
          yield* fs.remove(kept, { recursive: true })

          let dir = ""
          let file = ""
          yield* Effect.scoped(Effect.gen(function*() {
            dir = yield* fs.makeTempDirectoryScoped()
            yield* fs.writeFileString(`${dir}/inside`, "x")
            file = yield* fs.makeTempFileScoped({ suffix: ".txt" })
            assert.isTrue(file.endsWith(".txt"))
            assert.strictEqual((yield* fs.stat(file)).type, "File")
            assert.strictEqual((yield* fs.stat(dir)).type, "Directory")
          }))
          const gone = yield* Effect.flip(fs.stat(dir))
          assert.isTrue(gone._tag === "SystemError" && gone.reason === "NotFound")
          assert.isFalse(yield* fs.exists(file))
          const tempFile = yield* fs.makeTempFile()
          assert.strictEqual(Number((yield* fs.stat(tempFile)).size), 0)
          yield* fs.remove(Path.posix.dirname(tempFile), { recursive: true })
        })
      ))

    it.live("truncate, stat size and type", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          yield* fs.writeFileString("t.txt", "hello world")
          const info = yield* fs.stat("t.txt")
          assert.strictEqual(info.type, "File")
          assert.strictEqual(info.size, FileSystem.Size(11))
          assert.isTrue(Option.isSome(info.mtime))
          yield* fs.truncate("t.txt", 5)
          assert.strictEqual(yield* fs.readFileString("t.txt"), "hello")
          yield* fs.truncate("t.txt")
          assert.strictEqual(yield* fs.readFileString("t.txt"), "")
          yield* fs.makeDirectory("d")
          assert.strictEqual((yield* fs.stat("d")).type, "Directory")
        })
      ))

    it.live("open tracks the cursor when reading; stream with offset and bytesToRead", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          yield* fs.writeFileString("lorem.txt", lorem)
          const file = yield* fs.open("lorem.txt")
          const next = (n: number) => Effect.map(Effect.flatten(file.readAlloc(n)), text)
          assert.strictEqual(yield* next(5), "lorem")
          yield* file.seek(7, "current")
          assert.strictEqual(yield* next(5), "dolar")
          yield* file.seek(1, "current")
          assert.strictEqual(yield* next(8), "sit amet")
          assert.isTrue(Option.isNone(yield* file.readAlloc(4)))
          yield* file.seek(0, "start")
          assert.strictEqual(yield* next(11), "lorem ipsum")
          const buffer = new Uint8Array(6)
          assert.strictEqual(yield* file.read(buffer), FileSystem.Size(6))
          assert.strictEqual(text(buffer), " dolar")
          assert.strictEqual((yield* file.stat).size, FileSystem.Size(lorem.length))
          const slice = yield* fs.stream("lorem.txt", { offset: 6, bytesToRead: 5 }).pipe(
            Stream.decodeText(),
            Stream.mkString
          )
          assert.strictEqual(slice, "ipsum")
        })
      ))

    it.live("open tracks the cursor when writing", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          const path = yield* fs.makeTempFileScoped()
          const file = yield* fs.open(path, { flag: "w+" })
          yield* file.write(encode("lorem ipsum"))
          yield* file.write(encode(" "))
          yield* file.write(encode("dolor sit amet"))
          assert.strictEqual(yield* fs.readFileString(path), "lorem ipsum dolor sit amet")
          yield* file.seek(-4, "current")
          yield* file.write(encode("hello world"))
          assert.strictEqual(yield* fs.readFileString(path), "lorem ipsum dolor sit hello world")
          yield* file.seek(6, "start")
          yield* file.writeAll(encode("blabl"))
          assert.strictEqual(yield* fs.readFileString(path), "lorem blabl dolor sit hello world")
          yield* file.sync
        })
      ))

    it.live("append mode writes at the end and keeps a read cursor", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          const path = yield* fs.makeTempFileScoped()
          const file = yield* fs.open(path, { flag: "a+" })
          yield* file.write(encode("foo"))
          yield* file.seek(0, "start")
          yield* file.write(encode("bar"))
          assert.strictEqual(yield* fs.readFileString(path), "foobar")
          assert.strictEqual(text(Option.getOrThrow(yield* file.readAlloc(3))), "foo")
          yield* file.write(encode("baz"))
          assert.strictEqual(yield* fs.readFileString(path), "foobarbaz")
          assert.strictEqual(text(Option.getOrThrow(yield* file.readAlloc(6))), "barbaz")
        })
      ))

    it.live("truncating through a File keeps or moves the cursor", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          const path = yield* fs.makeTempFileScoped()
          const file = yield* fs.open(path, { flag: "w+" })
          yield* file.write(encode("lorem ipsum dolor sit amet"))
          yield* file.seek(6, "start")
          yield* file.truncate(11)
          assert.strictEqual<unknown>(yield* file.seek(0, "current"), FileSystem.Size(6))
          yield* file.seek(20, "start")
          yield* file.truncate(11)
          assert.strictEqual<unknown>(yield* file.seek(0, "current"), FileSystem.Size(11))
          assert.strictEqual(yield* fs.readFileString(path), "lorem ipsum")
        })
      ))

    it.live("makeDirectory (recursive), readDirectory (recursive), remove (recursive), rename, copy", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          yield* fs.makeDirectory("tree/a/b/c", { recursive: true })
          yield* fs.makeDirectory("tree/a/b/c", { recursive: true })
          const exists = yield* Effect.flip(fs.makeDirectory("tree/a"))
          assert.isTrue(exists._tag === "SystemError" && exists.reason === "AlreadyExists")
          const noParent = yield* Effect.flip(fs.makeDirectory("nowhere/x"))
          assert.isTrue(noParent._tag === "SystemError" && noParent.reason === "NotFound")
          yield* fs.writeFileString("tree/a/one.txt", "1")
          yield* fs.writeFileString("tree/a/b/c/two.txt", "2")
          assert.deepStrictEqual((yield* fs.readDirectory("tree/a")).sort(), ["b", "one.txt"])
          assert.deepStrictEqual(
            (yield* fs.readDirectory("tree", { recursive: true })).sort(),
            ["a", "a/b", "a/b/c", "a/b/c/two.txt", "a/one.txt"]
          )

          yield* fs.copy("tree", "copied")
          assert.strictEqual(yield* fs.readFileString("copied/a/b/c/two.txt"), "2")
          yield* fs.copyFile("tree/a/one.txt", "copied/one-copy.txt")
          assert.strictEqual(yield* fs.readFileString("copied/one-copy.txt"), "1")

          // Node's rename replaces an existing file.
          yield* fs.writeFileString("old.txt", "old")
          yield* fs.writeFileString("new.txt", "new")
          yield* fs.rename("old.txt", "new.txt")
          assert.strictEqual(yield* fs.readFileString("new.txt"), "old")
          assert.isFalse(yield* fs.exists("old.txt"))

          const notRecursive = yield* Effect.flip(fs.remove("tree"))
          assert.strictEqual(notRecursive._tag, "SystemError")
          yield* fs.remove("tree", { recursive: true })
          assert.isFalse(yield* fs.exists("tree"))
          yield* fs.remove("tree", { force: true })
          const missing = yield* Effect.flip(fs.remove("tree"))
          assert.isTrue(missing._tag === "SystemError" && missing.reason === "NotFound")
        })
      ))

    it.live("symlink, readLink, realPath, chmod, access, utimes, link; watch is not supported", () =>
      withFs((fs, sftp) =>
        Effect.gen(function*() {
          yield* fs.writeFileString("target.txt", "via link")
          yield* fs.symlink("target.txt", "alias")
          assert.strictEqual(yield* fs.readLink("alias"), "target.txt")
          assert.strictEqual(yield* fs.readFileString("alias"), "via link")
          const cwd = yield* sftp.realPath(".")
          assert.strictEqual(yield* fs.realPath("alias"), `${cwd}/target.txt`)
          const twice = yield* Effect.flip(fs.symlink("target.txt", "alias"))
          assert.isTrue(twice._tag === "SystemError" && twice.reason === "AlreadyExists")

          yield* fs.chmod("target.txt", 0o640)
          assert.strictEqual((yield* fs.stat("target.txt")).mode & 0o777, 0o640)
          yield* fs.access("target.txt", { readable: true, writable: true })
          const noAccess = yield* Effect.flip(fs.access("missing"))
          assert.isTrue(noAccess._tag === "SystemError" && noAccess.reason === "NotFound")

          const when = new Date("2020-01-01T00:00:00Z")
          yield* fs.utimes("target.txt", when, when)
          assert.strictEqual(Option.getOrThrow((yield* fs.stat("target.txt")).mtime).getTime(), when.getTime())

          yield* fs.link("target.txt", "hard.txt")
          assert.strictEqual(yield* fs.readFileString("hard.txt"), "via link")

          const watched = yield* Effect.flip(Stream.runDrain(fs.watch(".")))
          assert.strictEqual(watched._tag, "SystemError")
        })
      ))

    it.live("sink and stream move large files through the layer", () =>
      withFs((fs) =>
        Effect.gen(function*() {
          const data = randomBytes(8 * 1024 * 1024 + 11)
          yield* Stream.run(
            Stream.fromIterable(
              Array.from({ length: 9 }, (_, i) => data.subarray(i * 1024 * 1024, (i + 1) * 1024 * 1024))
            ),
            fs.sink("sunk.bin")
          )
          const back = yield* Stream.runCollect(fs.stream("sunk.bin"))
          assert.strictEqual(sha256(Buffer.concat([...back])), sha256(data))
        })
      ))
  })

  it.live("the server refuses SFTP when the client was opened with sftp: false", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(client.sftp())
        assert.strictEqual(error._tag, "SftpError")
        assert.strictEqual((error as SftpError).reason, "Unsupported")
        // The connection itself is fine.
        assert.strictEqual((yield* client.exec("true")).status, 0)
      }), { sftp: false }))
})
