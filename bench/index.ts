/**
 * `npm run bench`: measures the library and an OpenSSH anchor (bench/anchor.ts) side by side in the
 * same run and prints one table of medians with ratios (ours / OpenSSH) and the SPEC §4 targets.
 *
 * Never asserts timings: it reports. Failed operations are counted and shown.
 *
 * Environment:
 * - `BENCH_RUNS` (default 30): runs of slow measurements (new connections); fast ones (exec on an
 *   open connection, spawn) get 4×, bursts of concurrent execs get ÷3 (at least 5).
 * - `BENCH_CONCURRENCY` (default 64): execs per concurrent burst.
 * - `BENCH_ANCHOR_KEX` (default `curve25519-sha256`): the anchor's key exchange.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Anchor from "./anchor.js"
import type { OursResults } from "./measure.js"
import type { Samples } from "./util.js"
import { run, runCounts, summarize } from "./util.js"

const ms = (x: number) => Number.isNaN(x) ? "n/a" : x >= 100 ? `${x.toFixed(1)} ms` : `${x.toFixed(2)} ms`
const med = (s: Samples | undefined) => s === undefined ? Number.NaN : summarize(s.times).median
const withFailures = (text: string, s: Samples | undefined) =>
  s !== undefined && s.failures > 0 ? `${text} (${s.failures} failed)` : text
const ratio = (a: number, b: number) => Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "n/a" : `${(a / b).toFixed(3)}`
const verdict = (ok: boolean | undefined) => ok === undefined ? "n/a" : ok ? "yes" : "NO"

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("-|-"), ...rows.map(line)].join("\n")
}

const shellOut = (command: string, args: ReadonlyArray<string>) =>
  run(command, args).pipe(
    Effect.map((r) => (r.stdout.trim() || r.stderr.trim()).split("\n")[0] ?? ""),
    Effect.orElseSucceed(() => "n/a")
  )

/** Live child processes of this process (Linux /proc), as "pid command". */
const childProcesses = (): ReadonlyArray<string> => {
  try {
    const tasks = fs.readdirSync(`/proc/${process.pid}/task`)
    const pids = tasks.flatMap((t) =>
      fs.readFileSync(`/proc/${process.pid}/task/${t}/children`, "utf8").trim().split(/\s+/).filter((x) => x !== "")
    )
    return pids.map((pid) => {
      try {
        return `${pid} ${fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim().slice(0, 80)}`
      } catch {
        return pid
      }
    })
  } catch {
    return []
  }
}

const main = Effect.gen(function*() {
  const counts = runCounts()
  const started = new Date()
  const childrenBefore = childProcesses() // e.g. tsx's esbuild service
  const loadBefore = os.loadavg()[0]!
  const [commit, bwrap] = yield* Effect.all([
    shellOut("git", ["rev-parse", "--short", "HEAD"]),
    shellOut("bwrap", ["--version"])
  ])
  yield* Console.error(
    `sandbox-ssh bench: ${counts.slow} slow / ${counts.fast} fast runs, ${counts.bursts} bursts of ${counts.concurrency}...`
  )

  // The anchor first, torn down before our side runs so the machine is quiet for both.
  const anchorRun = yield* Effect.scoped(Effect.gen(function*() {
    const anchor = yield* Anchor.make
    const results = yield* Anchor.measure(anchor, counts)
    return { anchor, results }
  }))
  const a = anchorRun.results
  yield* Console.error("anchor done; measuring sandbox-ssh...")

  // Our side: loaded dynamically so a missing or broken library still leaves the anchor figures.
  const oursOutcome = yield* Effect.tryPromise({ try: () => import("./ours.js"), catch: (e) => e }).pipe(
    Effect.flatMap((m) => m.measure(counts)),
    Effect.map((r): OursResults | string => r),
    Effect.catchAllCause((cause) => {
      const e = Cause.squash(cause)
      return Effect.succeed(e instanceof Error ? `${e.name}: ${e.message}` : String(e))
    })
  )
  const o = typeof oursOutcome === "string" ? undefined : oursOutcome
  // Both sides have closed their scopes: nothing they started should still be our child.
  const leftovers = childProcesses().filter((c) => !childrenBefore.includes(c))

  const spawnMed = med(o?.spawn)
  const execMed = med(o?.exec)
  const openMed = med(o?.openClient)
  const n = counts.concurrency
  const total = counts.bursts * n
  const oursConcurrent = o === undefined
    ? "n/a"
    : `${ms(med(o.concurrent))} (${total - o.concurrentFailed}/${total} ok)`
  const anchorConcurrent = `${ms(med(a.concurrent))} (c) (${total - a.concurrentFailed}/${total} ok)`

  const rows: Array<Array<string>> = [
    [
      "openClient (keys + handshake + auth)",
      withFailures(ms(openMed), o?.openClient),
      withFailures(`${ms(med(a.connect))} (a)`, a.connect),
      ratio(openMed, med(a.connect)),
      "<= 5 ms",
      verdict(o === undefined ? undefined : openMed <= 5)
    ],
    [
      "openClient + exec true + close",
      withFailures(ms(med(o?.connectExec)), o?.connectExec),
      withFailures(`${ms(med(a.connect))} (a)`, a.connect),
      ratio(med(o?.connectExec), med(a.connect)),
      "(like for like)",
      ""
    ],
    [
      "exec true on an open connection",
      withFailures(ms(execMed), o?.exec),
      withFailures(`${ms(med(a.muxExec))} (b)`, a.muxExec),
      ratio(execMed, med(a.muxExec)),
      `<= spawn + 1 ms${o === undefined ? "" : ` = ${ms(spawnMed + 1)}`}`,
      verdict(o === undefined ? undefined : execMed <= spawnMed + 1)
    ],
    [
      `${n} concurrent execs, one connection (wall)`,
      oursConcurrent,
      anchorConcurrent,
      ratio(med(o?.concurrent), med(a.concurrent)),
      "all succeed",
      verdict(o === undefined ? undefined : o.concurrentFailed === 0 && o.concurrent.failures === 0)
    ],
    [
      "spawn <shell> -c true",
      withFailures(ms(spawnMed), o?.spawn),
      withFailures(`${ms(med(a.localSpawn))} (d)`, a.localSpawn),
      ratio(spawnMed, med(a.localSpawn)),
      "(reference)",
      ""
    ],
    [
      "exec overhead: exec - spawn (paired rounds)",
      o === undefined ? "n/a" : ms(med(o.execMinusSpawn)),
      "",
      "",
      "<= 1 ms",
      verdict(o === undefined ? undefined : med(o.execMinusSpawn) <= 1)
    ]
  ]

  const cpus = os.cpus()
  const lines = [
    "",
    `sandbox-ssh bench  ${started.toISOString()}  (commit ${commit})`,
    `machine: nproc ${os.availableParallelism()}, ${cpus[0]?.model ?? "unknown cpu"}, ${
      (os.totalmem() / 2 ** 30).toFixed(1)
    } GiB, ${os.type()} ${os.release()}, node ${process.version}, load avg ${loadBefore.toFixed(2)} -> ${
      os.loadavg()[0]!.toFixed(2)
    } (start -> end)`,
    `anchor:  ${anchorRun.anchor.version}; sshd on 127.0.0.1:${anchorRun.anchor.port}, kex ${anchorRun.anchor.kex}, ` +
    `aes128-gcm, ed25519; ${anchorRun.anchor.probe.note}`,
    o === undefined
      ? `ours:    NOT MEASURED: ${oursOutcome as string}`
      : `ours:    LocalSandbox isolation "auto" -> ${o.isolation} (isolated: ${
        o.isolated ? "yes" : "no"
      }), shell ${o.shell}; ${bwrap}`,
    `runs:    ${counts.slow} per connect metric, ${counts.fast} per exec/spawn metric, ${counts.bursts} bursts of ${n} ` +
    `(BENCH_RUNS=${process.env.BENCH_RUNS ?? "30 (default)"}); each after ${counts.warmup} warm-up runs`,
    "",
    table(["metric (medians)", "ours", "OpenSSH anchor", "ours/anchor", "target (SPEC §4)", "met"], rows),
    "",
    "ours/anchor is a time ratio: below 1 means ours is faster. Anchor: (a) `ssh host true` on a new connection,",
    "(b) `ssh host true` over the ControlMaster connection, (c) that 64 times at once, (d) node spawning `/bin/sh -c true`",
    "on the host (a reference, not OpenSSH). OpenSSH figures include starting the `ssh` client process, as its users pay it.",
    "",
    "spread (p10 / median / p90, n):"
  ]
  const spread = (label: string, s: Samples | undefined) => {
    if (s === undefined) return
    const x = summarize(s.times)
    lines.push(
      `  ${label.padEnd(34)} ${ms(x.p10).padStart(10)} / ${ms(x.median).padStart(10)} / ${
        ms(x.p90).padStart(10)
      }, n ${x.n}${s.failures > 0 ? `; ${s.failures} failed, first: ${s.firstFailure}` : ""}`
    )
  }
  spread("ours openClient", o?.openClient)
  spread("ours connect+exec+close", o?.connectExec)
  spread("  phase: openClient", o?.connectPhases.open)
  spread("  phase: first exec true", o?.connectPhases.exec)
  spread("  phase: close", o?.connectPhases.close)
  spread("ours exec true", o?.exec)
  spread(`ours ${n} concurrent execs`, o?.concurrent)
  spread("ours sandbox.spawn", o?.spawn)
  spread("ours exec - spawn, same round", o?.execMinusSpawn)
  spread("anchor (a) new connection + true", a.connect)
  spread("anchor (b) mux exec true", a.muxExec)
  spread(`anchor (c) ${n} concurrent mux execs`, a.concurrent)
  spread("anchor (d) node spawn /bin/sh", a.localSpawn)
  lines.push(
    "",
    leftovers.length === 0
      ? "cleanup: no child process left after both sides closed their scopes"
      : `cleanup: ${leftovers.length} child process(es) LEFT after both sides closed: ${leftovers.join("; ")}`,
    "not measured yet (SPEC §4): SFTP 256 MiB read/write, streaming exec (cat) up/down, serve --stdio under ssh, memory."
  )
  yield* Console.log(lines.join("\n"))
})

NodeRuntime.runMain(main)
