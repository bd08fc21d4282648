import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import type * as Sandbox from "../src/Sandbox.js"
import { encoder, eventually, hasBwrap, processesWith, run, sh } from "./local/support.js"
import { processConformance } from "./support/processConformance.js"

const modes = (hasBwrap ? ["bubblewrap", "none"] : ["none"]) as ReadonlyArray<"bubblewrap" | "none">

describe.each(modes)("LocalSandbox (%s)", (isolation) => {
  const make = LocalSandbox.make({ isolation })
  processConformance(() => make)

  it.scopedLive("reports what it is", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      assert.strictEqual(sandbox.info.transport, "local")
      assert.strictEqual(sandbox.info.isolation, isolation)
      assert.strictEqual(sandbox.info.isolated, isolation === "bubblewrap")
      assert.strictEqual(sandbox.info.shell, "/bin/sh")
      assert.strictEqual(sandbox.info.workdir, isolation === "bubblewrap" ? "/root" : sandbox.info.root)
      const pwd = yield* sh(sandbox, "pwd")
      assert.strictEqual(pwd.stdout.toString().trim(), sandbox.info.workdir)
    }))

  it.scopedLive("reports death by signal as 128 + n", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const killed = yield* sh(sandbox, "kill -KILL $$")
      assert.deepStrictEqual(killed.exit, { _tag: "Signaled", signal: "KILL", code: 137, coreDumped: false } as const)
      const terminated = yield* sh(sandbox, "kill -TERM $$")
      assert.deepStrictEqual(
        terminated.exit,
        {
          _tag: "Signaled",
          signal: "TERM",
          code: 143,
          coreDumped: false
        } as const
      )
    }))

  it.scopedLive("passes environment: base, sandbox options, then the process's own", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation, env: { A: "sandbox", B: "sandbox" } })
      const output = yield* sh(sandbox, "echo $A $B $PATH", { env: { B: "process" } })
      const [a, b, path] = output.stdout.toString().trim().split(" ")
      assert.strictEqual(a, "sandbox")
      assert.strictEqual(b, "process")
      assert.include(path, "/usr/bin")
    }))

  it.scopedLive("runs in the requested working directory", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const cwd = isolation === "bubblewrap" ? "/tmp" : Os.tmpdir()
      const output = yield* sh(sandbox, "pwd", { cwd })
      assert.strictEqual(output.stdout.toString().trim(), Fs.realpathSync(cwd))
    }))

  it.scopedLive("signals the command's process group", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const process = yield* sandbox.spawn({ command: "/bin/sh", args: ["-c", "sleep 30; sleep 30"] })
      yield* Stream.run(Stream.empty, process.stdin)
      yield* Effect.sleep("100 millis")
      yield* process.signal("TERM")
      const exit = yield* process.exit
      assert.deepStrictEqual(exit, { _tag: "Signaled", signal: "TERM", code: 143, coreDumped: false } as const)
      const error = yield* Effect.flip(process.signal("NOPE"))
      assert.strictEqual(error.reason, "InvalidArgument")
      const resize = yield* Effect.flip(process.resize({ cols: 80, rows: 24 }))
      assert.strictEqual(resize.reason, "Unsupported")
    }))

  it.scopedLive("a terminal reports TERM from the environment and death by signal", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const term = yield* sh(sandbox, "echo $TERM", { pty: { term: "vt100", cols: 80, rows: 24 } })
      assert.strictEqual(term.stdout.toString(), "vt100\r\n")
      const killed = yield* sh(sandbox, "kill -TERM $$", { pty: { term: "xterm", cols: 80, rows: 24 } })
      assert.deepStrictEqual(killed.exit, { _tag: "Signaled", signal: "TERM", code: 143, coreDumped: false } as const)
      const bad = yield* Effect.flip(sh(sandbox, "true", { pty: { term: "xterm", cols: 0, rows: 24 } }))
      assert.strictEqual(bad.reason, "InvalidArgument")
    }))

  it.scopedLive("a terminal's whole output arrives, even when nobody reads it until the command has exited", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const lines = 200_000
      const process = yield* sandbox.spawn({
        command: "/bin/sh",
        args: ["-c", `seq 1 ${lines}`],
        pty: { term: "xterm", cols: 80, rows: 24 }
      })
      // seq is done long before this; its output waits in the pipes (the terminal helper's own
      // writes queue up: it must not exit before they are out)
      yield* Effect.sleep("1 second")
      const [bytes, exit] = yield* Effect.all([
        Stream.runFold(process.stdout, 0, (n, chunk) => n + chunk.length),
        process.exit
      ], { concurrency: "unbounded" })
      let expected = 0
      for (let i = 1; i <= lines; i++) expected += String(i).length + 2 // "\r\n" on a terminal
      assert.strictEqual(bytes, expected)
      assert.deepStrictEqual(exit, { _tag: "Exited", code: 0 } as Sandbox.ProcessExit)
    }))

  it.scopedLive("an interactive shell on a terminal keeps its exit code", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const output = yield* run(
        sandbox,
        { command: "/bin/sh", args: ["-i"], pty: { term: "xterm", cols: 80, rows: 24 } },
        Stream.make(encoder.encode("echo hello-$((6*7))\n"), encoder.encode("exit 5\n"))
      )
      assert.include(output.stdout.toString(), "hello-42")
      assert.deepStrictEqual(output.exit, { _tag: "Exited", code: 5 } as Sandbox.ProcessExit)
    }))

  it.scopedLive("closing the scope of a waiting process kills it", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const marker = `marker-${randomUUID()}`
      const scope = yield* Scope.make()
      const process = yield* Scope.extend(
        sandbox.spawn({ command: "/bin/sh", args: ["-c", `sleep 100; : ${marker}`] }),
        scope
      )
      const waiting = yield* Effect.fork(process.exit)
      const running = yield* eventually(() => processesWith(marker), (pids) => pids.length > 0)
      assert.isAbove(running.length, 0)
      yield* Scope.close(scope, Exit.void)
      const exit = yield* Fiber.join(waiting)
      assert.strictEqual(exit._tag, "Signaled")
      // the whole group got SIGKILL; the shell's child may take a moment to be gone
      assert.deepStrictEqual(yield* eventually(() => processesWith(marker), (pids) => pids.length === 0), [])
    }))

  it.scopedLive("interrupting a wait on a process ends it", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const marker = `marker-${randomUUID()}`
      const result = yield* Effect.scoped(
        Effect.gen(function*() {
          const process = yield* sandbox.spawn({ command: "/bin/sh", args: ["-c", `sleep 100; : ${marker}`] })
          yield* eventually(() => processesWith(marker), (pids) => pids.length > 0)
          return yield* process.exit
        })
      ).pipe(Effect.timeoutOption("200 millis"))
      assert.strictEqual(result._tag, "None")
      assert.deepStrictEqual(yield* eventually(() => processesWith(marker), (pids) => pids.length === 0), [])
    }))

  it.scopedLive("a closed sandbox refuses to spawn", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const sandbox = yield* Scope.extend(make, scope)
      yield* Scope.close(scope, Exit.void)
      const error = yield* Effect.flip(sh(sandbox, "true"))
      assert.strictEqual(error.reason, "Closed")
    }))

  it.scopedLive("background processes end with the sandbox", () =>
    Effect.gen(function*() {
      const marker = `marker-${randomUUID()}`
      const root = yield* Effect.scoped(
        Effect.gen(function*() {
          const sandbox = yield* make
          const output = yield* sh(sandbox, `/bin/sh -c 'sleep 1000; : ${marker}' >/dev/null 2>&1 & echo started`)
          assert.strictEqual(output.stdout.toString(), "started\n")
          assert.isAbove(processesWith(marker).length, 0)
          return sandbox.info.root!
        })
      )
      const left = yield* eventually(() => processesWith(marker), (pids) => pids.length === 0)
      assert.deepStrictEqual(left, [])
      // the temporary root is removed too
      assert.isFalse(Fs.existsSync(root))
    }))
})

describe("LocalSandbox options", () => {
  it.scopedLive("rejects bad options before anything starts", () =>
    Effect.gen(function*() {
      const isolation = yield* Effect.flip(LocalSandbox.make({ isolation: "docker" as "none" }))
      assert.strictEqual(isolation._tag, "InvalidOptionError")
      assert.strictEqual(isolation._tag === "InvalidOptionError" && isolation.option, "isolation")
      const shell = yield* Effect.flip(LocalSandbox.make({ shell: "" }))
      assert.strictEqual(shell._tag === "InvalidOptionError" && shell.option, "shell")
      const hostname = yield* Effect.flip(LocalSandbox.make({ hostname: "bad host" }))
      assert.strictEqual(hostname._tag === "InvalidOptionError" && hostname.option, "hostname")
      const env = yield* Effect.flip(LocalSandbox.make({ env: { "A=B": "x" } }))
      assert.strictEqual(env._tag === "InvalidOptionError" && env.option, "env")
    }))

  it.scopedLive("rejects a root that does not exist or is not a directory", () =>
    Effect.gen(function*() {
      const missing = Path.join(Os.tmpdir(), `no-such-root-${randomUUID()}`)
      const error = yield* Effect.flip(LocalSandbox.make({ root: missing }))
      assert.strictEqual(error._tag, "SandboxError")
      if (error._tag === "SandboxError") {
        assert.strictEqual(error.reason, "InvalidArgument")
        assert.strictEqual(error.path, missing)
        assert.include(error.message, missing)
      }
      const file = Path.join(Os.tmpdir(), `root-file-${randomUUID()}`)
      Fs.writeFileSync(file, "")
      const notDir = yield* Effect.flip(LocalSandbox.make({ root: file }))
      Fs.rmSync(file)
      assert.strictEqual(notDir._tag === "SandboxError" && notDir.reason, "InvalidArgument")
    }))

  it.scopedLive("uses a given root and leaves it in place", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "local-sandbox-test-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      yield* Effect.scoped(
        Effect.gen(function*() {
          const sandbox = yield* LocalSandbox.make({ root, isolation: "none" })
          assert.strictEqual(sandbox.info.root, Fs.realpathSync(root))
          yield* sh(sandbox, "echo kept > kept.txt")
        })
      )
      assert.strictEqual(Fs.readFileSync(Path.join(root, "kept.txt"), "utf8"), "kept\n")
    }))

  it.live("provides the Sandbox service through a layer", () =>
    Effect.gen(function*() {
      const { Sandbox } = yield* Effect.promise(() => import("../src/Sandbox.js"))
      const output = yield* Effect.flatMap(Sandbox, (sandbox) => sh(sandbox, "echo layer")).pipe(
        Effect.provide(LocalSandbox.layer({ isolation: "none" }))
      )
      assert.strictEqual(output.stdout.toString(), "layer\n")
    }))
})
