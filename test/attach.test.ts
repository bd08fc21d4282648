import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"
import { PassThrough } from "node:stream"
import {
  DEFAULT_DETACH_KEYS,
  feed,
  heldBytes,
  makeMatcher,
  type MatchStep,
  parseDetachKeys
} from "../src/internal/client/detachKeys.js"
import * as LocalSandbox from "../src/LocalSandbox.js"
import type { Sandbox } from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import * as SshClient from "../src/SshClient.js"
import * as SshKeys from "../src/SshKeys.js"
import { allProcesses } from "./support/processes.js"
import * as Tmux from "./support/tmux.js"

const bytes = (...xs: ReadonlyArray<number | string>): Uint8Array =>
  Uint8Array.from(xs.flatMap((x) => typeof x === "number" ? [x] : [...Buffer.from(x, "latin1")]))

const keys = (spec: string): Uint8Array => Either.getOrThrow(parseDetachKeys(spec))

/** Feeds `chunks` in order; returns everything delivered and whether (and where) it detached. */
const run = (spec: string, ...chunks: ReadonlyArray<Uint8Array>) => {
  const matcher = makeMatcher(keys(spec))
  let held = 0
  const delivered: Array<number> = []
  let last: MatchStep | undefined
  for (const [i, chunk] of chunks.entries()) {
    last = feed(matcher, held, chunk)
    held = last.held
    delivered.push(...last.output)
    if (last.detached) return { delivered: Uint8Array.from(delivered), detachedAt: i, rest: last.rest, held }
  }
  return { delivered: Uint8Array.from(delivered), detachedAt: -1, rest: new Uint8Array(0), held, matcher }
}

describe("detach keys: parsing (Docker's rules)", () => {
  it("defaults to ctrl-]", () => {
    assert.strictEqual(DEFAULT_DETACH_KEYS, "ctrl-]")
    assert.deepStrictEqual(keys(DEFAULT_DETACH_KEYS), bytes(0x1d))
  })

  it("maps every control name to its byte", () => {
    assert.deepStrictEqual(keys("ctrl-@"), bytes(0))
    assert.deepStrictEqual(keys("ctrl-a"), bytes(1))
    assert.deepStrictEqual(keys("ctrl-z"), bytes(26))
    assert.deepStrictEqual(keys("ctrl-["), bytes(27))
    assert.deepStrictEqual(keys("ctrl-\\"), bytes(28))
    assert.deepStrictEqual(keys("ctrl-]"), bytes(29))
    assert.deepStrictEqual(keys("ctrl-^"), bytes(30))
    assert.deepStrictEqual(keys("ctrl-_"), bytes(31))
    for (let i = 0; i < 26; i++) {
      assert.deepStrictEqual(keys(`ctrl-${String.fromCharCode(97 + i)}`), bytes(i + 1))
    }
  })

  it("parses sequences, single characters and DEL", () => {
    assert.deepStrictEqual(keys("ctrl-p,ctrl-q"), bytes(0x10, 0x11))
    assert.deepStrictEqual(keys("a"), bytes("a"))
    assert.deepStrictEqual(keys("ctrl-a,x,%"), bytes(1, "x", "%"))
    assert.deepStrictEqual(keys(" "), bytes(" "))
    assert.deepStrictEqual(keys("DEL"), bytes(0x7f))
    assert.deepStrictEqual(keys("A,ctrl-b"), bytes("A", 2))
  })

  it("refuses empty, incomplete, unknown, upper-case and non-ASCII keys with InvalidOptionError", () => {
    for (
      const spec of [
        "",
        ",",
        "ctrl-",
        "ctrl-ab",
        "ctrl-A",
        "CTRL-a",
        "ctrl-1",
        "ctrl-p,",
        "ctrl-p,,ctrl-q",
        "ctrl-p, ctrl-q",
        "alt-x",
        "del",
        "é",
        "ab"
      ]
    ) {
      const parsed = parseDetachKeys(spec)
      assert.isTrue(Either.isLeft(parsed), `${JSON.stringify(spec)} should be refused`)
      if (Either.isLeft(parsed)) {
        assert.strictEqual(parsed.left._tag, "InvalidOptionError")
        assert.strictEqual(parsed.left.option, "detachKeys")
      }
    }
    const named = parseDetachKeys("ctrl-ab", "--detach-keys")
    assert.isTrue(Either.isLeft(named) && named.left.message.includes("--detach-keys"))
  })
})

describe("detach keys: streaming matcher", () => {
  it("detaches on the sequence and delivers the bytes typed before it in the same read", () => {
    const r = run("ctrl-]", bytes("ls -l", 0x1d, "after"))
    assert.strictEqual(r.detachedAt, 0)
    assert.deepStrictEqual(r.delivered, bytes("ls -l"))
    assert.deepStrictEqual(r.rest, bytes("after"))
  })

  it("passes input without the sequence through unchanged (the same bytes)", () => {
    const chunk = bytes("echo hello\r")
    const step = feed(makeMatcher(keys("ctrl-p,ctrl-q")), 0, chunk)
    assert.strictEqual(step.output, chunk)
    assert.isFalse(step.detached)
  })

  it("matches a sequence split across reads, holding its first keys back meanwhile", () => {
    const r = run("ctrl-p,ctrl-q", bytes("a", 0x10), bytes(0x11))
    assert.strictEqual(r.detachedAt, 1)
    assert.deepStrictEqual(r.delivered, bytes("a"))
    const three = run("a,b,c", bytes("x", "a"), bytes("b"), bytes("c", "y"))
    assert.strictEqual(three.detachedAt, 2)
    assert.deepStrictEqual(three.delivered, bytes("x"))
    assert.deepStrictEqual(three.rest, bytes("y"))
  })

  it("delivers a partial match that turns out not to match, in order, without eating it", () => {
    const r = run("ctrl-p,ctrl-q", bytes(0x10), bytes("x"), bytes(0x10, 0x10), bytes("y"))
    assert.strictEqual(r.detachedAt, -1)
    assert.deepStrictEqual(r.delivered, bytes(0x10, "x", 0x10, 0x10, "y"))
    assert.strictEqual(r.held, 0)
    const inOne = run("a,b,c", bytes("abxab"))
    assert.deepStrictEqual(inOne.delivered, bytes("abx"))
    assert.strictEqual(inOne.held, 2)
    assert.deepStrictEqual(heldBytes(inOne.matcher!, inOne.held), bytes("ab"))
  })

  it("finds the sequence after overlapping false starts (ctrl-p,ctrl-p,ctrl-q after three ctrl-p)", () => {
    const r = run("ctrl-p,ctrl-p,ctrl-q", bytes(0x10), bytes(0x10), bytes(0x10), bytes(0x11))
    assert.strictEqual(r.detachedAt, 3)
    assert.deepStrictEqual(r.delivered, bytes(0x10))
    const abab = run("a,b,a,c", bytes("ababac"))
    assert.strictEqual(abab.detachedAt, 0)
    assert.deepStrictEqual(abab.delivered, bytes("ab"))
  })

  it("with a one-key sequence, holds nothing back", () => {
    const r = run("ctrl-a", bytes("abc"), bytes("def"))
    assert.strictEqual(r.detachedAt, -1)
    assert.strictEqual(r.held, 0)
    assert.deepStrictEqual(r.delivered, bytes("abcdef"))
  })
})

// ------------------------------------------------------------------------------------------------
// Library: a fake terminal (streams that say they are TTYs) against a real LocalSandbox.

interface FakeTerminal {
  readonly input: PassThrough & SshClient.AttachInput & { readonly modes: Array<boolean> }
  readonly output: PassThrough & SshClient.AttachOutput & { columns: number; rows: number }
  readonly type: (text: string | Uint8Array) => Effect.Effect<void>
  /** Waits until the output (since the last `waitFor`) matches. */
  readonly waitFor: (pattern: RegExp) => Effect.Effect<RegExpMatchArray, Error>
  readonly text: () => string
}

const fakeTerminal = (cols = 90, rows = 20): FakeTerminal => {
  const modes: Array<boolean> = []
  const input = Object.assign(new PassThrough(), { isTTY: true, isRaw: false, modes })
  const setRawMode = (mode: boolean) => {
    modes.push(mode)
    input.isRaw = mode
    return input
  }
  Object.assign(input, { setRawMode })
  const output = Object.assign(new PassThrough(), { isTTY: true, columns: cols, rows })
  let text = ""
  let from = 0
  output.on("data", (b: Buffer) => {
    text += b.toString("utf8")
  })
  return {
    input: input as FakeTerminal["input"],
    output,
    text: () => text,
    type: (t) => Effect.sync(() => void input.write(t)),
    waitFor: (pattern) =>
      Effect.gen(function*() {
        const deadline = Date.now() + 20_000
        for (;;) {
          const match = text.slice(from).match(pattern)
          if (match !== null) {
            from += (match.index ?? 0) + match[0].length
            return match
          }
          if (Date.now() > deadline) {
            return yield* Effect.fail(new Error(`timed out waiting for ${pattern}; output: ${JSON.stringify(text)}`))
          }
          yield* Effect.sleep(20)
        }
      })
  }
}

const withSandbox = <A, E>(f: (sandbox: Sandbox) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function*() {
    const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
    return yield* f(sandbox)
  }).pipe(Effect.scoped, Effect.provide(SshKeys.layer))

const openClient = (sandbox: Sandbox, options?: SandboxSsh.ClientOptions) =>
  SandboxSsh.make(sandbox).openClient(options)

const processAliveIn = (client: SshClient.SshClient, pid: string) =>
  Effect.map(client.exec(`kill -0 ${pid} 2>/dev/null && echo alive || echo gone`), (o) => o.stdoutText.trim())

const listenerCounts = (t: FakeTerminal) => ({
  readable: t.input.listenerCount("readable"),
  data: t.input.listenerCount("data"),
  resize: t.output.listenerCount("resize"),
  sigterm: process.listenerCount("SIGTERM"),
  sighup: process.listenerCount("SIGHUP"),
  sigint: process.listenerCount("SIGINT"),
  exit: process.listenerCount("exit")
})

describe("SshClient.attach (library, fake terminal streams, LocalSandbox bubblewrap)", () => {
  it.live("refuses bad options and non-terminals before anything starts", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox)
        // Under vitest, stdin and stdout are pipes.
        const notTty = yield* Effect.flip(client.attach())
        assert.strictEqual(notTty._tag, "NotATerminalError")
        assert.match(notTty.message, /not a terminal: stdin is not a terminal/)
        const t = fakeTerminal()
        const outputNotTty = yield* Effect.flip(client.attach({ input: t.input, output: new PassThrough() }))
        assert.strictEqual(outputNotTty._tag, "NotATerminalError")
        // Option errors come first, even without a terminal.
        for (const detachKeys of ["", "ctrl-", "ctrl-ab", "meta-x", "ctrl-p,,ctrl-q"]) {
          const error = yield* Effect.flip(client.attachResult({ detachKeys }))
          assert.strictEqual(error._tag, "InvalidOptionError", detachKeys)
        }
        const badTerm = yield* Effect.flip(client.attach({ term: "x term", input: t.input, output: t.output }))
        assert.strictEqual(badTerm._tag, "InvalidOptionError")
        assert.deepStrictEqual(t.input.modes, [], "raw mode was never touched")
        // No shell was started by any of these.
        const shells = yield* client.exec("ps -eo args | grep -c '^/bin/sh -l' || true")
        assert.strictEqual(shells.stdoutText.trim(), "0")
      })
    ))

  it.live("runs a login shell on a PTY of the terminal's size, relays resizes, returns the exit code", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox, { term: "xterm-256color" })
        const t = fakeTerminal(90, 20)
        const before = listenerCounts(t)
        const fiber = yield* Effect.fork(client.attach({ input: t.input, output: t.output }))
        yield* t.type("echo TTY=$(tty) SIZE=$(stty size) TERM=$TERM MARK-$((40+2))\r")
        const [line] = yield* t.waitFor(/TTY=\S+ SIZE=\d+ \d+ TERM=\S+ MARK-42/)
        assert.match(line, /^TTY=\/dev\/pts\/\d+ SIZE=20 90 TERM=xterm-256color MARK-42$/)
        assert.deepStrictEqual(t.input.modes, [true])
        t.output.columns = 120
        t.output.rows = 40
        t.output.emit("resize")
        yield* t.type("echo RESIZED=$(stty size)-$((1+1))\r")
        const [resized] = yield* t.waitFor(/RESIZED=\d+ \d+-2/)
        assert.strictEqual(resized, "RESIZED=40 120-2")
        yield* t.type("echo bye; exit 7\r")
        const code = yield* Fiber.join(fiber)
        assert.strictEqual(code, 7)
        assert.match(t.text(), /\r\nbye\r\n/, "output written before the exit reached the terminal")
        assert.deepStrictEqual(t.input.modes, [true, false], "raw mode restored")
        assert.deepStrictEqual(listenerCounts(t), before, "every listener and signal handler removed")
        assert.isFalse(t.input.readableFlowing, "the input is left paused")
        const shells = yield* client.exec("ps -eo args | grep -c '^/bin/sh -l' || true")
        assert.strictEqual(shells.stdoutText.trim(), "0")
      })
    ))

  it.live("reports a shell killed by a signal as 128 + n with the signal's name", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox)
        const t = fakeTerminal()
        const fiber = yield* Effect.fork(client.attachResult({ input: t.input, output: t.output }))
        yield* t.type("kill -KILL $$\r")
        const result = yield* Fiber.join(fiber)
        assert.deepStrictEqual(result, SshClient.AttachResult.Exited({ code: 137, signal: "KILL" }))
        assert.deepStrictEqual(t.input.modes, [true, false])
      })
    ))

  it.live("detaches: bytes before the sequence are delivered, the shell keeps running until the client closes", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const observer = yield* openClient(sandbox)
        const pid = yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* openClient(sandbox)
          const t = fakeTerminal()
          const before = listenerCounts(t)
          const fiber = yield* Effect.fork(client.attachResult({ input: t.input, output: t.output }))
          yield* t.type("echo PID=$$-$((2+3))\r")
          const [, pid] = yield* t.waitFor(/PID=(\d+)-5/)
          yield* t.type("cat > /tmp/typed\r")
          yield* t.waitFor(/cat > \/tmp\/typed\r\n/)
          yield* Effect.sleep(200)
          // One read: a line for cat, then the detach key, then bytes that must not be delivered.
          yield* t.type(bytes("abc\r", 0x1d, "lost\r"))
          const result = yield* Fiber.join(fiber)
          assert.deepStrictEqual(result, SshClient.AttachResult.Detached())
          assert.deepStrictEqual(t.input.modes, [true, false])
          assert.deepStrictEqual(listenerCounts(t), before)

          // The same client (and the sandbox) still sees the shell and its foreground cat.
          assert.strictEqual(yield* processAliveIn(client, pid!), "alive")
          const ps = yield* client.exec("ps -eo pid,args")
          assert.match(ps.stdoutText, new RegExp(`^\\s*${pid} /bin/sh -l$`, "m"))
          assert.match(ps.stdoutText, /^\s*\d+ cat$/m)
          // what was typed reaches the file once the foreground cat has read it (polled)
          let typed = (yield* client.exec("cat /tmp/typed")).stdoutText
          for (let i = 0; i < 50 && typed !== "abc\n"; i++) {
            yield* Effect.sleep(100)
            typed = (yield* client.exec("cat /tmp/typed")).stdoutText
          }
          assert.strictEqual(typed, "abc\n")

          // A detach returns -1 from `attach`; a split, partially false sequence still works.
          const t2 = fakeTerminal()
          const second = yield* Effect.fork(
            client.attach({ input: t2.input, output: t2.output, detachKeys: "ctrl-p,ctrl-q" })
          )
          yield* t2.type("cat > /tmp/partial\r")
          yield* t2.waitFor(/cat > \/tmp\/partial\r\n/)
          yield* Effect.sleep(200)
          yield* t2.type(bytes(0x10))
          yield* Effect.sleep(50)
          yield* t2.type("x\r")
          yield* Effect.sleep(50)
          yield* t2.type(bytes(0x10))
          yield* Effect.sleep(50)
          yield* t2.type(bytes(0x11))
          assert.strictEqual(yield* Fiber.join(second), SshClient.DETACHED_CODE)
          assert.strictEqual(SshClient.DETACHED_CODE, -1)
          yield* Effect.sleep(100)
          assert.deepStrictEqual(
            new Uint8Array((yield* client.exec("cat /tmp/partial")).stdout),
            bytes(0x10, "x\n"),
            "a ctrl-p not followed by ctrl-q reaches the shell"
          )
          return pid!
        }))
        // The client closed: its detached shells ended with it.
        for (let i = 0; i < 50 && (yield* processAliveIn(observer, pid)) === "alive"; i++) yield* Effect.sleep(100)
        assert.strictEqual(yield* processAliveIn(observer, pid), "gone")
      })
    ))

  it.live("a signal to the program restores every attached terminal at once; handlers exist only while attached", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox)
        // Another SIGTERM handler (as NodeRuntime.runMain installs) decides what the signal does.
        const other = () => undefined
        process.on("SIGTERM", other)
        yield* Effect.addFinalizer(() => Effect.sync(() => process.off("SIGTERM", other)))
        const a = fakeTerminal()
        const b = fakeTerminal()
        const before = listenerCounts(a)
        const fa = yield* Effect.fork(client.attach({ input: a.input, output: a.output }))
        const fb = yield* Effect.fork(client.attach({ input: b.input, output: b.output }))
        yield* a.type("echo A-$((1+1))\r")
        yield* b.type("echo B-$((1+1))\r")
        yield* a.waitFor(/A-2/)
        yield* b.waitFor(/B-2/)
        const during = listenerCounts(a)
        assert.strictEqual(during.sigterm, before.sigterm + 1, "one handler for all attaches")
        assert.strictEqual(during.sighup, before.sighup + 1)
        assert.strictEqual(during.exit, before.exit + 1)
        process.emit("SIGTERM", "SIGTERM")
        assert.deepStrictEqual(a.input.modes, [true, false], "restored synchronously by the handler")
        assert.deepStrictEqual(b.input.modes, [true, false])
        yield* a.type("exit 1\r")
        yield* b.type("exit 2\r")
        assert.deepStrictEqual([yield* Fiber.join(fa), yield* Fiber.join(fb)], [1, 2])
        assert.deepStrictEqual(a.input.modes, [true, false], "restored once")
        assert.deepStrictEqual(listenerCounts(a), before)
      })
    ))

  it.live("interrupting attach ends the shell and restores the terminal", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox)
        const t = fakeTerminal()
        const before = listenerCounts(t)
        const fiber = yield* Effect.fork(client.attach({ input: t.input, output: t.output }))
        yield* t.type("echo PID=$$-$((2+3))\r")
        const [, pid] = yield* t.waitFor(/PID=(\d+)-5/)
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(t.input.modes, [true, false])
        assert.deepStrictEqual(listenerCounts(t), before)
        for (let i = 0; i < 50 && (yield* processAliveIn(client, pid!)) === "alive"; i++) yield* Effect.sleep(100)
        assert.strictEqual(yield* processAliveIn(client, pid!), "gone")
      })
    ))

  it.live("fails with ConnectionError when the client closes under it, and restores the terminal", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox)
        const t = fakeTerminal()
        const fiber = yield* Effect.fork(client.attach({ input: t.input, output: t.output }))
        yield* t.type("echo UP-$((1+1))\r")
        yield* t.waitFor(/UP-2/)
        yield* client.close
        const error = yield* Effect.flip(Fiber.join(fiber))
        assert.strictEqual(error._tag, "ConnectionError")
        assert.deepStrictEqual(t.input.modes, [true, false])
        const after = yield* Effect.flip(client.attach({ input: t.input, output: t.output }))
        assert.strictEqual(after._tag, "ConnectionError")
      })
    ))

  it.live("exec with tty uses the client's term and the local terminal's size", () =>
    withSandbox((sandbox) =>
      Effect.gen(function*() {
        const client = yield* openClient(sandbox, { term: "screen-256color" })
        const stdout = process.stdout as unknown as Record<string, unknown>
        const out = yield* Effect.acquireUseRelease(
          Effect.sync(() => {
            const saved = { isTTY: stdout.isTTY, columns: stdout.columns, rows: stdout.rows }
            Object.assign(stdout, { isTTY: true, columns: 133, rows: 41 })
            return saved
          }),
          () => client.exec("echo $TERM $(stty size)", { tty: true }),
          (saved) => Effect.sync(() => Object.assign(stdout, saved))
        )
        assert.strictEqual(out.stdoutText.trim(), "screen-256color 41 133")
        const explicit = yield* client.exec("stty size", { tty: true, size: { cols: 50, rows: 10 } })
        assert.strictEqual(explicit.stdoutText.trim(), "10 50")
        // Without a local terminal: 80×24.
        const plain = yield* client.exec("stty size", { tty: true })
        assert.strictEqual(plain.stdoutText.trim(), "24 80")
      })
    ))
})

// ------------------------------------------------------------------------------------------------
// The CLI in a real terminal: a private tmux server, a 100×30 pane running bash.

const repo = Path.resolve(import.meta.dirname, "..")
const cli = Path.join(repo, "bin", "sandbox-ssh.js")

const bundleBuilt = (): boolean => {
  try {
    return fs.readFileSync(Path.join(repo, "dist", "cli.cjs"), "utf8").includes("--detach-keys")
  } catch {
    return false
  }
}

/** A temporary directory for one test (sandbox roots, stty captures), removed with the scope. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(Path.join(os.tmpdir(), "sandbox-ssh-attach-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** Host processes whose command line mentions `needle` (a test's unique temp path). */
const processesMentioning = (needle: string) => allProcesses().filter((p) => p.args.includes(needle))

const waitNoProcesses = (needle: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100 && processesMentioning(needle).length > 0; i++) yield* Effect.sleep(50)
    assert.deepStrictEqual(processesMentioning(needle).map((p) => p.args), [])
  })

/** Starts the CLI's attach in the pane, bracketed by `stty -a` captures of the host terminal. */
const startAttach = (t: Tmux.Tmux, dir: string, name: string, extra = "") =>
  Effect.gen(function*() {
    const root = Path.join(dir, name)
    fs.mkdirSync(root)
    yield* t.line(
      `stty -a > ${dir}/${name}.before; node ${cli} attach --root ${root} --isolation bubblewrap ${extra}; ` +
        `echo "EXIT:$?"; stty -a > ${dir}/${name}.after`
    )
    // Typed ahead: the sandbox shell echoes it once it runs. The answer differs from the text typed.
    yield* t.line(`echo ${name}-READY-$((20+1))`)
    yield* t.waitFor(new RegExp(`${name}-READY-21`))
    return root
  })

const sttyUnchanged = (dir: string, name: string) =>
  Effect.gen(function*() {
    const after = Path.join(dir, `${name}.after`)
    for (let i = 0; i < 100 && !fs.existsSync(after); i++) yield* Effect.sleep(50)
    yield* Effect.sleep(100)
    const before = fs.readFileSync(Path.join(dir, `${name}.before`), "utf8")
    assert.match(before, /icanon/)
    assert.strictEqual(fs.readFileSync(after, "utf8"), before, "stty -a of the host terminal is unchanged")
  })

/** The CLI process started from the pane's bash. */
const cliPid = (t: Tmux.Tmux) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100; i++) {
      const found = allProcesses().find((p) => p.ppid === t.panePid && p.args.includes("sandbox-ssh.js attach"))
      if (found !== undefined) return found.pid
      yield* Effect.sleep(50)
    }
    return yield* Effect.fail(new Error("the CLI process was not found"))
  })

const inTmux = <A, E>(f: (t: Tmux.Tmux, dir: string) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function*() {
    assert.isTrue(bundleBuilt(), "dist/cli.cjs lacks attach: run `npm run build`")
    const dir = yield* tempDir
    const result = yield* Effect.scoped(Effect.gen(function*() {
      const t = yield* Tmux.make({ cols: 100, rows: 30, cwd: dir })
      yield* t.waitFor(/host\$/)
      return yield* f(t, dir)
    }))
    // The tmux server, the CLI and every sandbox process are gone.
    yield* waitNoProcesses(dir)
    return result
  }).pipe(Effect.scoped)

describe("sandbox-ssh attach in a real terminal (tmux)", () => {
  it.live("shell on the pane's PTY: tty, size and resize, Ctrl-C, vi, exit 3, host terminal restored", () =>
    inTmux((t, dir) =>
      Effect.gen(function*() {
        yield* startAttach(t, dir, "main")
        yield* t.line("echo TTY=$(tty)-$((1+1))")
        const [tty] = yield* t.waitFor(/TTY=\S+-2/)
        assert.match(tty, /^TTY=\/dev\/pts\/\d+-2$/)
        yield* t.line("echo SIZE=$(stty size)-$((1+1))")
        assert.strictEqual((yield* t.waitFor(/SIZE=\d+ \d+-2/))[0], "SIZE=30 100-2")
        yield* t.resize(120, 40)
        yield* Effect.sleep(300)
        yield* t.line("echo RESIZED=$(stty size)-$((1+1))")
        assert.strictEqual((yield* t.waitFor(/RESIZED=\d+ \d+-2/))[0], "RESIZED=40 120-2")

        // Ctrl-C reaches the sandbox's foreground job, not the CLI.
        yield* t.line("sleep 100")
        yield* Effect.sleep(500)
        yield* t.keys("C-c")
        yield* t.line("echo AFTER=$?-$((3+4))")
        assert.strictEqual((yield* t.waitFor(/AFTER=\d+-7/))[0], "AFTER=130-7")

        // A full-screen program draws on the whole pane and quits.
        yield* t.line("vi /tmp/new-file.txt")
        yield* t.waitFor(/"\/tmp\/new-file.txt" \[New\]/)
        const screen = yield* t.screen
        assert.isAtLeast(screen.split("\n").filter((l) => l === "~").length, 35, screen)
        yield* t.keys("Escape")
        yield* t.line(":q!")
        yield* Effect.sleep(700)
        yield* t.line("echo VI=$((6*7))")
        yield* t.waitFor(/VI=42/)

        yield* t.resize(100, 30)
        yield* Effect.sleep(300)
        yield* t.line("exit 3")
        yield* t.waitFor(/EXIT:3/)
        yield* sttyUnchanged(dir, "main")
      })
    ))

  it.live("detach keys (default ctrl-], then ctrl-p,ctrl-q) return to the host shell", () =>
    inTmux((t, dir) =>
      Effect.gen(function*() {
        yield* startAttach(t, dir, "plain")
        yield* t.keys("C-]")
        yield* t.waitFor(/sandbox-ssh: detached \(ctrl-\]\)/)
        yield* t.waitFor(/EXIT:0/)
        yield* sttyUnchanged(dir, "plain")
        yield* waitNoProcesses(Path.join(dir, "plain"))

        yield* startAttach(t, dir, "custom", "--detach-keys ctrl-p,ctrl-q")
        // ctrl-] is an ordinary key now, and a lone ctrl-p is delivered once the next key is not ctrl-q.
        yield* t.line("od -An -c")
        yield* Effect.sleep(300)
        yield* t.keys("C-]", "C-p", "z", "Enter", "C-d")
        yield* t.waitFor(/035 020 {3}z {2}\\n/)
        yield* t.keys("C-p")
        yield* Effect.sleep(100)
        yield* t.keys("C-q")
        yield* t.waitFor(/sandbox-ssh: detached \(ctrl-p,ctrl-q\)/)
        yield* t.waitFor(/EXIT:0/)
        yield* sttyUnchanged(dir, "custom")
      })
    ))

  it.live("SIGTERM and SIGHUP to the CLI restore the host terminal", () =>
    inTmux((t, dir) =>
      Effect.gen(function*() {
        // SIGTERM: NodeRuntime interrupts the program; the attach's finalizers restore the terminal.
        yield* startAttach(t, dir, "term")
        process.kill(yield* cliPid(t), "SIGTERM")
        yield* t.waitFor(/EXIT:\d+/)
        yield* sttyUnchanged(dir, "term")
        yield* waitNoProcesses(Path.join(dir, "term"))

        // SIGHUP: the CLI interrupts like SIGTERM (finalizers run, nothing left behind) and exits 129.
        yield* startAttach(t, dir, "hup")
        process.kill(yield* cliPid(t), "SIGHUP")
        yield* t.waitFor(/EXIT:129/)
        yield* sttyUnchanged(dir, "hup")
      })
    ))

  it.live("refuses bad detach keys and a non-terminal before the sandbox starts", () =>
    Effect.gen(function*() {
      assert.isTrue(bundleBuilt(), "dist/cli.cjs lacks attach: run `npm run build`")
      const dir = yield* tempDir
      const runCli = (args: ReadonlyArray<string>) =>
        Effect.async<{ code: number | null; stderr: string }>((resume) => {
          const child = execFile(process.execPath, [cli, ...args], { timeout: 30_000 }, (error, _stdout, stderr) => {
            resume(Effect.succeed({ code: error === null ? 0 : (error as { code?: number }).code ?? null, stderr }))
          })
          child.stdin?.end()
          return Effect.sync(() => child.kill("SIGKILL"))
        })
      for (const keys of ["ctrl-", "ctrl-ab", "ctrl-p,", "nope"]) {
        const r = yield* runCli(["attach", "--root", dir, "--detach-keys", keys])
        assert.strictEqual(r.code, 1, r.stderr)
        assert.match(r.stderr, /invalid option --detach-keys/)
      }
      const notTty = yield* runCli(["attach", "--root", dir])
      assert.strictEqual(notTty.code, 1)
      assert.match(notTty.stderr, /not a terminal: stdin is not a terminal/)
      // The sandbox never started: it writes its /etc into the root on start.
      assert.deepStrictEqual(fs.readdirSync(dir), [])
    }).pipe(Effect.scoped))
})
