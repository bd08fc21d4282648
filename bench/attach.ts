/**
 * Keystroke-to-echo latency of an interactive session, through a real pseudo-terminal: a program
 * runs on a PTY (node-pty), a character is typed, and the time until it is echoed back is taken.
 *
 * - ours: `node bin/sandbox-ssh.js attach` (the bundled CLI) on a LocalSandbox; the echo travels
 *   sandbox PTY → sandbox agent → ssh2 server → in-memory duplex → ssh2 client → the CLI's stdout.
 * - anchor: `ssh -tt` to the OpenSSH anchor (bench/anchor.ts) on a direct connection (no
 *   ControlMaster hop), running the same `/bin/sh -l`: sandbox PTY → sshd → TCP → ssh.
 *
 * - library: `client.attach` in-process with in-memory terminal streams (no CLI, no local PTY).
 *
 * Both shells are dash in canonical mode, so the echo itself is the kernel's line discipline on the
 * remote PTY: what differs is the path. Between samples the character is erased (not timed) so
 * the line never wraps. Run alone with `npx tsx bench/attach.ts`.
 */
import * as pty from "@lydell/node-pty"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"
import { performance } from "node:perf_hooks"
import { PassThrough } from "node:stream"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import * as SshKeys from "../src/SshKeys.js"
import * as Anchor from "./anchor.js"
import type { RunCounts, Samples } from "./util.js"
import { BenchError, runCounts, sample, summarize } from "./util.js"

export interface AttachLatencyResults {
  /** Keystroke → echo through `sandbox-ssh attach`. */
  readonly ours: Samples
  /** Keystroke → echo through `ssh -tt` to the anchor's sshd. */
  readonly anchor: Samples
  /** Keystroke → echo through `client.attach` in this process (no CLI, no local PTY). */
  readonly library: Samples
  /** Time from starting `sandbox-ssh attach` to the first echoed answer of the shell (one run). */
  readonly oursStartMs: number
  readonly anchorStartMs: number
  /** How the two sides were set up, for the report. */
  readonly note: string
}

interface Session {
  readonly write: (data: string) => void
  /** Resolves when the output since the last wait contains `needle`. */
  readonly waitFor: (needle: string, timeoutMs?: number) => Effect.Effect<void, BenchError>
}

/** A program on a PTY; killed (process group) when the scope closes. */
const spawnOnPty = (
  file: string,
  args: ReadonlyArray<string>,
  cwd: string
): Effect.Effect<Session, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const term = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          pty.spawn(file, [...args], {
            name: "xterm",
            cols: 200,
            rows: 50,
            cwd,
            env: { ...process.env, TERM: "xterm", SHLVL: "1" }
          }),
        catch: (cause) => new BenchError({ message: `cannot start ${file} on a PTY`, cause })
      }),
      (term) =>
        Effect.async<void>((resume) => {
          let done = false
          const finish = () => {
            if (done) return
            done = true
            clearTimeout(timer)
            resume(Effect.void)
          }
          const exited = term.onExit(finish)
          const timer = setTimeout(() => {
            try {
              term.kill("SIGKILL")
            } catch {
              // gone
            }
            setTimeout(finish, 200)
          }, 3000)
          try {
            term.kill("SIGTERM")
          } catch {
            finish()
          }
          return Effect.sync(() => exited.dispose())
        })
    )
    let buffer = ""
    let waiter: { readonly needle: string; readonly done: () => void } | undefined
    const subscription = term.onData((data) => {
      buffer += data
      if (waiter !== undefined && buffer.includes(waiter.needle)) {
        const w = waiter
        waiter = undefined
        buffer = ""
        w.done()
      }
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => subscription.dispose()))
    return {
      write: (data) => term.write(data),
      waitFor: (needle, timeoutMs = 5000) =>
        Effect.async<void, BenchError>((resume) => {
          if (buffer.includes(needle)) {
            buffer = ""
            return resume(Effect.void)
          }
          const timer = setTimeout(() => {
            waiter = undefined
            resume(Effect.fail(new BenchError({ message: `no ${JSON.stringify(needle)} on the terminal: ${buffer}` })))
          }, timeoutMs)
          waiter = {
            needle,
            done: () => {
              clearTimeout(timer)
              resume(Effect.void)
            }
          }
          return Effect.sync(() => {
            clearTimeout(timer)
            waiter = undefined
          })
        })
    }
  })

const letters = "abcdefghijklmnopqrstuvwxyz"

/**
 * Starts `file args` on a PTY, waits for the shell to answer, then samples keystroke → echo.
 */
export const measureKeystrokes = (
  file: string,
  args: ReadonlyArray<string>,
  counts: { readonly runs: number; readonly warmup: number },
  cwd = process.cwd()
): Effect.Effect<{ readonly samples: Samples; readonly startMs: number }, BenchError> =>
  Effect.scoped(Effect.gen(function*() {
    const start = performance.now()
    const session = yield* spawnOnPty(file, args, cwd)
    // Typed ahead; the answer (21) differs from what is typed, so only the shell can produce it.
    session.write("echo READY-$((20+1))\r")
    yield* session.waitFor("READY-21", 30_000)
    const startMs = performance.now() - start
    let i = 0
    const samples = yield* sample(
      counts.runs,
      counts.warmup,
      Effect.gen(function*() {
        const c = letters[i++ % letters.length]!
        const t0 = performance.now()
        session.write(c)
        const echoed = yield* Effect.either(session.waitFor(c))
        const ms = performance.now() - t0
        // Erase it again (not timed): canonical mode echoes "\b \b".
        session.write("\x7f")
        yield* Effect.ignore(session.waitFor("\b"))
        return echoed._tag === "Right" ? ms : { failed: echoed.left.message }
      })
    )
    session.write("\x15exit\r")
    return { samples, startMs }
  }))

const repo = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

/** `sandbox-ssh attach` on a fresh LocalSandbox (isolation "auto") in a temporary directory. */
export const measureOurs = (
  counts: { readonly runs: number; readonly warmup: number }
): Effect.Effect<{ readonly samples: Samples; readonly startMs: number }, BenchError> =>
  Effect.scoped(Effect.gen(function*() {
    const cli = Path.join(repo, "bin", "sandbox-ssh.js")
    if (!fs.existsSync(Path.join(repo, "dist", "cli.cjs"))) {
      return yield* new BenchError({ message: "dist/cli.cjs is missing: run `npm run build`" })
    }
    const root = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(Path.join(os.tmpdir(), "ssb-attach-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    return yield* measureKeystrokes(process.execPath, [cli, "attach", "--root", root], counts, root)
  }))

/** `ssh -tt` to a running anchor, on its own connection, running `/bin/sh -l` as ours does. */
export const measureAnchor = (
  anchor: Anchor.Anchor,
  counts: { readonly runs: number; readonly warmup: number }
): Effect.Effect<{ readonly samples: Samples; readonly startMs: number }, BenchError> =>
  // "anchor" is the Host entry bench/anchor.ts writes into its ssh config.
  measureKeystrokes("ssh", ["-F", anchor.sshConfig, "-tt", "-o", "ControlPath=none", "anchor", "/bin/sh -l"], counts)

/**
 * The library alone, in this process: `client.attach` on a LocalSandbox with in-memory terminal
 * streams (no CLI process, no local PTY). Separates the SSH path from the CLI's own hops.
 */
export const measureLibrary = (
  counts: { readonly runs: number; readonly warmup: number }
): Effect.Effect<Samples, BenchError> =>
  Effect.gen(function*() {
    const sandbox = yield* LocalSandbox.make({ isolation: "auto" })
    const client = yield* SandboxSsh.make(sandbox).openClient()
    const input = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => undefined })
    const output = Object.assign(new PassThrough(), { isTTY: true, columns: 200, rows: 50 })
    let buffer = ""
    let waiter: { readonly needle: string; readonly done: () => void } | undefined
    output.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("latin1")
      if (waiter !== undefined && buffer.includes(waiter.needle)) {
        const w = waiter
        waiter = undefined
        buffer = ""
        w.done()
      }
    })
    const typeAndWait = (text: string, needle: string) =>
      Effect.async<void>((resume) => {
        waiter = { needle, done: () => resume(Effect.void) }
        input.write(text)
        return Effect.sync(() => {
          waiter = undefined
        })
      }).pipe(
        Effect.timeoutFail({
          duration: "30 seconds",
          onTimeout: () => new BenchError({ message: `no ${JSON.stringify(needle)} from attach: ${buffer}` })
        })
      )
    yield* Effect.forkScoped(client.attach({ input, output }))
    yield* typeAndWait("echo READY-$((20+1))\r", "READY-21")
    let i = 0
    return yield* sample(
      counts.runs,
      counts.warmup,
      Effect.gen(function*() {
        const c = letters[i++ % letters.length]!
        const t0 = performance.now()
        yield* typeAndWait(c, c)
        const ms = performance.now() - t0
        yield* typeAndWait("\x7f", "\b")
        return ms
      })
    )
  }).pipe(
    Effect.scoped,
    Effect.provide(SshKeys.layer),
    Effect.mapError((e) => e instanceof BenchError ? e : new BenchError({ message: String(e), cause: e }))
  )

/** Both sides, ours first; the anchor's sshd lives only for its half. */
export const measure = (counts: RunCounts): Effect.Effect<AttachLatencyResults, BenchError> =>
  Effect.gen(function*() {
    const keystrokes = { runs: counts.fast, warmup: counts.warmup }
    const ours = yield* measureOurs(keystrokes)
    const library = yield* measureLibrary(keystrokes)
    const anchor = yield* Effect.scoped(Effect.flatMap(Anchor.make, (a) => measureAnchor(a, keystrokes)))
    return {
      ours: ours.samples,
      anchor: anchor.samples,
      library,
      oursStartMs: ours.startMs,
      anchorStartMs: anchor.startMs,
      note: "both run /bin/sh -l (dash, canonical mode: the remote PTY echoes); ssh -tt on a direct connection " +
        `(no ControlMaster); start to first answer: ours ${ours.startMs.toFixed(0)} ms, ssh ${
          anchor.startMs.toFixed(0)
        } ms`
    }
  })

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const fmt = (s: Samples) => {
    const x = summarize(s.times)
    return `median ${x.median.toFixed(3)} ms (p10 ${x.p10.toFixed(3)}, p90 ${x.p90.toFixed(3)}, n ${x.n})${
      s.failures > 0 ? ` FAILURES ${s.failures}: ${s.firstFailure}` : ""
    }`
  }
  const program = Effect.gen(function*() {
    const r = yield* measure(runCounts())
    yield* Effect.log(`keystroke → echo, sandbox-ssh attach: ${fmt(r.ours)}; start ${r.oursStartMs.toFixed(0)} ms`)
    yield* Effect.log(`keystroke → echo, client.attach (in-process): ${fmt(r.library)}`)
    yield* Effect.log(`keystroke → echo, ssh -tt (OpenSSH):  ${fmt(r.anchor)}; start ${r.anchorStartMs.toFixed(0)} ms`)
    const ratio = summarize(r.ours.times).median / summarize(r.anchor.times).median
    yield* Effect.log(`ours/anchor: ${ratio.toFixed(3)}`)
  })
  const { runMain } = await import("@effect/platform-node/NodeRuntime")
  runMain(program)
}
