import * as Command from "@effect/platform/Command"
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createHash } from "node:crypto"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import * as SshClient from "../src/SshClient.js"
import * as SshKeys from "../src/SshKeys.js"
import { descendants, processAlive } from "./support/processes.js"

const isolations = ["bubblewrap", "none"] as const

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

describe.each(isolations)("SandboxSsh on LocalSandbox (%s)", (isolation) => {
  const withClient = <A, E>(
    f: (client: SshClient.SshClient) => Effect.Effect<A, E, Scope.Scope>,
    options?: SandboxSsh.ClientOptions
  ) =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation })
      const client = yield* SandboxSsh.make(sandbox).openClient(options)
      return yield* f(client)
    }).pipe(Effect.scoped)

  it.live("runs the typical flow: openClient, exec uname -a, close", () =>
    Effect.gen(function*() {
      const program = Effect.gen(function*() {
        const client = yield* SandboxSsh.openClient()
        const out = yield* client.exec("uname -a")
        yield* client.close
        return out
      }).pipe(
        Effect.scoped,
        Effect.provide(SandboxSsh.layer),
        Effect.provide([LocalSandbox.layer({ isolation }), SshKeys.layer])
      )
      const out = yield* program
      assert.strictEqual(out.status, 0)
      assert.isTrue(out.success)
      assert.match(out.stdoutText, /^Linux /)
      assert.strictEqual(out.stderrText, "")
    }))

  it.live("reports exit codes 0, 1, 42 and 255", () =>
    withClient((client) =>
      Effect.gen(function*() {
        for (const code of [0, 1, 42, 255]) {
          const out = yield* client.exec(`exit ${code}`)
          assert.strictEqual(out.status, code)
          assert.strictEqual(out.success, code === 0)
          assert.isUndefined(out.signal)
        }
      })
    ))

  it.live("reports a signal death as the signal and 128+n, never 0", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const killed = yield* client.exec("kill -KILL $$")
        assert.strictEqual(killed.signal, "KILL")
        assert.strictEqual(killed.status, 137)
        const terminated = yield* client.exec("kill -TERM $$")
        assert.strictEqual(terminated.signal, "TERM")
        assert.strictEqual(terminated.status, 143)
        assert.isFalse(terminated.success)
      })
    ))

  it.live("keeps stderr separate without a PTY and merges it with one", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const plain = yield* client.exec("echo out; echo err >&2")
        assert.strictEqual(plain.stdoutText, "out\n")
        assert.strictEqual(plain.stderrText, "err\n")
        const tty = yield* client.exec("echo out; echo err >&2", { tty: true })
        assert.strictEqual(tty.stderrText, "")
        assert.include(tty.stdoutText, "out")
        assert.include(tty.stdoutText, "err")
      })
    ))

  it.live("gives a PTY of the requested size when tty is set", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const out = yield* client.exec("tty; stty size; echo $TERM", { tty: true, size: { cols: 123, rows: 45 } })
        const lines = out.stdoutText.split(/\r?\n/)
        assert.match(lines[0]!, /^\/dev\/pts\/\d+$/)
        assert.strictEqual(lines[1], "45 123")
        assert.strictEqual(lines[2], "vt220")
        const plain = yield* client.exec("tty")
        assert.strictEqual(plain.stdoutText, "not a tty\n")
      }), { term: "vt220" }))

  it.live("delivers 1 MiB of output intact", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const out = yield* client.exec("head -c 1048576 /dev/urandom | tee /tmp/blob | sha256sum")
        assert.strictEqual(out.status, 0)
        const copy = yield* client.exec("cat /tmp/blob")
        assert.strictEqual(copy.stdout.length, 1048576)
        assert.strictEqual(out.stdoutText.split(" ")[0], sha256(copy.stdout))
      })
    ))

  it.live("returns at once from cat: stdin is at EOF", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const out = yield* client.exec("cat").pipe(Effect.timeout("10 seconds"))
        assert.strictEqual(out.status, 0)
        assert.strictEqual(out.stdout.length, 0)
        const fed = yield* client.exec("cat; echo done", { stdin: "hello\n" })
        assert.strictEqual(fed.stdoutText, "hello\ndone\n")
      })
    ))

  it.live("runs 64 concurrent execs on one client", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const outs = yield* Effect.all(
          Array.from({ length: 64 }, (_, i) => client.exec(`echo ${i}; exit $((${i} % 3))`)),
          { concurrency: "unbounded" }
        )
        outs.forEach((out, i) => {
          assert.strictEqual(out.stdoutText, `${i}\n`)
          assert.strictEqual(out.status, i % 3)
        })
      })
    ))

  it.live("passes env per exec and streams stdin through spawn", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const env = yield* client.exec("echo $GREETING", { env: { GREETING: "hi there" } })
        assert.strictEqual(env.stdoutText, "hi there\n")
        const proc = yield* client.spawn("tr a-z A-Z")
        const input = Stream.make("abc", "def").pipe(Stream.encodeText)
        const [, output, code] = yield* Effect.all([
          Stream.run(input, proc.stdin),
          Stream.decodeText(proc.stdout).pipe(Stream.mkString),
          proc.exitCode
        ], { concurrency: "unbounded" })
        assert.strictEqual(output, "ABCDEF")
        assert.strictEqual(code, 0)
      })
    ))

  it.live("a stdout nobody reads holds the command back: nothing piles up in the process", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const proc = yield* client.spawn("cat /dev/zero")
        const pull = yield* Stream.toPull(proc.stdout)
        yield* pull
        const before = process.memoryUsage().arrayBuffers
        // an endless producer at pipe speed: ~1 GB/s would pile up here if nothing held it back
        yield* Effect.sleep("600 millis")
        const grown = (process.memoryUsage().arrayBuffers - before) / (1024 * 1024)
        assert.isBelow(grown, 64, `grew by ${grown.toFixed(1)} MiB while stdout was not read`)
        // and it flows again once read
        let more = 0
        while (more < 16 * 1024 * 1024) more += Chunk.reduce(yield* pull, 0, (n, c) => n + c.length)
        assert.isAtLeast(more, 16 * 1024 * 1024)
      })
    ))

  it.live("runs @effect/platform Commands inside the sandbox", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const hostname = yield* Command.make("cat", "/etc/hostname").pipe(Command.string)
        const local = yield* Command.make("uname", "-a").pipe(Command.string)
        assert.match(local, /^Linux /)
        if (isolation === "bubblewrap") assert.strictEqual(hostname.trim(), "sandbox")
        const quoted = yield* Command.make("printf", "%s|", "a b", "it's", "$HOME").pipe(Command.string)
        assert.strictEqual(quoted, "a b|it's|$HOME|")
        const lines = yield* Command.make("echo", "x\ny").pipe(Command.lines)
        assert.deepStrictEqual(lines, ["x", "y"])
        const cwd = yield* Command.make("pwd").pipe(Command.workingDirectory("/tmp"), Command.string)
        assert.strictEqual(cwd.trim(), "/tmp")
        const code = yield* Command.make("sh", "-c", "exit 7").pipe(Command.exitCode)
        assert.strictEqual(code, 7)
        const piped = yield* Command.make("echo", "hello").pipe(
          Command.pipeTo(Command.make("tr", "a-z", "A-Z")),
          Command.string
        )
        assert.strictEqual(piped, "HELLO\n")
      }).pipe(Effect.provide(SshClient.commandExecutor(client)))
    ))

  it.live("interrupting exec ends the process in the sandbox and frees the channel", () =>
    withClient((client) =>
      Effect.gen(function*() {
        const marker = `100.${process.pid}${Date.now() % 100000}`
        const result = yield* client.exec(`exec sleep ${marker}`).pipe(
          Effect.timeout("1 second"),
          Effect.either
        )
        assert.isTrue(Either.isLeft(result))
        // The process is gone from the sandbox, as its own process list shows.
        const check = yield* client.exec(`sleep 0.2; ps -eo args | grep -c '^sleep ${marker}' || true`)
        assert.strictEqual(check.stdoutText.trim(), "0")
        // The connection still works.
        const after = yield* client.exec("echo alive")
        assert.strictEqual(after.stdoutText, "alive\n")
      })
    ))

  it.live("close ends every process the client started; a second close is a no-op; use after close fails", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation })
      const ssh = SandboxSsh.make(sandbox)
      const client = yield* ssh.openClient()
      const marker = `sleep 1000.${Date.now() % 100000}`
      const started = yield* Effect.fork(client.exec(marker))
      // the exec is running once its process shows up (polled: a loaded machine may take a while)
      let before = yield* descendants(process.pid)
      for (let i = 0; i < 100 && !before.some((p) => p.args === marker); i++) {
        yield* Effect.sleep("50 millis")
        before = yield* descendants(process.pid)
      }
      assert.isTrue(before.some((p) => p.args === marker))
      yield* client.close
      yield* client.close
      const exit = yield* Fiber.await(started)
      assert.isTrue(Exit.isFailure(exit))
      const after = yield* descendants(process.pid)
      assert.isFalse(after.some((p) => p.args === marker))
      const used = yield* Effect.either(client.exec("true"))
      assert.isTrue(Either.isLeft(used))
      if (Either.isLeft(used)) {
        assert.strictEqual(used.left._tag, "ConnectionError")
        assert.strictEqual((used.left as { reason: string }).reason, "Closed")
      }
    }).pipe(Effect.scoped))

  it.live("closing the scope leaves no process behind", () =>
    Effect.gen(function*() {
      const baseline = new Set((yield* descendants(process.pid)).map((p) => p.pid))
      const started: Array<{ pid: number; args: string }> = []
      yield* Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation })
        const client = yield* SandboxSsh.make(sandbox).openClient()
        yield* Effect.fork(client.exec("sleep 1000"))
        yield* Effect.fork(client.exec("sleep 1000 & sleep 1000"))
        yield* Effect.sleep("300 millis")
        for (const p of yield* descendants(process.pid)) if (!baseline.has(p.pid)) started.push(p)
        assert.isAtLeast(started.filter((p) => p.args.startsWith("sleep 1000")).length, 3)
      }).pipe(Effect.scoped)
      for (const p of started) assert.isFalse(yield* processAlive(p.pid), `${p.pid} (${p.args}) survived`)
    }))
})

describe("SandboxSsh on LocalSandbox (bubblewrap) persistence", () => {
  it.live("a background process started by one exec is visible to the next", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
      const client = yield* SandboxSsh.make(sandbox).openClient()
      const marker = `1000.${Date.now() % 100000}`
      const start = yield* client.exec(`sleep ${marker} >/dev/null 2>&1 &`)
      assert.strictEqual(start.status, 0)
      const seen = yield* client.exec(`ps -eo args | grep -c '^sleep ${marker}'`)
      assert.strictEqual(seen.stdoutText.trim(), "1")
      // A second client of the same sandbox sees it too.
      const other = yield* SandboxSsh.make(sandbox).openClient()
      const seenByOther = yield* other.exec(`ps -eo args | grep -c '^sleep ${marker}'`)
      assert.strictEqual(seenByOther.stdoutText.trim(), "1")
    }).pipe(Effect.scoped))
})

describe("every cipher over the in-memory duplex", () => {
  const ciphers = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr"
  ]
  it.live.each(ciphers)("%s carries 3 MiB both ways intact", (cipher) =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const client = yield* SandboxSsh.make(sandbox).openClient({ ciphers: [cipher] })
      const data = new Uint8Array(3 * 1024 * 1024 + 1).map((_, i) => (i * 7919) % 251)
      const out = yield* client.exec("cat", { stdin: data })
      assert.strictEqual(out.stdout.length, data.length)
      assert.strictEqual(sha256(out.stdout), sha256(data))
    }).pipe(Effect.scoped))
})

describe("bad input", () => {
  it.live("invalid options are typed errors before anything starts", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const ssh = SandboxSsh.make(sandbox)
      const negative = yield* Effect.flip(ssh.openClient({ inactivityTimeout: -1 }))
      assert.strictEqual(negative._tag, "InvalidOptionError")
      const negativeDuration = yield* Effect.flip(ssh.openClient({ inactivityTimeout: "-5 seconds" }))
      assert.strictEqual(negativeDuration._tag, "InvalidOptionError")
      const emptyUser = yield* Effect.flip(ssh.openClient({ user: "" }))
      assert.strictEqual(emptyUser._tag, "InvalidOptionError")
      const badTerm = yield* Effect.flip(ssh.openClient({ term: "x term" }))
      assert.strictEqual(badTerm._tag, "InvalidOptionError")
    }).pipe(Effect.scoped))

  it.live("a command that cannot be started exits 127 with the reason on stderr", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const client = yield* SandboxSsh.make(sandbox).openClient()
      const out = yield* client.exec("definitely-not-a-command-xyz")
      assert.strictEqual(out.status, 127)
      assert.include(out.stderrText, "not found")
    }).pipe(Effect.scoped))
})
