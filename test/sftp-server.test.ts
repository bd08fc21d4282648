/**
 * Our SFTP server (src/internal/server/sftp) against the real OpenSSH clients — `sftp -D` over
 * pipes, with OpenSSH's own `sftp-server` as the reference — and byte by byte (malformed packets,
 * extensions, ordering, bounds).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as FileCallbacks from "../src/internal/fileCallbacks.js"
import { DEFAULT_MAX_IN_FLIGHT } from "../src/internal/sftpProtocol.js"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as MemorySandbox from "../src/MemorySandbox.js"
import type { SandboxFile, SandboxFileSystem } from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import { SandboxError } from "../src/SshError.js"
import { waitUntil } from "./local/support.js"
import { makeOpenSshSetup, run } from "./support/openssh.js"
import type { Fields } from "./support/sftpPackets.js"
import { attrs, init, request, startSession, status, str, T, u32, u64 } from "./support/sftpPackets.js"
import { localServer, memoryServer, opensshServer, runSftp, tempDir } from "./support/sftpStdio.js"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")
const sha256File = (path: string) => sha256(Fs.readFileSync(path))

const FX_OK = 0
const FX_EOF = 1
const FX_NO_SUCH_FILE = 2
const FX_PERMISSION_DENIED = 3
const FX_FAILURE = 4
const FX_OP_UNSUPPORTED = 8

const memoryFs = Effect.map(MemorySandbox.make(), (sandbox) => sandbox.fs)

// --- the real client over pipes -----------------------------------------------------------------

describe("sftp -D against our server", () => {
  it.scopedLive("puts and gets 0 B, 1 B and 3 MiB + 1 B files byte-exact, and resumes at offsets", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("sftp-test-")
      const big = randomBytes(3 * 1024 * 1024 + 1)
      Fs.writeFileSync(Path.join(dir, "zero"), "")
      Fs.writeFileSync(Path.join(dir, "one"), "x")
      Fs.writeFileSync(Path.join(dir, "big"), big)
      // A partial upload and a partial download, which reput/reget complete from their sizes.
      Fs.writeFileSync(Path.join(dir, "half"), big.subarray(0, 1536 * 1024 + 7))
      Fs.writeFileSync(Path.join(dir, "reget"), big.subarray(0, 1024 * 1024 - 3))
      const result = yield* runSftp(
        memoryServer,
        [
          "put zero",
          "put one",
          "put big",
          "put half part",
          "reput big part",
          "get zero zero.back",
          "get one one.back",
          "get big big.back",
          "get part part.back",
          "reget big reget",
          "ls -l"
        ].join("\n"),
        dir
      )
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(Fs.statSync(Path.join(dir, "zero.back")).size, 0)
      assert.strictEqual(Fs.readFileSync(Path.join(dir, "one.back"), "utf8"), "x")
      for (const name of ["big.back", "part.back", "reget"]) {
        assert.strictEqual(sha256File(Path.join(dir, name)), sha256(big), name)
      }
      assert.match(result.stdout, /-rw-r--r-- +1 root +root +3145729 \w{3} [ \d]\d \d\d:\d\d big\n/)
      assert.match(result.stdout, /-rw-r--r-- +1 root +root +0 \w{3} [ \d]\d \d\d:\d\d zero\n/)
    }))

  it.scopedLive("mkdir, rename onto an existing file, ln -s, ln, chmod, ls -l, df, rm, rmdir", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("sftp-test-")
      Fs.writeFileSync(Path.join(dir, "empty"), "")
      const result = yield* runSftp(
        memoryServer,
        [
          "pwd",
          "mkdir d",
          "put empty d/empty",
          "rename hello.txt d/greeting",
          "put empty other",
          // OpenSSH's client uses posix-rename@openssh.com when offered: the target is replaced
          "rename other d/greeting",
          "ln -s d/greeting link",
          "ln d/empty d/hard",
          "chmod 600 d/empty",
          "ls -l d",
          "ls -l link",
          "df",
          "-rmdir d",
          "rm d/empty",
          "rm d/hard",
          "rm d/greeting",
          "rm link",
          "rmdir d",
          "ls -la"
        ].join("\n"),
        dir
      )
      assert.strictEqual(result.code, 0, result.stderr)
      const out = result.stdout
      assert.include(out, "Remote working directory: /root\n")
      assert.match(out, /-rw------- +2 root +root +0 .* empty\n/)
      assert.match(out, /-rw-r--r-- +1 root +root +0 .* greeting\n/) // replaced by the empty "other"
      assert.match(out, /-rw------- +2 root +root +0 .* hard\n/)
      // `ls -l <path>` stats through the link and formats client-side (no link count, numeric ids)
      assert.match(out, /-rw-r--r-- +\? 0 +0 +0 .* link\n/)
      assert.match(out, /Size +Used +Avail +\(root\) +%Capacity\n +\d+ +\d+ +\d+ +\d+ +\d+%\n/)
      assert.include(result.stderr, `remote rmdir "/root/d": Failure`)
      const listing = out.slice(out.lastIndexOf("sftp> ls -la"))
      assert.match(listing, /drwxr-xr-x +2 root +root +4096 .* \.\n/)
      assert.match(listing, /drwxr-xr-x +\d+ root +root +4096 .* \.\.\n/)
      assert.strictEqual(listing.trim().split("\n").length, 3)
    }))

  it.scopedLive("put -p keeps times and modes (SETSTAT), put -f syncs (fsync), put -R and get -R recurse", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("sftp-test-")
      const root = yield* tempDir("sftp-root-")
      Fs.mkdirSync(Path.join(dir, "tree/sub"), { recursive: true })
      Fs.writeFileSync(Path.join(dir, "tree/a"), "alpha")
      Fs.writeFileSync(Path.join(dir, "tree/sub/b"), randomBytes(300_000))
      Fs.writeFileSync(Path.join(dir, "stamped"), "old")
      Fs.chmodSync(Path.join(dir, "stamped"), 0o640)
      Fs.utimesSync(Path.join(dir, "stamped"), 1_000_000_000, 1_000_000_000)
      const result = yield* runSftp(
        localServer(root),
        ["put -p stamped", "put -f tree/a synced", "put -R tree", "get -R tree back"].join("\n"),
        dir
      )
      assert.strictEqual(result.code, 0, result.stderr)
      const stamped = Fs.statSync(Path.join(root, "stamped"))
      assert.strictEqual(stamped.mtimeMs, 1_000_000_000_000)
      assert.strictEqual(stamped.mode & 0o777, 0o640)
      assert.strictEqual(Fs.readFileSync(Path.join(root, "synced"), "utf8"), "alpha")
      for (const file of ["a", "sub/b"]) {
        const original = sha256File(Path.join(dir, "tree", file))
        assert.strictEqual(sha256File(Path.join(root, "tree", file)), original)
        assert.strictEqual(sha256File(Path.join(dir, "back", file)), original)
      }
    }))

  it.scopedLive("answers like OpenSSH's sftp-server: same output, errors and resulting tree", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("sftp-test-")
      const ours = Path.join(dir, "ours")
      const reference = Path.join(dir, "reference")
      for (const root of [ours, reference]) {
        Fs.mkdirSync(Path.join(root, "sub"), { recursive: true })
        Fs.writeFileSync(Path.join(root, "a"), "one\n")
        Fs.writeFileSync(Path.join(root, "b"), "two\n")
        Fs.writeFileSync(Path.join(root, "sub/c"), "three\n")
      }
      const batch = [
        "rename a b",
        "-rename nope x",
        "-get nope",
        "-rm nope",
        "-rmdir nope",
        "-rmdir sub",
        "-mkdir sub",
        "-mkdir x/y",
        "mkdir d",
        "ln -s b sym",
        "-ln -s b sym",
        "ln b hard",
        "-ln nope hard2",
        "chmod 600 b",
        "-chmod 600 nope",
        "-cd nope",
        "-ls nope",
        "-put nope",
        "get sym sym.copy",
        "lls -l sym.copy",
        "ls -1 sub",
        "rm hard",
        "rmdir d",
        "cd sub",
        "pwd",
        "get c",
        "lls c"
      ].join("\n")
      const mine = yield* runSftp(localServer(ours), batch, ours)
      const theirs = yield* runSftp(opensshServer, batch, reference)
      // the two runs may straddle a minute
      const normalize = (text: string, root: string) =>
        text.replaceAll(root, "<root>").replace(/\w{3} [ \d]\d \d\d:\d\d/g, "<time>")
      assert.strictEqual(mine.code, theirs.code)
      assert.strictEqual(normalize(mine.stdout, ours), normalize(theirs.stdout, reference))
      assert.strictEqual(normalize(mine.stderr, ours), normalize(theirs.stderr, reference))
      const tree = (root: string): Array<string> =>
        (Fs.readdirSync(root, { recursive: true }) as Array<string>).sort().map((name) => {
          const stats = Fs.lstatSync(Path.join(root, name))
          const link = stats.isSymbolicLink() ? ` -> ${Fs.readlinkSync(Path.join(root, name))}` : ""
          return `${name} ${stats.mode.toString(8)} ${stats.isDirectory() ? "" : stats.size} ${stats.nlink}${link}`
        })
      assert.deepStrictEqual(tree(ours), tree(reference))
    }))
})

// --- the real clients over SSH -------------------------------------------------------------------

describe("OpenSSH sftp and scp over SSH", () => {
  it.scopedLive("sftp ends at bye and scp (SFTP mode) exits 0 both ways", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const root = yield* tempDir("sftp-root-")
      const sandbox = yield* LocalSandbox.make({ root, isolation: "none" })
      const server = yield* SandboxSsh.make(sandbox).prepareServer({
        hostKeyPath: Path.join(setup.home, "host_key"),
        authorizedKeysPath: Path.join(setup.home, "authorized_keys")
      })
      const listener = yield* server.listen({ port: 0 })
      setup.trustHost(`[127.0.0.1]:${listener.port}`, server.hostKey.publicKey)
      const data = randomBytes(5 * 1024 * 1024 + 3)
      const local = Path.join(setup.dir, "payload")
      Fs.writeFileSync(local, data)
      const batch = Path.join(setup.dir, "batch")
      Fs.writeFileSync(batch, `put ${local} up\nget up ${local}.down\ndf\nbye\n`)
      const sftp = yield* run(
        "sftp",
        [...setup.sshOptions, "-P", String(listener.port), "-b", batch, "root@127.0.0.1"],
        {
          timeoutMs: 30_000
        }
      )
      assert.strictEqual(sftp.code, 0, sftp.stderr)
      assert.strictEqual(sha256File(Path.join(root, "up")), sha256(data))
      assert.strictEqual(sha256File(`${local}.down`), sha256(data))

      const scpUp = yield* run("scp", [...setup.sshOptions, "-P", String(listener.port), local, "root@127.0.0.1:scp"])
      assert.strictEqual(scpUp.code, 0, scpUp.stderr)
      assert.strictEqual(sha256File(Path.join(root, "scp")), sha256(data))
      const scpDown = yield* run("scp", [
        ...setup.sshOptions,
        "-P",
        String(listener.port),
        "root@127.0.0.1:scp",
        `${local}.scp`
      ])
      assert.strictEqual(scpDown.code, 0, scpDown.stderr)
      assert.strictEqual(sha256File(`${local}.scp`), sha256(data))
    }))
})

// --- the in-process client ------------------------------------------------------------------------

/** `fs` with every file it opens passed through `wrap`. */
const withFiles = (fs: SandboxFileSystem, wrap: (file: SandboxFile) => SandboxFile): SandboxFileSystem => ({
  ...fs,
  open: (path, flags, mode) => Effect.map(fs.open(path, flags, mode), wrap)
})

describe("SandboxSsh.openClient's SFTP (ssh2 client) against our server", () => {
  it.scopedLive("sees the extensions and 255 KiB limits, and its requests reach the sandbox at that size", () =>
    Effect.gen(function*() {
      const sandbox = yield* MemorySandbox.make()
      const probe = instrumented(sandbox.fs)
      const sizes: Array<number> = []
      const fs = withFiles(probe.fs, (file) => ({
        ...file,
        write: (offset, data) => Effect.zipRight(Effect.sync(() => sizes.push(data.length)), file.write(offset, data))
      }))
      const client = yield* SandboxSsh.make({ ...sandbox, fs }).openClient()
      const sftp = yield* client.sftp()
      assert.deepStrictEqual(Object.keys(sftp.extensions), [
        "posix-rename@openssh.com",
        "statvfs@openssh.com",
        "fstatvfs@openssh.com",
        "hardlink@openssh.com",
        "fsync@openssh.com",
        "limits@openssh.com"
      ])
      assert.deepStrictEqual(sftp.limits, { maxReadLength: 261120, maxWriteLength: 261120 })
      const data = randomBytes(2 * 1024 * 1024 + 5)
      yield* sftp.write("blob", data)
      assert.strictEqual(sha256(yield* sftp.read("blob")), sha256(data))
      assert.strictEqual(Math.max(...sizes), 261120)
      assert.strictEqual(yield* sftp.realPath("."), "/root")
      yield* sftp.write("other", "x")
      yield* sftp.rename("other", "blob", { overwrite: true })
      assert.strictEqual(Buffer.from(yield* sftp.read("blob")).toString(), "x")
      yield* sftp.close
      assert.strictEqual(probe.counters.closed, probe.counters.opened)
    }))

  it.scopedLive("reads whole files and streams exactly from a server that answers with less than asked", () =>
    Effect.gen(function*() {
      const sandbox = yield* MemorySandbox.make()
      // a file whose reads return at most 1000 bytes, as a server may (SFTP v3 allows short DATA)
      let shortReads = 0
      const fs = withFiles(sandbox.fs, (file) => ({
        ...file,
        read: (offset, length) =>
          Effect.map(file.read(offset, Math.min(length, 1000)), (bytes) => {
            if (length > 1000 && bytes.length === 1000) shortReads++
            return bytes
          })
      }))
      const client = yield* SandboxSsh.make({ ...sandbox, fs }).openClient()
      const sftp = yield* client.sftp()
      const data = randomBytes(600 * 1024 + 7)
      yield* sftp.write("short", data)
      assert.strictEqual(sha256(yield* sftp.read("short")), sha256(data))
      const streamed = yield* Stream.runCollect(sftp.readStream("short"))
      assert.strictEqual(sha256(Buffer.concat(Chunk.toReadonlyArray(streamed))), sha256(data))
      assert.isAbove(shortReads, 100, "the server answered short")
    }))
})

// --- byte by byte ---------------------------------------------------------------------------------

/** A file system whose calls can be held, counted and made to fail. */
/**
 * `file` offering its `read` and `write` as callbacks too (`fileCallbacks.ts`), as the local
 * sandbox's files do: the server then takes its callback path for READ and WRITE.
 */
const withCallbacks = (file: SandboxFile): SandboxFile => {
  const error = (exit: Exit.Exit<unknown, SandboxError>) =>
    Exit.isFailure(exit) ? Cause.squash(exit.cause) as SandboxError : undefined
  return FileCallbacks.attach({ ...file }, {
    read: (offset, length, done) =>
      Effect.runCallback(file.read(offset, length), {
        onExit: (exit) => done(error(exit), Exit.isSuccess(exit) ? exit.value : new Uint8Array(0))
      }),
    write: (offset, data, done) => Effect.runCallback(file.write(offset, data), { onExit: (exit) => done(error(exit)) })
  })
}

/** How the sandbox's files do READ and WRITE for the server: as Effects, or by callback. */
const fileCalls = [["as Effects", false], ["by callback", true]] as const

const instrumented = (fs: SandboxFileSystem, options: { readonly callbacks?: boolean } = {}) => {
  const counters = { stat: 0, opened: 0, closed: 0, reads: 0, writeCalls: 0, writes: [] as Array<string> }
  let gate: Effect.Latch | undefined = undefined
  const held = <A, E>(effect: Effect.Effect<A, E>) => gate === undefined ? effect : Effect.zipRight(gate.await, effect)
  const wrapFile = (file: SandboxFile): SandboxFile => ({
    ...file,
    read: (offset, length) => Effect.zipRight(Effect.sync(() => counters.reads++), held(file.read(offset, length))),
    write: (offset, data) =>
      Effect.suspend(() => {
        counters.writeCalls++
        const label = `${offset}+${data.length}`
        // a write at 0 is slow, so a later overlapping one would overtake it if unordered
        const delay = offset === 0 ? Effect.sleep(50) : Effect.void
        return Effect.zipRight(delay, file.write(offset, data)).pipe(
          Effect.tap(() => Effect.sync(() => counters.writes.push(label)))
        )
      }),
    close: Effect.zipRight(Effect.sync(() => counters.closed++), file.close)
  })
  const wrapped: SandboxFileSystem = {
    ...withFiles(fs, (file) => {
      counters.opened++
      return options.callbacks === true ? withCallbacks(wrapFile(file)) : wrapFile(file)
    }),
    stat: (path) =>
      Effect.suspend(() => {
        counters.stat++
        if (path === "/denied") {
          return Effect.fail(new SandboxError({ reason: "PermissionDenied", operation: "stat", path }))
        }
        if (path === "/unsupported") {
          return Effect.fail(new SandboxError({ reason: "Unsupported", operation: "stat", path }))
        }
        if (path === "/broken") return Effect.die(new Error("boom"))
        return held(fs.stat(path))
      })
  }
  return {
    fs: wrapped,
    counters,
    hold: () => {
      gate = Effect.unsafeMakeLatch(false)
    },
    release: () => gate?.unsafeOpen()
  }
}

/** A session over an instrumented memory sandbox, with `/root/f` open for reading and writing. */
const withOpenFile = (options: { readonly callbacks: boolean }) =>
  Effect.gen(function*() {
    const probe = instrumented(yield* memoryFs, options)
    const session = yield* startSession(probe.fs)
    session.send(init)
    const handle = handleOf(
      yield* session.call(T.OPEN, 1, str("/root/f"), u32(O_READ | O_WRITE | O_CREAT), attrs())
    )
    return { handle, probe, session }
  })

const handleOf = (reply: { type: number; fields: Fields }): Buffer => {
  assert.strictEqual(reply.type, T.HANDLE)
  return Buffer.from(reply.fields.bytes())
}

const O_READ = 1, O_WRITE = 2, O_CREAT = 8, O_TRUNC = 0x10, O_EXCL = 0x20

describe("SFTP protocol, byte by byte", () => {
  it.scopedLive("answers INIT with VERSION 3 and the OpenSSH extensions, and limits@openssh.com", () =>
    Effect.gen(function*() {
      const session = yield* startSession(yield* memoryFs)
      session.send(init)
      yield* waitUntil(() => session.parser.replies.length > 0, "VERSION")
      const version = session.parser.replies[0]!
      assert.strictEqual(version.type, T.VERSION)
      assert.strictEqual(version.id, 3) // the version sits where other replies have their id
      const extensions: Array<string> = []
      while (version.fields.rest.length > 0) extensions.push(`${version.fields.string()}=${version.fields.string()}`)
      assert.deepStrictEqual(extensions, [
        "posix-rename@openssh.com=1",
        "statvfs@openssh.com=2",
        "fstatvfs@openssh.com=2",
        "hardlink@openssh.com=1",
        "fsync@openssh.com=1",
        "limits@openssh.com=1"
      ])
      const limits = yield* session.call(T.EXTENDED, 1, str("limits@openssh.com"))
      assert.strictEqual(limits.type, T.EXTENDED_REPLY)
      assert.deepStrictEqual(
        [limits.fields.u64(), limits.fields.u64(), limits.fields.u64(), limits.fields.u64()],
        [262144, 261120, 261120, 1024]
      )
      const statvfs = yield* session.call(T.EXTENDED, 2, str("statvfs@openssh.com"), str("/"))
      assert.strictEqual(statvfs.type, T.EXTENDED_REPLY)
      assert.strictEqual(statvfs.fields.u64(), 4096)
    }))

  it.scopedLive("answers OP_UNSUPPORTED to an unknown extension and an unknown request, then carries on", () =>
    Effect.gen(function*() {
      const session = yield* startSession(yield* memoryFs)
      session.send(init)
      const unknown = status(yield* session.call(T.EXTENDED, 7, str("copy-data"), str("whatever")))
      assert.deepStrictEqual(unknown, { code: FX_OP_UNSUPPORTED, message: "Operation unsupported" })
      assert.strictEqual(status(yield* session.call(99, 8, str("x"))).code, FX_OP_UNSUPPORTED)
      const real = yield* session.call(T.REALPATH, 9, str("."))
      assert.strictEqual(real.type, T.NAME)
    }))

  const malformed: ReadonlyArray<readonly [string, ReadonlyArray<Buffer>]> = [
    ["a length over 256 KiB", [init, u32(256 * 1024 + 1), Buffer.alloc(64)]],
    ["a length under 5", [init, u32(3), Buffer.from([T.STAT, 0, 0])]],
    ["a request before INIT", [request(T.STAT, 1, str("/"))]],
    ["a second INIT", [init, init]],
    ["a string longer than its packet", [init, request(T.STAT, 1, u32(1000), Buffer.from("/x"))]],
    ["a READ without its length", [init, request(T.READ, 1, str("abcd"), u64(0))]],
    ["attributes cut short", [init, request(T.SETSTAT, 1, str("/root"), u32(0x0f), u64(1))]]
  ]
  for (const [name, packets] of malformed) {
    it.scopedLive(`ends the session on ${name}, closing what it opened`, () =>
      Effect.gen(function*() {
        const probe = instrumented(yield* memoryFs)
        const session = yield* startSession(probe.fs)
        if (packets[0] === init) {
          session.send(init)
          handleOf(yield* session.call(T.OPEN, 100, str("/root/open"), u32(O_WRITE | O_CREAT), attrs()))
          session.send(...packets.slice(1))
        } else {
          session.send(...packets)
        }
        const exit = yield* Fiber.await(session.server)
        assert.isTrue(exit._tag === "Failure", "the session failed")
        if (exit._tag === "Failure") assert.include(String(exit.cause), "Malformed")
        assert.strictEqual(probe.counters.closed, probe.counters.opened)
      }))
  }

  it.scopedLive("maps sandbox errors to status codes, and survives a defect", () =>
    Effect.gen(function*() {
      const probe = instrumented(yield* memoryFs)
      const session = yield* startSession(probe.fs)
      session.send(init)
      assert.deepStrictEqual(status(yield* session.call(T.STAT, 1, str("/nope"))), {
        code: FX_NO_SUCH_FILE,
        message: "No such file"
      })
      assert.strictEqual(status(yield* session.call(T.STAT, 2, str("/denied"))).code, FX_PERMISSION_DENIED)
      assert.strictEqual(status(yield* session.call(T.STAT, 3, str("/unsupported"))).code, FX_OP_UNSUPPORTED)
      assert.deepStrictEqual(status(yield* session.call(T.MKDIR, 4, str("/root"), attrs())), {
        code: FX_FAILURE,
        message: "AlreadyExists"
      })
      assert.deepStrictEqual(status(yield* session.call(T.RMDIR, 5, str("/"))), {
        code: FX_FAILURE,
        message: "InvalidArgument"
      })
      assert.strictEqual(status(yield* session.call(T.STAT, 6, str("/broken"))).code, FX_FAILURE)
      assert.deepStrictEqual(status(yield* session.call(T.READ, 7, str("nope"), u64(0), u32(10))), {
        code: FX_FAILURE,
        message: "Invalid handle"
      })
      assert.strictEqual(status(yield* session.call(T.MKDIR, 8, str("/a/b/c"), attrs())).code, FX_NO_SUCH_FILE)
    }))

  it.scopedLive("a file's callback that throws is answered FAILURE, logged, and the session goes on", () =>
    Effect.gen(function*() {
      const sandbox = yield* MemorySandbox.make({ files: { "/root/f": Buffer.from("contents") } })
      const boom = () => {
        throw new Error("boom in the sandbox")
      }
      const fs = withFiles(sandbox.fs, (file) => {
        const callbacks = FileCallbacks.of(withCallbacks(file))!
        return FileCallbacks.attach({ ...file }, {
          read: (offset, length, done) => offset === 666 ? boom() : callbacks.read(offset, length, done),
          write: (offset, data, done) => offset === 666 ? boom() : callbacks.write(offset, data, done)
        })
      })
      const logged: Array<string> = []
      const logger = Logger.make(({ message }) => logged.push(String(message)))
      const session = yield* startSession(fs).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      session.send(init)
      const handle = handleOf(yield* session.call(T.OPEN, 1, str("/root/f"), u32(O_READ | O_WRITE), attrs()))
      assert.deepStrictEqual(status(yield* session.call(T.READ, 2, str(handle), u64(666), u32(10))), {
        code: FX_FAILURE,
        message: "Failure"
      })
      assert.strictEqual(status(yield* session.call(T.WRITE, 3, str(handle), u64(666), str("x"))).code, FX_FAILURE)
      const read = yield* session.call(T.READ, 4, str(handle), u64(0), u32(100))
      assert.strictEqual(read.fields.string(), "contents")
      assert.strictEqual(logged.filter((m) => m.includes("SFTP request failed unexpectedly")).length, 2)
    }))

  it.scopedLive("symlink takes the target first (OpenSSH order); rename refuses an existing target, posix-rename replaces it", () =>
    Effect.gen(function*() {
      const sandbox = yield* MemorySandbox.make({ files: { "/root/a": "A", "/root/b": "B" } })
      const session = yield* startSession(sandbox.fs)
      session.send(init)
      assert.strictEqual(status(yield* session.call(T.SYMLINK, 1, str("a"), str("/root/link"))).code, FX_OK)
      const link = yield* session.call(T.READLINK, 2, str("/root/link"))
      assert.strictEqual(link.type, T.NAME)
      assert.strictEqual(link.fields.u32(), 1)
      assert.strictEqual(link.fields.string(), "a")
      assert.deepStrictEqual(status(yield* session.call(T.RENAME, 3, str("a"), str("b"))), {
        code: FX_FAILURE,
        message: "AlreadyExists"
      })
      const renamed = yield* session.call(T.EXTENDED, 4, str("posix-rename@openssh.com"), str("a"), str("b"))
      assert.strictEqual(status(renamed).code, FX_OK)
      assert.strictEqual(status(yield* session.call(T.STAT, 5, str("a"))).code, FX_NO_SUCH_FILE)
      const hard = yield* session.call(T.EXTENDED, 6, str("hardlink@openssh.com"), str("b"), str("c"))
      assert.strictEqual(status(hard).code, FX_OK)
      const stat = yield* session.call(T.LSTAT, 7, str("/root/c"))
      assert.strictEqual(stat.type, T.ATTRS)
      assert.deepInclude(stat.fields.attrs(), { size: 1, permissions: 0o100644, uid: 0, gid: 0 })
    }))

  it.scopedLive("realpath: . is the working directory, a missing last component is fine, a missing parent is not", () =>
    Effect.gen(function*() {
      const session = yield* startSession(yield* memoryFs)
      session.send(init)
      const name = (id: number) =>
        Effect.map(session.reply(id), (r) => {
          assert.strictEqual(r.type, T.NAME)
          assert.strictEqual(r.fields.u32(), 1)
          const filename = r.fields.string()
          assert.strictEqual(r.fields.string(), filename) // longname = filename, as OpenSSH
          assert.strictEqual(r.fields.u32(), 0) // empty attributes
          return filename
        })
      session.send(
        request(T.REALPATH, 1, str(".")),
        request(T.REALPATH, 2, str("")),
        request(T.REALPATH, 3, str("/root/../root/./missing")),
        request(T.REALPATH, 4, str("/missing/deeper"))
      )
      assert.strictEqual(yield* name(1), "/root")
      assert.strictEqual(yield* name(2), "/root")
      assert.strictEqual(yield* name(3), "/root/missing")
      assert.strictEqual(status(yield* session.reply(4)).code, FX_NO_SUCH_FILE)
    }))

  it.scopedLive("open flags and modes, reads to EOF, fstat/fsetstat/setstat, fsync and fstatvfs", () =>
    Effect.gen(function*() {
      const session = yield* startSession(yield* memoryFs)
      session.send(init)
      const handle = handleOf(
        yield* session.call(T.OPEN, 1, str("/root/f"), u32(O_READ | O_WRITE | O_CREAT | O_EXCL), attrs(0o640))
      )
      const again = yield* session.call(T.OPEN, 2, str("/root/f"), u32(O_WRITE | O_CREAT | O_EXCL), attrs())
      assert.strictEqual(status(again).code, FX_FAILURE)
      assert.strictEqual(status(yield* session.call(T.WRITE, 3, str(handle), u64(0), str("hello world"))).code, FX_OK)
      const data = yield* session.call(T.READ, 4, str(handle), u64(6), u32(100))
      assert.strictEqual(data.type, T.DATA)
      assert.strictEqual(data.fields.string(), "world")
      assert.strictEqual(status(yield* session.call(T.READ, 5, str(handle), u64(11), u32(100))).code, FX_EOF)
      assert.strictEqual(status(yield* session.call(T.READ, 6, str(handle), u64(2 ** 60), u32(1))).code, FX_EOF)
      const fstat = yield* session.call(T.FSTAT, 7, str(handle))
      assert.deepInclude(fstat.fields.attrs(), { size: 11, permissions: 0o100640 })
      const setTimes = Buffer.concat([u32(0x0d), u64(5), u32(0o600), u32(1000), u32(2000)])
      assert.strictEqual(status(yield* session.call(T.FSETSTAT, 8, str(handle), setTimes)).code, FX_OK)
      assert.deepInclude((yield* session.call(T.STAT, 9, str("/root/f"))).fields.attrs(), {
        size: 5,
        permissions: 0o100600,
        atime: 1000,
        mtime: 2000
      })
      assert.strictEqual(status(yield* session.call(T.SETSTAT, 10, str("/root/f"), attrs(0o644))).code, FX_OK)
      assert.strictEqual(status(yield* session.call(T.EXTENDED, 11, str("fsync@openssh.com"), str(handle))).code, FX_OK)
      const fstatvfs = yield* session.call(T.EXTENDED, 12, str("fstatvfs@openssh.com"), str(handle))
      assert.strictEqual(fstatvfs.type, T.EXTENDED_REPLY)
      assert.strictEqual(status(yield* session.call(T.CLOSE, 13, str(handle))).code, FX_OK)
      assert.strictEqual(status(yield* session.call(T.CLOSE, 14, str(handle))).code, FX_FAILURE)
      // O_TRUNC on open empties the file
      const truncated = handleOf(yield* session.call(T.OPEN, 15, str("/root/f"), u32(O_WRITE | O_TRUNC), attrs()))
      assert.deepInclude((yield* session.call(T.FSTAT, 16, str(truncated))).fields.attrs(), { size: 0 })
    }))

  it.scopedLive("reads at most 255 KiB per request", () =>
    Effect.gen(function*() {
      const sandbox = yield* MemorySandbox.make({ files: { "/root/big": new Uint8Array(1024 * 1024) } })
      const session = yield* startSession(sandbox.fs)
      session.send(init)
      const handle = handleOf(yield* session.call(T.OPEN, 1, str("/root/big"), u32(O_READ), attrs()))
      const data = yield* session.call(T.READ, 2, str(handle), u64(0), u32(1024 * 1024))
      assert.strictEqual(data.type, T.DATA)
      assert.strictEqual(data.fields.bytes().length, 255 * 1024)
    }))

  it.scopedLive("lists a directory in batches of 100 with ls -l longnames, then EOF", () =>
    Effect.gen(function*() {
      const files: Record<string, string> = {}
      for (let i = 0; i < 250; i++) files[`/root/dir/f${String(i).padStart(3, "0")}`] = "x".repeat(i)
      const sandbox = yield* MemorySandbox.make({ files })
      const session = yield* startSession(sandbox.fs)
      session.send(init)
      const handle = handleOf(yield* session.call(T.OPENDIR, 1, str("/root/dir")))
      const names: Array<string> = []
      const counts: Array<number> = []
      for (let id = 2;; id++) {
        const reply = yield* session.call(T.READDIR, id, str(handle))
        if (reply.type === T.STATUS) {
          assert.strictEqual(status(reply).code, FX_EOF)
          break
        }
        const count = reply.fields.u32()
        counts.push(count)
        for (let i = 0; i < count; i++) {
          const name = reply.fields.string()
          const longname = reply.fields.string()
          const attributes = reply.fields.attrs()
          if (name === "f007") {
            assert.match(longname, /^-rw-r--r-- {4}1 root {5}root {12}7 \w{3} [ \d]\d \d\d:\d\d f007$/)
            assert.strictEqual(attributes.size, 7)
          }
          names.push(name)
        }
      }
      assert.deepStrictEqual(counts, [100, 100, 52])
      assert.deepStrictEqual(names.slice(0, 3), [".", "..", "f000"])
      assert.strictEqual(new Set(names).size, 252)
      assert.strictEqual(status(yield* session.call(T.OPENDIR, 50, str("/root/dir/f001"))).code, FX_FAILURE)
    }))

  for (const [calls, callbacks] of fileCalls) {
    it.scopedLive(`runs a handle's disjoint writes concurrently, overlapping ones in order, and replies in order (file calls ${calls})`, () =>
      Effect.gen(function*() {
        const { handle, probe, session } = yield* withOpenFile({ callbacks })
        // The probe holds a write at offset 0 for 50 ms; the second write overlaps it, the third does not.
        session.send(
          request(T.WRITE, 2, str(handle), u64(0), str("AAAA")),
          request(T.WRITE, 3, str(handle), u64(2), str("BB")),
          request(T.WRITE, 4, str(handle), u64(100), str("C")),
          request(T.READ, 5, str(handle), u64(0), u32(4))
        )
        const read = yield* session.reply(5)
        assert.strictEqual(read.fields.string(), "AABB")
        assert.deepStrictEqual(probe.counters.writes, ["100+1", "0+4", "2+2"], "the disjoint write did not wait")
        // Replies on one handle keep the request order (OpenSSH's sftp truncates downloads otherwise).
        const order = session.parser.replies.filter((r) => r.type !== T.VERSION && r.id >= 2).map((r) => r.id)
        assert.deepStrictEqual(order, [2, 3, 4, 5])
      }))
  }

  it.scopedLive(`stops reading while ${DEFAULT_MAX_IN_FLIGHT} requests are in flight`, () =>
    Effect.gen(function*() {
      const probe = instrumented(yield* memoryFs)
      const session = yield* startSession(probe.fs)
      session.send(init)
      yield* waitUntil(() => session.parser.replies.length === 1, "VERSION")
      probe.hold()
      // 1,000 STATs of 4 KiB each (a long path to /root), written as fast as the input takes them,
      // resuming on a later turn as a socket or channel would (not from inside the reader's read()).
      const path = str(`/root${"/.".repeat(2048)}`)
      let sent = 0
      const sender = yield* Effect.fork(Effect.async<void>((resume) => {
        const next = () => {
          while (sent < 1000) {
            const more = session.input.write(request(T.STAT, ++sent, path))
            if (!more) return void session.input.once("drain", () => setImmediate(next))
          }
          resume(Effect.void)
        }
        next()
      }))
      yield* waitUntil(() => probe.counters.stat === DEFAULT_MAX_IN_FLIGHT, "a full set of stats started")
      yield* Effect.sleep(200)
      assert.strictEqual(probe.counters.stat, DEFAULT_MAX_IN_FLIGHT, "no request beyond the bound started")
      assert.isBelow(sent, 200, "the server stopped reading, so the client could not write more")
      probe.release()
      yield* Fiber.join(sender)
      yield* waitUntil(() => session.parser.replies.length === 1001, "1000 replies")
      const replies = session.parser.replies.slice(1)
      assert.strictEqual(new Set(replies.map((r) => r.id)).size, 1000)
      assert.isTrue(replies.every((r) => r.type === T.ATTRS))
    }))

  for (const [calls, callbacks] of fileCalls) {
    it.scopedLive(`stops reading when the client does not read its replies (file calls ${calls})`, () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ files: { "/root/big": new Uint8Array(8 * 1024 * 1024) } })
        const probe = instrumented(sandbox.fs, { callbacks })
        const session = yield* startSession(probe.fs, { read: false, outputHighWaterMark: 64 * 1024 })
        session.send(init)
        yield* waitUntil(() => session.output.readableLength > 0, "VERSION")
        const version = session.output.read() as Buffer
        assert.strictEqual(version[4], T.VERSION)
        session.send(request(T.OPEN, 1, str("/root/big"), u32(O_READ), attrs()))
        yield* waitUntil(() => session.output.readableLength > 0, "HANDLE")
        const handle = (session.output.read() as Buffer).subarray(13, 17)
        // 1,000 reads of 255 KiB would be 255 MiB of replies.
        for (let i = 0; i < 1000; i++) {
          session.send(request(T.READ, 10 + i, str(handle), u64((i % 32) * 261120), u32(261120)))
        }
        yield* Effect.sleep(300)
        const held = session.output.readableLength + session.output.writableLength
        assert.isBelow(held, 24 * 1024 * 1024, "replies held for the client stay bounded")
        assert.isBelow(probe.counters.reads, 100, "requests wait while the replies are not taken")
        // Reading the replies lets every request through.
        let total = 0
        session.output.on("data", (chunk: Buffer) => total += chunk.length)
        yield* waitUntil(() => total === 1000 * (13 + 261120), "all replies", 30_000)
        assert.strictEqual(probe.counters.reads, 1000)
      }))
  }

  it.scopedLive("closes every file the session opened when it ends, and bounds open handles", () =>
    Effect.gen(function*() {
      const probe = instrumented(yield* memoryFs)
      const session = yield* startSession(probe.fs, { maxHandles: 3 })
      session.send(init)
      for (const [id, name] of [[1, "a"], [2, "b"]] as const) {
        handleOf(yield* session.call(T.OPEN, id, str(`/root/${name}`), u32(O_WRITE | O_CREAT), attrs()))
      }
      handleOf(yield* session.call(T.OPENDIR, 3, str("/root")))
      assert.deepStrictEqual(status(yield* session.call(T.OPEN, 4, str("/root/c"), u32(O_WRITE | O_CREAT), attrs())), {
        code: FX_FAILURE,
        message: "Too many open handles"
      })
      assert.strictEqual(probe.counters.opened, 2)
      session.input.end()
      yield* Fiber.join(session.server)
      assert.strictEqual(probe.counters.closed, 2)
    }))

  it.scopedLive("closes open files when interrupted mid-session", () =>
    Effect.gen(function*() {
      const probe = instrumented(yield* memoryFs)
      const session = yield* startSession(probe.fs)
      session.send(init)
      handleOf(yield* session.call(T.OPEN, 1, str("/root/a"), u32(O_WRITE | O_CREAT), attrs()))
      probe.hold()
      session.send(request(T.STAT, 2, str("/root"))) // held forever
      yield* waitUntil(() => probe.counters.stat === 1, "stat started")
      yield* Fiber.interrupt(session.server)
      assert.strictEqual(probe.counters.closed, 1)
    }))

  it.scopedLive("ends promptly while an OPEN is blocked in the sandbox (a FIFO without a writer)", () =>
    Effect.gen(function*() {
      const root = yield* tempDir("sftp-root-")
      const fifo = Path.join(root, "fifo")
      const made = yield* run("mkfifo", [fifo])
      assert.strictEqual(made.code, 0)
      const sandbox = yield* LocalSandbox.make({ root, isolation: "none" })
      const session = yield* startSession(sandbox.fs)
      session.send(init, request(T.OPEN, 1, str("fifo"), u32(O_READ), attrs()))
      yield* Effect.sleep(100)
      const started = Date.now()
      yield* Fiber.interrupt(session.server)
      assert.isBelow(Date.now() - started, 1000)
      // Let the sandbox's blocked open finish (a writer arrives), so nothing stays blocked.
      Fs.closeSync(Fs.openSync(fifo, Fs.constants.O_WRONLY | Fs.constants.O_NONBLOCK))
    }))

  for (const [calls, callbacks] of fileCalls) {
    it.scopedLive(`closes open files when interrupted with READs under way, and starts nothing after (file calls ${calls})`, () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ files: { "/root/f": new Uint8Array(1000) } })
        const probe = instrumented(sandbox.fs, { callbacks })
        const session = yield* startSession(probe.fs)
        session.send(init)
        const handle = handleOf(yield* session.call(T.OPEN, 1, str("/root/f"), u32(O_READ | O_WRITE), attrs()))
        probe.hold()
        session.send(
          request(T.READ, 2, str(handle), u64(0), u32(100)),
          request(T.READ, 3, str(handle), u64(100), u32(100)),
          request(T.WRITE, 4, str(handle), u64(50), str("overlaps both reads"))
        )
        yield* waitUntil(() => probe.counters.reads === 2, "reads started")
        yield* Fiber.interrupt(session.server)
        assert.strictEqual(probe.counters.closed, 1)
        probe.release()
        yield* Effect.sleep(50)
        assert.strictEqual(probe.counters.writeCalls, 0, "the write waiting for the reads never started")
        assert.isFalse(
          session.parser.replies.some((r) => r.type !== T.VERSION && r.id >= 2),
          "nothing answered after the session ended"
        )
      }))

    it.scopedLive(`answers every READ and WRITE asked before the client's EOF, each handle's in order (file calls ${calls})`, () =>
      Effect.gen(function*() {
        const { handle, session } = yield* withOpenFile({ callbacks })
        const chunk = (i: number) => Buffer.alloc(1000, i)
        for (let i = 0; i < 100; i++) session.send(request(T.WRITE, 10 + i, str(handle), u64(i * 1000), str(chunk(i))))
        for (let i = 0; i < 100; i++) session.send(request(T.READ, 200 + i, str(handle), u64(i * 1000), u32(1000)))
        session.send(request(T.READ, 300, str(handle), u64(100_000), u32(1000)))
        session.input.end()
        yield* Fiber.join(session.server)
        const replies = session.parser.replies.filter((r) => r.type !== T.VERSION && r.id >= 10)
        assert.deepStrictEqual(replies.map((r) => r.id), [
          ...Array.from({ length: 100 }, (_, i) => 10 + i),
          ...Array.from({ length: 100 }, (_, i) => 200 + i),
          300
        ])
        for (const reply of replies.slice(0, 100)) {
          assert.deepStrictEqual(status(reply), { code: FX_OK, message: "Success" })
        }
        for (const [i, reply] of replies.slice(100, 200).entries()) {
          assert.strictEqual(reply.type, T.DATA)
          assert.deepStrictEqual(Buffer.from(reply.fields.bytes()), chunk(i))
        }
        assert.strictEqual(status(replies[200]!).code, FX_EOF)
      }))
  }

  it.scopedLive("keeps no view of an input chunk it released: requests framed from it and still waiting are intact", () =>
    Effect.gen(function*() {
      // every chunk is scribbled over as soon as the server releases it, as a reused packet would be
      const session = yield* startSession(yield* memoryFs, { releaseInput: (chunk) => chunk.fill(0xaa) })
      session.send(Buffer.from(init)) // a copy: \`init\` is shared with the other tests
      yield* waitUntil(() => session.parser.replies.length === 1, "VERSION")
      // 100 requests in one chunk: past the 16 in flight, the rest wait, framed, after the release
      session.send(Buffer.concat(Array.from({ length: 100 }, (_, i) => request(T.STAT, 10 + i, str("/root")))))
      yield* waitUntil(() => session.parser.replies.length === 101, "100 replies")
      const replies = session.parser.replies.slice(1)
      assert.deepStrictEqual(
        replies.map((r) => r.id).sort((a, b) => a - b),
        Array.from({ length: 100 }, (_, i) => 10 + i)
      )
      assert.isTrue(replies.every((r) => r.type === T.ATTRS))
    }))

  it.scopedLive("answers everything asked before the client's EOF", () =>
    Effect.gen(function*() {
      const session = yield* startSession(yield* memoryFs)
      session.send(init, ...Array.from({ length: 200 }, (_, i) => request(T.REALPATH, i + 1, str("."))))
      session.input.end()
      yield* Fiber.join(session.server)
      assert.strictEqual(session.parser.replies.length, 201)
    }))
})
