/**
 * What every transport's processes must do alike, written once and run against each `Sandbox`
 * (LocalSandbox in both isolation modes, DockerSandbox): exit codes, separate stderr, output and
 * input intact, a missing or non-executable command as a shell reports it, concurrency, a terminal
 * (tty, size, resize, exit code). Each
 * transport's own file keeps what differs (signals, terminals, users, lifecycle).
 */
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createHash } from "node:crypto"
import type * as Sandbox from "../../src/Sandbox.js"
import { encoder, run, sh } from "../local/support.js"
import { terminal } from "./terminal.js"

/** Registers the shared process tests (call inside a `describe`); `make` gives a fresh sandbox. */
export const processConformance = (make: () => Effect.Effect<Sandbox.Sandbox, unknown, Scope.Scope>): void => {
  it.scopedLive("reports exit codes 0, 1, 42 and 255", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      for (const code of [0, 1, 42, 255]) {
        const output = yield* sh(sandbox, `exit ${code}`)
        assert.deepStrictEqual(output.exit, { _tag: "Exited", code } as Sandbox.ProcessExit)
      }
    }))

  it.scopedLive("keeps stderr separate from stdout", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      const output = yield* sh(sandbox, "echo out; echo err >&2; echo out2")
      assert.strictEqual(output.stdout.toString(), "out\nout2\n")
      assert.strictEqual(output.stderr.toString(), "err\n")
    }))

  it.scopedLive("delivers 1 MiB of stdout intact", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      // in the working directory: the sandbox's own (a non-isolated sandbox's /tmp is the host's)
      const output = yield* sh(
        sandbox,
        "head -c 1048576 /dev/urandom > big; sha256sum big | cut -d' ' -f1 >&2; cat big; rm big"
      )
      assert.strictEqual(output.stdout.length, 1048576)
      assert.strictEqual(createHash("sha256").update(output.stdout).digest("hex"), output.stderr.toString().trim())
    }))

  it.scopedLive("streams stdin and delivers EOF when the sink ends", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      const chunks = Array.from({ length: 64 }, (_, i) => encoder.encode(`line ${i} ${"x".repeat(1000)}\n`))
      const output = yield* run(sandbox, { command: "cat" }, Stream.fromIterable(chunks))
      assert.isTrue(output.stdout.equals(Buffer.concat(chunks)), "stdout equals stdin")
      assert.deepStrictEqual(output.exit, { _tag: "Exited", code: 0 } as Sandbox.ProcessExit)
      const counted = yield* run(sandbox, { command: "wc", args: ["-c"] }, Stream.make(encoder.encode("12345")))
      assert.strictEqual(counted.stdout.toString().trim(), "5")
    }))

  it.scopedLive("runs a command that does not exist as a shell would: 127; one that cannot run: 126", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      const output = yield* run(sandbox, { command: "no-such-command-here" })
      assert.strictEqual(output.exit.code, 127)
      assert.include(output.stderr.toString(), "no-such-command-here")
      assert.strictEqual(output.stdout.length, 0)
      const shell = yield* sh(sandbox, "no-such-command-here")
      assert.strictEqual(shell.exit.code, 127)
      const notExecutable = yield* run(sandbox, { command: "/etc/passwd" })
      assert.strictEqual(notExecutable.exit.code, 126)
    }))

  it.scopedLive("64 concurrent spawns of true all succeed", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      const outputs = yield* Effect.all(
        Array.from({ length: 64 }, () => run(sandbox, { command: "true" })),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(outputs.map((o) => o.exit.code), outputs.map(() => 0))
    }))

  it.scopedLive("allocates a terminal: tty, size, resize, exit code", () =>
    Effect.gen(function*() {
      const sandbox = yield* make()
      const process = yield* sandbox.spawn({
        command: "/bin/sh",
        args: ["-c", "tty; stty size; read _; stty size; exit 3"],
        pty: { term: "xterm-256color", cols: 100, rows: 40 }
      })
      const tty = yield* terminal(process)
      const sized = yield* tty.readUntil((seen) => /\d+ \d+\r\n/.test(seen))
      assert.match(sized, /^\/dev\/pts\/\d+\r\n40 100\r\n$/)
      yield* process.resize({ cols: 120, rows: 50 })
      yield* tty.type("\n")
      const exit = yield* process.exit
      const seen = yield* tty.drain
      assert.match(seen, /50 120\r\n$/)
      assert.deepStrictEqual(exit, { _tag: "Exited", code: 3 } as Sandbox.ProcessExit)
      const stderr = yield* Stream.runCollect(process.stderr)
      assert.strictEqual(stderr.length, 0)
    }))
}
