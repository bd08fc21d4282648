import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as MemorySandbox from "../src/MemorySandbox.js"
import * as Sandbox from "../src/Sandbox.js"
import type { SandboxError } from "../src/SshError.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (text: string) => encoder.encode(text)

const collect = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Stream.runCollect(stream).pipe(
    Effect.map((chunks) => decoder.decode(Buffer.concat(Chunk.toReadonlyArray(chunks))))
  )

interface Output {
  readonly stdout: string
  readonly stderr: string
  readonly exit: Sandbox.ProcessExit
}

/** Runs a process to the end: feeds `input` to stdin (then EOF) and collects stdout and stderr. */
const runProcess = (
  sandbox: Sandbox.Sandbox,
  options: Sandbox.SpawnOptions,
  input: ReadonlyArray<string> = []
): Effect.Effect<Output, SandboxError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const process = yield* sandbox.spawn(options)
      const [stdout, stderr, , exit] = yield* Effect.all([
        collect(process.stdout),
        collect(process.stderr),
        Stream.run(Stream.fromIterable(input.map(bytes)), process.stdin),
        process.exit
      ], { concurrency: "unbounded" })
      return { stdout, stderr, exit }
    })
  )

const sh = (sandbox: Sandbox.Sandbox, command: string, input?: ReadonlyArray<string>) =>
  runProcess(sandbox, { command: sandbox.info.shell, args: ["-c", command] }, input)

const code = (exit: Sandbox.ProcessExit) => exit.code

const failure = <A, R>(effect: Effect.Effect<A, SandboxError, R>) =>
  Effect.flip(effect).pipe(
    Effect.map((error) => ({ reason: error.reason, operation: error.operation, path: error.path }))
  )

const readAll = (fs: Sandbox.SandboxFileSystem, path: string) =>
  Effect.scoped(
    Effect.gen(function*() {
      const file = yield* Effect.acquireRelease(fs.open(path, { read: true }), (file) => Effect.orDie(file.close))
      const { size } = yield* file.stat
      return decoder.decode(yield* file.read(0, size + 1))
    })
  )

const writeAll = (fs: Sandbox.SandboxFileSystem, path: string, text: string) =>
  Effect.gen(function*() {
    const file = yield* fs.open(path, { write: true, create: true, truncate: true })
    yield* file.write(0, bytes(text))
    yield* file.close
  })

/** A handler (or service) that runs until interrupted, recording that it started and was interrupted. */
const server = Effect.gen(function*() {
  const started = yield* Deferred.make<void>()
  const interrupted = yield* Deferred.make<void>()
  const run = () =>
    Deferred.succeed(started, void 0).pipe(
      Effect.zipRight(Effect.never),
      Effect.onInterrupt(() => Deferred.succeed(interrupted, void 0))
    )
  return { started: Deferred.await(started), interrupted, run }
})

describe("MemorySandbox", () => {
  describe("info and layer", () => {
    it.scoped("reports a memory transport with the configured shell and workdir", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ shell: "/bin/bash", workdir: "/work/app" })
        assert.deepStrictEqual(sandbox.info, {
          transport: "memory",
          isolated: true,
          isolation: "memory",
          shell: "/bin/bash",
          workdir: "/work/app"
        })
        assert.strictEqual((yield* sandbox.fs.stat("/work/app")).type, "Directory")
        assert.strictEqual(yield* sandbox.fs.realPath("."), "/work/app")
      }))

    it.effect("is a layer for the Sandbox tag", () =>
      Effect.gen(function*() {
        const sandbox = yield* Sandbox.Sandbox
        const output = yield* sh(sandbox, "hostname")
        assert.strictEqual(output.stdout, "box\n")
        assert.strictEqual(sandbox.info.workdir, "/root")
      }).pipe(Effect.provide(MemorySandbox.layer({ handlers: { hostname: { stdout: "box\n" } } }))))
  })

  describe("handlers", () => {
    it.scoped("match the command string exactly, by RegExp or by predicate, first match first", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          handlers: [
            MemorySandbox.handler("uname -s", { stdout: "Linux\n" }),
            MemorySandbox.handler(/^deploy (\w+)$/, (ctx) => Effect.succeed({ stdout: `deploying ${ctx.args[0]}\n` })),
            MemorySandbox.handler((command) => command.startsWith("deploy"), { stdout: "shadowed\n" }),
            MemorySandbox.handler((command) => command.includes("fail"), { stderr: bytes("boom\n"), exitCode: 3 })
          ]
        })
        const uname = yield* sh(sandbox, "uname -s")
        assert.deepStrictEqual([uname.stdout, uname.stderr, code(uname.exit)], ["Linux\n", "", 0])
        assert.strictEqual((yield* sh(sandbox, "deploy web")).stdout, "deploying web\n")
        assert.strictEqual((yield* sh(sandbox, "deploy web now")).stdout, "shadowed\n")
        const failed = yield* sh(sandbox, "please fail")
        assert.deepStrictEqual([failed.stdout, failed.stderr, failed.exit], [
          "",
          "boom\n",
          Sandbox.ProcessExit.Exited({ code: 3 })
        ])
        // "uname -s " is a different command string.
        assert.strictEqual(code((yield* sh(sandbox, "uname -s ")).exit), 127)
      }))

    it.scoped("match the joined argv when the process is not a shell command string", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          handlers: { "git status --short": (ctx) => Effect.succeed({ stdout: JSON.stringify(ctx.args) }) }
        })
        const output = yield* runProcess(sandbox, { command: "git", args: ["status", "--short"] })
        assert.strictEqual(output.stdout, "[\"status\",\"--short\"]")
      }))

    it.scoped("give the handler its words, environment, directory, user and file system", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          files: { "/srv/app/config.json": "{}", "notes.txt": "in workdir" },
          env: { LANG: "C.UTF-8" },
          handlers: [
            MemorySandbox.handler(/^inspect/, (ctx) =>
              Effect.gen(function*() {
                const config = yield* readAll(ctx.fs, "config.json")
                return {
                  stdout: JSON.stringify({
                    args: ctx.args,
                    cwd: ctx.cwd,
                    user: ctx.user,
                    lang: ctx.env.LANG,
                    extra: ctx.env.EXTRA,
                    pwd: ctx.env.PWD,
                    pty: ctx.pty === undefined,
                    config
                  })
                }
              }))
          ]
        })
        const output = yield* runProcess(sandbox, {
          command: "/bin/sh",
          args: ["-c", `inspect 'a b' "c \\"d\\"" e\\ f`],
          cwd: "/srv/app",
          user: "deploy",
          env: { EXTRA: "1" }
        })
        assert.deepStrictEqual(JSON.parse(output.stdout), {
          args: ["a b", "c \"d\"", "e f"],
          cwd: "/srv/app",
          user: "deploy",
          lang: "C.UTF-8",
          extra: "1",
          pwd: "/srv/app",
          pty: true,
          config: "{}"
        })
        assert.strictEqual(yield* readAll(sandbox.fs, "notes.txt"), "in workdir")
      }))

    it.scoped("fails to spawn in a working directory that does not exist", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ files: { "/etc/hosts": "" } })
        const missing = yield* Effect.flip(sandbox.spawn({ command: "true", cwd: "/nowhere" }))
        assert.deepStrictEqual([missing.reason, missing.path], ["SpawnFailed", "/nowhere"])
        const file = yield* Effect.flip(sandbox.spawn({ command: "true", cwd: "/etc/hosts" }))
        assert.strictEqual(file.reason, "SpawnFailed")
      }))

    it.scoped("an unknown command exits 127 with the shell's message", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make()
        const output = yield* sh(sandbox, "frobnicate --all")
        assert.deepStrictEqual(output, {
          stdout: "",
          stderr: "sh: 1: frobnicate: not found\n",
          exit: Sandbox.ProcessExit.Exited({ code: 127 })
        })
      }))

    it.scoped("a fallback handler runs unmatched commands", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          fallback: (ctx) => Effect.succeed({ stdout: `ran: ${ctx.command}\n`, exitCode: 300 })
        })
        const output = yield* sh(sandbox, "anything at all")
        assert.strictEqual(output.stdout, "ran: anything at all\n")
        // Exit codes are reported modulo 256, as a shell does.
        assert.strictEqual(code(output.exit), 44)
      }))

    it.scoped("a handler's SandboxError is reported on stderr with exit status 1", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          handlers: { "load": (ctx) => Effect.as(readAll(ctx.fs, "/missing.txt"), {}) }
        })
        const output = yield* sh(sandbox, "load")
        assert.strictEqual(code(output.exit), 1)
        assert.include(output.stderr, "load: open \"/missing.txt\" failed (NotFound)")
      }))

    it.scoped("a result with a signal ends the process as signalled", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          handlers: { crash: { stderr: "Segmentation fault\n", signal: "SEGV" } }
        })
        const output = yield* sh(sandbox, "crash")
        assert.deepStrictEqual(
          output.exit,
          Sandbox.ProcessExit.Signaled({ signal: "SEGV", code: 139, coreDumped: false })
        )
      }))

    it.scoped("a handler streams output at the reader's pace and dies of a broken pipe when it stops", () =>
      Effect.gen(function*() {
        const written = yield* Ref.make(0)
        const sandbox = yield* MemorySandbox.make({
          handlers: {
            "yes": (ctx) => Effect.forever(Effect.zipRight(ctx.stdout("y\n"), Ref.update(written, (n) => n + 1)))
          }
        })
        const process = yield* sandbox.spawn({ command: "/bin/sh", args: ["-c", "yes"] })
        const firstThree = yield* collect(process.stdout.pipe(Stream.take(3)))
        assert.strictEqual(firstThree, "y\ny\ny\n")
        // The writer waits for the reader: it cannot run far ahead of what was read.
        assert.isBelow(yield* Ref.get(written), 40)
        // The reader stopped, so the next write is a broken pipe, which kills the writer.
        assert.deepStrictEqual(
          yield* process.exit,
          Sandbox.ProcessExit.Signaled({ signal: "PIPE", code: 141, coreDumped: false })
        )
      }))
  })

  describe("builtins", () => {
    it.scoped("cat copies stdin to stdout until EOF", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: MemorySandbox.builtins })
        const output = yield* sh(sandbox, "cat", ["hello ", "from ", "stdin\n"])
        assert.deepStrictEqual(output, {
          stdout: "hello from stdin\n",
          stderr: "",
          exit: Sandbox.ProcessExit.Exited({ code: 0 })
        })
      }))

    it.scoped("cat reads files relative to the working directory and reports missing ones", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: MemorySandbox.builtins, files: { "a.txt": "A\n" } })
        const output = yield* sh(sandbox, "cat a.txt missing.txt")
        assert.deepStrictEqual([output.stdout, output.stderr, code(output.exit)], [
          "A\n",
          "cat: missing.txt: No such file or directory\n",
          1
        ])
      }))

    it.scoped("true, false, echo, exit and pwd", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: MemorySandbox.builtins, files: { "/data/": "" } })
        assert.strictEqual(code((yield* sh(sandbox, "true")).exit), 0)
        assert.strictEqual(code((yield* sh(sandbox, "/bin/false")).exit), 1)
        assert.strictEqual((yield* sh(sandbox, "echo  hello   'big world'")).stdout, "hello big world\n")
        assert.strictEqual((yield* sh(sandbox, "echo -n no newline")).stdout, "no newline")
        assert.strictEqual(code((yield* sh(sandbox, "exit 42")).exit), 42)
        assert.strictEqual(code((yield* sh(sandbox, "exit nope")).exit), 2)
        assert.strictEqual((yield* runProcess(sandbox, { command: "pwd", cwd: "/data" })).stdout, "/data\n")
      }))

    it.scoped("do not pretend to run shell syntax", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: MemorySandbox.builtins })
        assert.strictEqual(code((yield* sh(sandbox, "echo hi | cat")).exit), 127)
        assert.strictEqual(code((yield* sh(sandbox, "echo $HOME")).exit), 127)
        assert.strictEqual(code((yield* sh(sandbox, "true && false")).exit), 127)
      }))

    it.scoped("sleep follows the Effect clock", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: MemorySandbox.builtins })
        const fiber = yield* Effect.fork(sh(sandbox, "sleep 2"))
        yield* TestClock.adjust("1 second")
        assert.isTrue((yield* Fiber.poll(fiber))._tag === "None")
        yield* TestClock.adjust("1 second")
        assert.strictEqual(code((yield* Fiber.join(fiber)).exit), 0)
      }))
  })

  describe("process lifecycle", () => {
    it.scoped("a signal interrupts the handler and the exit is Signaled with 128 + n", () =>
      Effect.gen(function*() {
        const serve = yield* server
        const interrupted = serve.interrupted
        const sandbox = yield* MemorySandbox.make({
          handlers: { "serve": serve.run }
        })
        const process = yield* sandbox.spawn({ command: "/bin/sh", args: ["-c", "serve"] })
        yield* serve.started
        yield* process.signal("TERM")
        assert.deepStrictEqual(
          yield* process.exit,
          Sandbox.ProcessExit.Signaled({ signal: "TERM", code: 143, coreDumped: false })
        )
        assert.isTrue(yield* Deferred.isDone(interrupted))
        // After the end, a signal has nothing to kill.
        yield* process.signal("KILL")
        assert.strictEqual(code(yield* process.exit), 143)
        const unknown = yield* Effect.flip(process.signal("NOPE"))
        assert.strictEqual(unknown.reason, "InvalidArgument")
      }))

    it.effect("closing the spawn's scope kills the process", () =>
      Effect.gen(function*() {
        const serve = yield* server
        const interrupted = serve.interrupted
        const sandbox = yield* Effect.scoped(
          Effect.gen(function*() {
            const sandbox = yield* MemorySandbox.make({
              handlers: { "serve": serve.run }
            })
            const scope = yield* Scope.make()
            const process = yield* Scope.extend(sandbox.spawn({ command: "serve" }), scope)
            yield* serve.started
            yield* Scope.close(scope, Exit.void)
            assert.isTrue(yield* Deferred.isDone(interrupted))
            assert.deepStrictEqual(
              yield* process.exit,
              Sandbox.ProcessExit.Signaled({ signal: "KILL", code: 137, coreDumped: false })
            )
            return sandbox
          })
        )
        // The sandbox's own scope is closed: it starts nothing more.
        const closed = yield* Effect.flip(Effect.scoped(sandbox.spawn({ command: "serve" })))
        assert.strictEqual(closed.reason, "Closed")
      }))

    it.scoped("closing the sandbox's scope kills its processes", () =>
      Effect.gen(function*() {
        const serve = yield* server
        const interrupted = serve.interrupted
        const scope = yield* Scope.make()
        const sandbox = yield* Scope.extend(
          MemorySandbox.make({
            handlers: { "serve": serve.run }
          }),
          scope
        )
        const process = yield* sandbox.spawn({ command: "serve" })
        yield* serve.started
        yield* Scope.close(scope, Exit.void)
        assert.isTrue(yield* Deferred.isDone(interrupted))
        assert.strictEqual(code(yield* process.exit), 137)
      }))

    it.scoped("a PTY merges stderr into stdout and resize updates the size the handler reads", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          handlers: {
            "tput": (ctx) =>
              Effect.gen(function*() {
                const pty = ctx.pty!
                const first = yield* pty.size
                yield* ctx.stderr(`${pty.term} ${ctx.env.TERM} ${first.cols}x${first.rows}\n`)
                // Wait for the test to say it resized.
                yield* Stream.runDrain(ctx.stdin)
                const [latest] = Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.take(pty.sizes, 1)))
                return { stdout: `${latest!.cols}x${latest!.rows}\n` }
              })
          }
        })
        const process = yield* sandbox.spawn({
          command: "/bin/sh",
          args: ["-c", "tput"],
          pty: { term: "xterm-256color", cols: 80, rows: 24 }
        })
        const chunks = yield* Queue.unbounded<string>()
        yield* Effect.fork(Stream.runForEach(process.stdout, (chunk) => Queue.offer(chunks, decoder.decode(chunk))))
        assert.strictEqual(yield* Queue.take(chunks), "xterm-256color xterm-256color 80x24\n")
        yield* process.resize({ cols: 132, rows: 43 })
        yield* Stream.run(Stream.empty, process.stdin)
        assert.strictEqual(yield* Queue.take(chunks), "132x43\n")
        assert.strictEqual(yield* collect(process.stderr), "")
        assert.strictEqual(code(yield* process.exit), 0)
      }))

    it.scoped("resize without a PTY is Unsupported", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: MemorySandbox.builtins })
        const process = yield* sandbox.spawn({ command: "true" })
        const error = yield* Effect.flip(process.resize({ cols: 1, rows: 1 }))
        assert.deepStrictEqual([error.reason, error.operation], ["Unsupported", "resize"])
      }))

    it.scoped("output stays readable after the process ended; stdin after the end is discarded", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ handlers: { "hello": { stdout: "hi\n", stderr: "warn\n" } } })
        const process = yield* sandbox.spawn({ command: "hello" })
        assert.strictEqual(code(yield* process.exit), 0)
        yield* Stream.run(Stream.make(bytes("ignored")), process.stdin)
        assert.strictEqual(yield* collect(process.stdout), "hi\n")
        assert.strictEqual(yield* collect(process.stderr), "warn\n")
        assert.isAbove(process.pid, 0)
      }))
  })

  describe("file system", () => {
    it.scoped("seeds files with their parents and reports attributes", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          files: { "/etc/app/config.toml": "x = 1\n", "relative/b.bin": new Uint8Array([1, 2, 3]) }
        })
        const config = yield* sandbox.fs.stat("/etc/app/config.toml")
        assert.deepStrictEqual(
          [config.type, config.size, config.mode & 0o170000, config.mode & 0o777, config.uid, config.gid, config.nlink],
          ["File", 6, 0o100000, 0o644, 0, 0, 1]
        )
        assert.strictEqual((yield* sandbox.fs.stat("/root/relative/b.bin")).size, 3)
        const etc = yield* sandbox.fs.stat("/etc")
        assert.deepStrictEqual([etc.type, etc.mode & 0o170000, etc.nlink], ["Directory", 0o040000, 3])
        assert.strictEqual((yield* sandbox.fs.stat("/tmp")).mode & 0o7777, 0o1777)
        assert.deepStrictEqual(yield* failure(sandbox.fs.stat("/etc/nope")), {
          reason: "NotFound",
          operation: "stat",
          path: "/etc/nope"
        })
        assert.deepStrictEqual(yield* failure(sandbox.fs.stat("/etc/app/config.toml/x")), {
          reason: "NotADirectory",
          operation: "stat",
          path: "/etc/app/config.toml/x"
        })
      }))

    it.scoped("writes at offsets, past the end with zeros, and reads back", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make()
        yield* writeAll(fs, "offsets.txt", "alpha------omega")
        const file = yield* fs.open("offsets.txt", { read: true, write: true })
        yield* file.write(5, bytes(":ssh:"))
        assert.strictEqual(decoder.decode(yield* file.read(0, 100)), "alpha:ssh:-omega")
        assert.strictEqual(decoder.decode(yield* file.read(6, 3)), "ssh")
        assert.strictEqual((yield* file.read(16, 10)).length, 0)
        yield* file.write(20, bytes("!"))
        assert.deepStrictEqual(Array.from(yield* file.read(14, 10)), [
          ..."ga".split("").map((c) => c.charCodeAt(0)),
          0,
          0,
          0,
          0,
          33
        ])
        assert.strictEqual((yield* file.stat).size, 21)
        yield* file.close
        assert.strictEqual((yield* Effect.flip(file.read(0, 1))).reason, "Closed")
      }))

    it.scoped("honours open flags", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ files: { "log.txt": "one\n", "dir/": "" } })
        const { fs } = sandbox
        assert.deepStrictEqual(yield* failure(fs.open("new.txt", { read: true })), {
          reason: "NotFound",
          operation: "open",
          path: "new.txt"
        })
        assert.strictEqual(
          (yield* Effect.flip(fs.open("log.txt", { write: true, create: true, exclusive: true }))).reason,
          "AlreadyExists"
        )
        const created = yield* fs.open("new.txt", { write: true, create: true, exclusive: true }, 0o600)
        yield* created.close
        assert.strictEqual((yield* fs.stat("new.txt")).mode & 0o777, 0o600)

        const append = yield* fs.open("log.txt", { write: true, append: true })
        yield* append.write(0, bytes("two\n"))
        yield* append.close
        assert.strictEqual(yield* readAll(fs, "log.txt"), "one\ntwo\n")

        const reader = yield* fs.open("log.txt", { read: true })
        assert.strictEqual((yield* Effect.flip(reader.write(0, bytes("x")))).reason, "PermissionDenied")
        const truncated = yield* fs.open("log.txt", { write: true, truncate: true })
        assert.strictEqual((yield* truncated.stat).size, 0)
        assert.strictEqual((yield* Effect.flip(truncated.read(0, 1))).reason, "PermissionDenied")
        assert.strictEqual((yield* Effect.flip(fs.open("dir", { read: true }))).reason, "IsADirectory")
      }))

    it.scoped("setStat truncates, extends, changes mode and times", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({ files: { "f": "abcdef" } })
        yield* fs.setStat("f", { size: 3, mode: 0o600, atime: 1_000, mtime: 2_000 })
        const attributes = yield* fs.stat("f")
        assert.deepStrictEqual(
          [attributes.size, attributes.mode, attributes.atime, attributes.mtime],
          [3, 0o100600, 1_000, 2_000]
        )
        yield* fs.setStat("f", { size: 5 })
        assert.deepStrictEqual(Array.from(bytes(yield* readAll(fs, "f"))), [97, 98, 99, 0, 0])
        const file = yield* fs.open("f", { read: true, write: true })
        yield* file.setStat({ size: 1 })
        assert.strictEqual((yield* file.stat).size, 1)
        yield* file.close
        assert.strictEqual((yield* Effect.flip(fs.setStat("/", { size: 0 }))).reason, "IsADirectory")
      }))

    it.scoped("creates and removes directories with POSIX errors", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({ files: { "full/file": "x", "plain": "" } })
        yield* fs.makeDirectory("empty", 0o700)
        assert.strictEqual((yield* fs.stat("empty")).mode & 0o777, 0o700)
        assert.strictEqual((yield* Effect.flip(fs.makeDirectory("empty"))).reason, "AlreadyExists")
        assert.deepStrictEqual(yield* failure(fs.makeDirectory("missing/child")), {
          reason: "NotFound",
          operation: "makeDirectory",
          path: "missing/child"
        })
        assert.strictEqual((yield* Effect.flip(fs.makeDirectory("plain/child"))).reason, "NotADirectory")
        assert.deepStrictEqual(yield* failure(fs.removeDirectory("full")), {
          reason: "NotEmpty",
          operation: "removeDirectory",
          path: "full"
        })
        assert.strictEqual((yield* Effect.flip(fs.removeDirectory("plain"))).reason, "NotADirectory")
        assert.strictEqual((yield* Effect.flip(fs.remove("full"))).reason, "IsADirectory")
        assert.strictEqual((yield* Effect.flip(fs.removeDirectory("/"))).reason, "InvalidArgument")
        yield* fs.removeDirectory("empty")
        yield* fs.remove("full/file")
        yield* fs.removeDirectory("full")
        assert.strictEqual((yield* Effect.flip(fs.stat("full"))).reason, "NotFound")
        assert.strictEqual((yield* Effect.flip(fs.remove("full"))).reason, "NotFound")
      }))

    it.scoped("renames files and directories, refusing to overwrite unless asked", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({
          files: { "a.txt": "A", "b.txt": "B", "src/lib/x.ts": "X", "dest/": "" }
        })
        assert.deepStrictEqual(yield* failure(fs.rename("a.txt", "b.txt")), {
          reason: "AlreadyExists",
          operation: "rename",
          path: "b.txt"
        })
        yield* fs.rename("a.txt", "b.txt", { overwrite: true })
        assert.strictEqual(yield* readAll(fs, "b.txt"), "A")
        assert.strictEqual((yield* Effect.flip(fs.stat("a.txt"))).reason, "NotFound")

        yield* fs.rename("src", "dest/moved")
        assert.strictEqual(yield* readAll(fs, "/root/dest/moved/lib/x.ts"), "X")
        assert.strictEqual(yield* fs.realPath("dest/moved/lib/.."), "/root/dest/moved")
        assert.strictEqual((yield* Effect.flip(fs.rename("dest", "dest/moved/lib/inside"))).reason, "InvalidArgument")
        assert.strictEqual((yield* Effect.flip(fs.rename("nope", "x"))).reason, "NotFound")
        assert.strictEqual((yield* Effect.flip(fs.rename("b.txt", "dest", { overwrite: true }))).reason, "IsADirectory")
      }))

    it.scoped("follows relative and absolute symlinks and resolves real paths", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({ files: { "/srv/releases/v2/app.js": "v2", "/etc/": "" } })
        yield* fs.symlink("releases/v2", "/srv/current")
        yield* fs.symlink("/srv/current/app.js", "/etc/app.js")
        assert.strictEqual(yield* readAll(fs, "/etc/app.js"), "v2")
        assert.strictEqual((yield* fs.lstat("/srv/current")).type, "SymbolicLink")
        assert.strictEqual((yield* fs.lstat("/srv/current")).size, "releases/v2".length)
        assert.strictEqual((yield* fs.stat("/srv/current")).type, "Directory")
        assert.strictEqual(yield* fs.readLink("/srv/current"), "releases/v2")
        assert.strictEqual((yield* Effect.flip(fs.readLink("/srv"))).reason, "InvalidArgument")
        assert.strictEqual(yield* fs.realPath("/etc/app.js"), "/srv/releases/v2/app.js")
        assert.strictEqual(yield* fs.realPath("/srv/current/new-file"), "/srv/releases/v2/new-file")
        assert.strictEqual((yield* Effect.flip(fs.realPath("/srv/missing/new-file"))).reason, "NotFound")
        // `..` is clamped at the root, also through a symlink that climbs too far.
        assert.strictEqual(yield* fs.realPath("/../../../srv/./releases/"), "/srv/releases")
        yield* fs.symlink("../../../../../../etc", "/srv/escape")
        assert.strictEqual(yield* fs.realPath("/srv/escape"), "/etc")
        assert.strictEqual(yield* fs.realPath(""), "/root")
        // Writing through a dangling symlink creates its target.
        yield* fs.symlink("/srv/target.txt", "dangling")
        yield* writeAll(fs, "dangling", "created")
        assert.strictEqual(yield* readAll(fs, "/srv/target.txt"), "created")
        assert.strictEqual((yield* Effect.flip(fs.symlink("/x", "dangling"))).reason, "AlreadyExists")
        // Removing a symlink removes the link, not the target.
        yield* fs.remove("dangling")
        assert.strictEqual(yield* readAll(fs, "/srv/target.txt"), "created")
      }))

    it.scoped("symlink loops fail after 40 hops", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make()
        yield* fs.symlink("loop-b", "loop-a")
        yield* fs.symlink("loop-a", "loop-b")
        const error = yield* Effect.flip(fs.stat("loop-a"))
        assert.deepStrictEqual([error.reason, error.detail, error.path], [
          "InvalidArgument",
          "too many levels of symbolic links",
          "loop-a"
        ])
        assert.strictEqual((yield* fs.lstat("loop-a")).type, "SymbolicLink")
        // A chain of 40 links resolves; 41 does not.
        yield* writeAll(fs, "/end", "end")
        yield* Effect.forEach(Array.from({ length: 41 }, (_, i) => i), (i) =>
          fs.symlink(i === 0 ? "/end" : `/chain-${i - 1}`, `/chain-${i}`))
        assert.strictEqual(yield* readAll(fs, "/chain-39"), "end")
        assert.strictEqual((yield* Effect.flip(fs.stat("/chain-40"))).reason, "InvalidArgument")
      }))

    it.scoped("lists a directory of 1,000 entries", () =>
      Effect.gen(function*() {
        const files: Record<string, string> = {}
        for (let i = 0; i < 1_000; i++) files[`/big/file-${String(i).padStart(4, "0")}`] = String(i)
        const { fs } = yield* MemorySandbox.make({ files })
        yield* fs.makeDirectory("/big/sub")
        const entries = yield* fs.readDirectory("/big")
        assert.strictEqual(entries.length, 1_001)
        assert.deepStrictEqual(entries[0], {
          name: "file-0000",
          attributes: entries[0]!.attributes
        })
        assert.strictEqual(entries[999]!.name, "file-0999")
        assert.strictEqual(entries[999]!.attributes.size, 3)
        assert.strictEqual(entries[1_000]!.attributes.type, "Directory")
        assert.isFalse(entries.some((entry) => entry.name === "." || entry.name === ".."))
        assert.strictEqual((yield* Effect.flip(fs.readDirectory("/big/file-0001"))).reason, "NotADirectory")
      }))

    it.scoped("hard links share one file", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({ files: { "original": "shared", "dir/": "" } })
        yield* fs.link("original", "dir/alias")
        assert.strictEqual((yield* fs.stat("original")).nlink, 2)
        const file = yield* fs.open("dir/alias", { write: true })
        yield* file.write(0, bytes("SHARED"))
        yield* file.close
        assert.strictEqual(yield* readAll(fs, "original"), "SHARED")
        yield* fs.remove("original")
        assert.strictEqual((yield* fs.stat("dir/alias")).nlink, 1)
        assert.strictEqual(yield* readAll(fs, "dir/alias"), "SHARED")
        assert.strictEqual((yield* Effect.flip(fs.link("dir", "dir2"))).reason, "PermissionDenied")
        assert.deepStrictEqual(yield* failure(fs.link("dir/alias", "dir/alias")), {
          reason: "AlreadyExists",
          operation: "link",
          path: "dir/alias"
        })
        // Renaming onto another link of the same file does nothing.
        yield* fs.link("dir/alias", "again")
        yield* fs.rename("again", "dir/alias", { overwrite: true })
        assert.strictEqual((yield* fs.stat("again")).nlink, 2)
      }))

    it.scoped("an open file outlives its name", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({ files: { "temp": "still here" } })
        const file = yield* fs.open("temp", { read: true })
        yield* fs.remove("temp")
        assert.strictEqual(decoder.decode(yield* file.read(0, 100)), "still here")
        yield* file.close
      }))

    it.scoped("reports plausible file system statistics", () =>
      Effect.gen(function*() {
        const { fs } = yield* MemorySandbox.make({ files: { "big": new Uint8Array(10_000) } })
        const stats = yield* fs.statFileSystem("/")
        assert.strictEqual(stats.blockSize, 4096)
        assert.strictEqual(stats.nameMax, 255)
        assert.isAbove(stats.blocks, stats.blocksFree)
        assert.isAtLeast(stats.blocks - stats.blocksFree, 3)
        assert.isAbove(stats.files, stats.filesFree)
        assert.strictEqual((yield* Effect.flip(fs.statFileSystem("/nope"))).reason, "NotFound")
      }))
  })

  describe("connect", () => {
    it.scoped("reaches a scripted service on loopback", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          ports: {
            7: (conn) => Stream.run(conn.input, conn.output),
            "db.internal:5432": (conn) => conn.write(`hello ${conn.host}:${conn.port}`)
          }
        })
        const echo = yield* sandbox.connect("127.0.0.1", 7)
        const [, echoed] = yield* Effect.all([
          Stream.run(Stream.make(bytes("ping "), bytes("pong")), echo.input),
          collect(echo.output)
        ], { concurrency: "unbounded" })
        assert.strictEqual(echoed, "ping pong")

        const db = yield* sandbox.connect("db.internal", 5432)
        assert.strictEqual(yield* collect(db.output), "hello db.internal:5432")
      }))

    it.scoped("refuses unknown ports and hosts", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({ ports: { 80: (conn) => conn.write("ok") } })
        assert.deepStrictEqual(yield* failure(sandbox.connect("localhost", 81)), {
          reason: "ConnectFailed",
          operation: "connect",
          path: "localhost:81"
        })
        assert.strictEqual((yield* Effect.flip(sandbox.connect("example.com", 80))).reason, "ConnectFailed")
      }))

    it.scoped("a failing service resets the connection", () =>
      Effect.gen(function*() {
        const sandbox = yield* MemorySandbox.make({
          ports: { 9000: (conn) => Effect.zipRight(conn.write("partial"), Effect.fail("crashed")) }
        })
        const connection = yield* sandbox.connect("localhost", 9000)
        const received = yield* Stream.runCollect(connection.output).pipe(Effect.flip)
        assert.strictEqual(received.reason, "Closed")
      }))

    it.scoped("a service writing to a client that stopped reading is interrupted", () =>
      Effect.gen(function*() {
        const interrupted = yield* Deferred.make<void>()
        const sandbox = yield* MemorySandbox.make({
          ports: {
            19: (conn) =>
              Effect.forever(conn.write("chargen ")).pipe(
                Effect.onInterrupt(() => Deferred.succeed(interrupted, void 0))
              )
          }
        })
        const connection = yield* sandbox.connect("127.0.0.1", 19)
        assert.strictEqual(yield* collect(Stream.take(connection.output, 2)), "chargen chargen ")
        yield* Deferred.await(interrupted)
      }))

    it.effect("closing the connection's scope interrupts the service", () =>
      Effect.gen(function*() {
        const serve = yield* server
        const interrupted = serve.interrupted
        yield* Effect.scoped(
          Effect.gen(function*() {
            const sandbox = yield* MemorySandbox.make({
              ports: { 22: serve.run }
            })
            yield* Effect.scoped(Effect.zipRight(sandbox.connect("localhost", 22), serve.started))
            assert.isTrue(yield* Deferred.isDone(interrupted))
          })
        )
      }))
  })
})
