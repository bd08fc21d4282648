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
 * - `BENCH_SFTP_MIB` (256), `BENCH_CAT_MIB` (= SFTP), `BENCH_IO_ROUNDS` (3), `BENCH_MEMORY_MIB` (1024):
 *   transfer sizes and rounds (bench/io.ts, bench/memory.ts).
 * - `BENCH_SFTP_STDIO=1`: also OpenSSH `sftp` through `serve --stdio` (off by default, for time).
 * - `BENCH_QUICK=1`: smaller defaults (8 runs, 64 MiB transfers, 1 round, 256 MiB memory transfer).
 *
 * Phases, in order: the anchor alone; our side alone (bench/measure.ts); transfers and real `ssh`
 * connections with a fresh anchor, interleaved round by round (bench/io.ts, memory in a child
 * process: bench/memory.ts); keystroke latency when bench/attach.ts exists.
 *
 * bench/attach.ts, when present, is expected to export `measure(counts: RunCounts)` (or
 * `measureAttach`) returning an Effect or Promise of `{ ours: Samples; anchor: Samples; isolation?:
 * string; note?: string }` (ms from keystroke to echo, ours vs `ssh -tt`). Anything else is shown as
 * "not measured" with the reason.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Anchor from "./anchor.js"
import type { IoResults, Measured } from "./io.js"
import type { OursResults } from "./measure.js"
import type { RunCounts, Samples } from "./util.js"
import { absorbRepeatedSignals, ioCounts, quick, run, runCounts, summarize } from "./util.js"

const ms = (x: number) => Number.isNaN(x) ? "n/a" : x >= 100 ? `${x.toFixed(1)} ms` : `${x.toFixed(2)} ms`
const med = (s: Samples | undefined) => s === undefined ? Number.NaN : summarize(s.times).median
const withFailures = (text: string, s: Samples | undefined) =>
  s !== undefined && s.failures > 0 ? `${text} (${s.failures} failed)` : text
const ratio = (a: number, b: number) => Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "n/a" : `${(a / b).toFixed(3)}`
const verdict = (ok: boolean | undefined) => ok === undefined ? "n/a" : ok ? "yes" : "NO"

const isNotMeasured = <A>(m: Measured<A> | undefined): m is { readonly notMeasured: string } =>
  typeof m === "object" && m !== null && "notMeasured" in m
const got = <A>(m: Measured<A> | undefined): A | undefined => m === undefined || isNotMeasured(m) ? undefined : m
const errorText = (e: unknown) => e instanceof Error ? `${e.name}: ${e.message}` : String(e)

/** Throughput of the median transfer of `mib` MiB. */
const rate = (s: Samples | undefined, mib: number) => mib / (med(s) / 1000)
const mibs = (x: number) => Number.isNaN(x) ? "n/a" : `${x.toFixed(0)} MiB/s`

interface AttachFigures {
  readonly ours: Samples
  readonly anchor: Samples
  readonly library?: Samples | undefined
  readonly isolation?: string | undefined
  readonly note?: string | undefined
}
const isSamples = (x: unknown): x is Samples =>
  typeof x === "object" && x !== null && Array.isArray((x as Samples).times)

/** bench/attach.ts (written separately) when it exists; see the contract in this module's comment. */
const measureAttach = (counts: RunCounts): Effect.Effect<AttachFigures | string> =>
  Effect.gen(function*() {
    if (!fs.existsSync(new URL("./attach.ts", import.meta.url))) {
      return "not measured: bench/attach.ts does not exist (keystroke-to-echo latency is not written yet)"
    }
    const m = (yield* Effect.tryPromise(() => import("./attach.js" as string))) as Record<string, unknown>
    const fn = [m.measureAttach, m.measure].find((f) => typeof f === "function") as
      | ((c: RunCounts) => unknown)
      | undefined
    if (fn === undefined) {
      return `not measured: bench/attach.ts exports no measure/measureAttach (exports: ${Object.keys(m).join(", ")})`
    }
    const out = fn(counts)
    const value: unknown = Effect.isEffect(out)
      ? yield* (out as Effect.Effect<unknown, unknown>)
      : yield* Effect.tryPromise(() => Promise.resolve(out))
    const v = value as Partial<AttachFigures> | undefined
    if (v === undefined || !isSamples(v.ours) || !isSamples(v.anchor)) {
      return `not measured: bench/attach.ts returned an unrecognized shape (${
        JSON.stringify(value)?.slice(0, 80)
      }); expected { ours: Samples, anchor: Samples }`
    }
    return v as AttachFigures
  }).pipe(Effect.catchAllCause((cause) =>
    Effect.succeed(`not measured: bench/attach.ts failed: ${errorText(Cause.squash(cause))}`)
  ))

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

  // Transfers and real `ssh` connections: a fresh anchor, both sides interleaved round by round.
  const io = ioCounts()
  yield* Console.error(
    `transfers: SFTP ${io.sftpMib} MiB, cat ${io.catMib} MiB, ${io.rounds} rounds; memory ${io.memoryMib} MiB...`
  )
  const ioOutcome = yield* Effect.scoped(Effect.gen(function*() {
    const anchor = yield* Anchor.make
    const m = yield* Effect.tryPromise({ try: () => import("./io.js"), catch: (e) => e })
    return yield* m.measure(anchor, counts, io)
  })).pipe(
    Effect.map((r): IoResults | string => r),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.succeed(errorText(Cause.squash(cause)))
    )
  )
  const t = typeof ioOutcome === "string" ? undefined : ioOutcome
  const attach = yield* measureAttach(counts)

  // Every phase has closed its scopes: nothing they started should still be our child.
  // tsx starts its esbuild transform service on first use (e.g. by a dynamic import); it belongs to tsx.
  const leftovers = childProcesses().filter((c) => !childrenBefore.includes(c) && !/esbuild --service/.test(c))

  const spawnMed = med(o?.spawn)
  const execMed = med(o?.exec)
  const openMed = med(o?.openClient)
  const n = counts.concurrency
  const total = counts.bursts * n
  const oursConcurrent = o === undefined
    ? "n/a"
    : `${ms(med(o.concurrent))} (${total - o.concurrentFailed}/${total} ok)`
  const anchorConcurrent = `${ms(med(a.concurrent))} (c) (${total - a.concurrentFailed}/${total} ok)`

  const iso = o === undefined ? "" : o.isolation
  const rows: Array<Array<string>> = [
    [
      "openClient (keys + handshake + auth)",
      iso,
      withFailures(ms(openMed), o?.openClient),
      withFailures(`${ms(med(a.connect))} (a)`, a.connect),
      ratio(openMed, med(a.connect)),
      "<= 5 ms",
      verdict(o === undefined ? undefined : openMed <= 5)
    ],
    [
      "openClient + exec true + close",
      iso,
      withFailures(ms(med(o?.connectExec)), o?.connectExec),
      withFailures(`${ms(med(a.connect))} (a)`, a.connect),
      ratio(med(o?.connectExec), med(a.connect)),
      "(like for like)",
      ""
    ],
    [
      "exec true on an open connection",
      iso,
      withFailures(ms(execMed), o?.exec),
      withFailures(`${ms(med(a.muxExec))} (b)`, a.muxExec),
      ratio(execMed, med(a.muxExec)),
      `<= spawn + 1 ms${o === undefined ? "" : ` = ${ms(spawnMed + 1)}`}`,
      verdict(o === undefined ? undefined : execMed <= spawnMed + 1)
    ],
    [
      `${n} concurrent execs, one connection (wall)`,
      iso,
      oursConcurrent,
      anchorConcurrent,
      ratio(med(o?.concurrent), med(a.concurrent)),
      "all succeed",
      verdict(o === undefined ? undefined : o.concurrentFailed === 0 && o.concurrent.failures === 0)
    ],
    [
      "spawn <shell> -c true",
      iso,
      withFailures(ms(spawnMed), o?.spawn),
      withFailures(`${ms(med(a.localSpawn))} (d)`, a.localSpawn),
      ratio(spawnMed, med(a.localSpawn)),
      "(reference)",
      ""
    ],
    [
      "exec overhead: exec - spawn (paired rounds)",
      iso,
      o === undefined ? "n/a" : ms(med(o.execMinusSpawn)),
      "",
      "",
      "<= 1 ms",
      verdict(o === undefined ? undefined : med(o.execMinusSpawn) <= 1)
    ]
  ]

  // Transfers: throughput of the median transfer; the ratio column stays a time ratio
  // (anchor MiB/s / ours MiB/s), so below 1 still means ours is faster.
  const speedTarget = "time <= 1 (>= 1.0x speed)"
  /** A row measured against `speedTarget`, or, with another `target`, a reference without verdict. */
  const transferRow = (
    label: string,
    isolation: string,
    ours: Samples | undefined,
    oursMib: number,
    anchor: Samples | undefined,
    anchorTag: string,
    anchorMib: number,
    target = speedTarget
  ): Array<string> => {
    const r = rate(ours, oursMib)
    const ra = rate(anchor, anchorMib)
    return [
      label,
      isolation,
      withFailures(mibs(r), ours),
      withFailures(`${mibs(ra)} (${anchorTag})`, anchor),
      ratio(ra, r),
      target,
      target !== speedTarget ? "" : verdict(Number.isNaN(r) || Number.isNaN(ra) ? undefined : r >= ra)
    ]
  }
  const notMeasuredRow = (label: string, isolation: string, why: string, target: string) => [
    label,
    isolation,
    `NOT MEASURED: ${why}`.slice(0, 60),
    "",
    "",
    target,
    "n/a"
  ]
  if (t === undefined) {
    rows.push(notMeasuredRow("transfers, ssh connections, memory", "", ioOutcome as string, "(SPEC §4)"))
  } else {
    const sm = t.counts.sftpMib
    const cm = t.counts.catMib
    const sc = got(t.sftpClient)
    const sa = got(t.sftpAnchor)
    const sl = got(t.sftpListener)
    const ss = got(t.sftpStdio)
    const sIso = t.sftpIsolation
    /** Against OpenSSH's default requests (e, f) or its 32 KiB ones (k, l). */
    const usual = { section: t.sftpAnchor, samples: sa, tags: { put: "e", get: "f" } }
    const small = { section: t.sftpSmallAnchor, samples: got(t.sftpSmallAnchor), tags: { put: "k", get: "l" } }
    const ssl = got(t.sftpSmallListener)
    // The reference is not ours: what the process does with a stream of its own chunks, no SSH.
    const reference = { isolation: "host", target: "(the runtime's floor)" }
    const sftpRows: Array<
      readonly [string, Measured<unknown>, Samples | undefined, "put" | "get", typeof usual, typeof reference?]
    > = [
      [`SFTP write ${sm} MiB: SftpClient.write (whole file)`, t.sftpClient, sc?.write, "put", usual],
      [`SFTP write ${sm} MiB: SftpClient.writeSink (stream)`, t.sftpClient, sc?.writeSink, "put", usual],
      [`SFTP read ${sm} MiB: SftpClient.read (whole file)`, t.sftpClient, sc?.read, "get", usual],
      [`SFTP read ${sm} MiB: SftpClient.readStream (stream)`, t.sftpClient, sc?.readStream, "get", usual],
      [
        `reference: FileSystem.stream ${sm} MiB of a local file (no SSH)`,
        t.sftpClient,
        sc?.localStream,
        "get",
        usual,
        reference
      ],
      [`OpenSSH sftp put ${sm} MiB -> our TCP listener`, t.sftpListener, sl?.put, "put", usual],
      [`OpenSSH sftp get ${sm} MiB <- our TCP listener`, t.sftpListener, sl?.get, "get", usual],
      [`OpenSSH sftp -B 32768 put ${sm} MiB -> our TCP listener`, t.sftpSmallListener, ssl?.put, "put", small],
      [`OpenSSH sftp -B 32768 get ${sm} MiB <- our TCP listener`, t.sftpSmallListener, ssl?.get, "get", small],
      [
        isNotMeasured(t.sftpStdio)
          ? `OpenSSH sftp put/get ${sm} MiB <-> serve --stdio`
          : `OpenSSH sftp put ${sm} MiB -> serve --stdio`,
        t.sftpStdio,
        ss?.put,
        "put",
        usual
      ],
      [`OpenSSH sftp get ${sm} MiB <- serve --stdio`, t.sftpStdio, ss?.get, "get", usual]
    ]
    for (const [label, section, samples, way, against, kind] of sftpRows) {
      // A section not measured at all gets one row, not one per direction.
      if (isNotMeasured(section) && way === "get" && section === t.sftpStdio) continue
      const isolation = kind?.isolation ?? sIso
      const target = kind?.target ?? speedTarget
      rows.push(
        isNotMeasured(section)
          ? notMeasuredRow(label, isolation, section.notMeasured, target)
          : isNotMeasured(against.section)
          ? notMeasuredRow(label, isolation, against.section.notMeasured, target)
          : transferRow(label, isolation, samples, sm, against.samples?.[way], against.tags[way], sm, target)
      )
    }
    const cat = got(t.cat)
    if (cat === undefined) {
      rows.push(
        notMeasuredRow(
          `exec cat up/down ${cm} MiB`,
          t.isolation,
          (t.cat as { notMeasured: string }).notMeasured,
          speedTarget
        )
      )
    } else {
      rows.push(
        transferRow(
          `exec cat up ${cm} MiB (spawn, stdin from a Stream)`,
          t.isolation,
          cat.oursUp,
          cm,
          cat.anchorUp,
          "g",
          cm
        )
      )
      rows.push(
        transferRow(
          `exec head down ${cm} MiB (spawn, stdout drained)`,
          t.isolation,
          cat.oursDown,
          cm,
          cat.anchorDown,
          "h",
          cm
        )
      )
    }
    const conn = got(t.connect)
    if (conn === undefined) {
      rows.push(
        notMeasuredRow(
          "ssh host true, new connection",
          t.isolation,
          (t.connect as { notMeasured: string }).notMeasured,
          "<= OpenSSH"
        )
      )
    } else {
      for (
        const [label, samples] of [
          ["ssh true, new conn: our TCP listener (in-process)", conn.listener],
          ["ssh true, new conn: serve --stdio ProxyCommand (daemon running)", conn.stdio],
          ["ssh true, first conn: serve --stdio starts the daemon", conn.stdioFirst]
        ] as const
      ) {
        const x = med(samples)
        const y = med(conn.anchor)
        rows.push([
          label,
          t.isolation,
          withFailures(ms(x), samples),
          withFailures(`${ms(y)} (i)`, conn.anchor),
          ratio(x, y),
          "<= OpenSSH (ratio <= 1)",
          verdict(Number.isNaN(x) || Number.isNaN(y) ? undefined : x <= y)
        ])
      }
    }
    const cli = got(t.cliVersion)
    rows.push(
      cli === undefined
        ? notMeasuredRow(
          "CLI start-up: sandbox-ssh --version",
          "",
          (t.cliVersion as { notMeasured: string }).notMeasured,
          "(reference)"
        )
        : [
          "CLI start-up: node bin/sandbox-ssh.js --version",
          "-",
          withFailures(ms(med(cli)), cli),
          "",
          "",
          "(reference)",
          ""
        ]
    )
    const mem = got(t.memory)
    if (mem === undefined) {
      rows.push(
        notMeasuredRow(
          "RSS growth, transfer each way",
          "",
          (t.memory as { notMeasured: string }).notMeasured,
          "< 64 MiB"
        )
      )
    } else {
      const pairs: Array<readonly [string, string, string]> = [
        ["SftpClient writeSink / readStream", "SftpClient writeSink", "SftpClient readStream"],
        ["OpenSSH sftp put / get, our server", "OpenSSH sftp put -> our server", "OpenSSH sftp get <- our server"],
        ["exec cat up / head down", "exec cat up (stdin)", "exec head down (stdout)"]
      ]
      const reference = mem.rows.find((r) => r.label.startsWith("reference"))
      for (const [label, up, down] of pairs) {
        const u = mem.rows.find((r) => r.label === up)
        const d = mem.rows.find((r) => r.label === down)
        if (u === undefined && d === undefined) continue
        const cell = (r: typeof u) =>
          r === undefined ? "n/a" : r.error !== undefined ? "FAILED" : `+${r.maxGrowthMiB.toFixed(1)}`
        const ok = [u, d].every((r) => r !== undefined && r.error === undefined && r.maxGrowthMiB < 64)
        rows.push([
          `RSS growth ${mem.mib} MiB each way: ${label}`,
          (u ?? d)!.isolation,
          `${cell(u)} / ${cell(d)} MiB`,
          "",
          "",
          "< 64 MiB each",
          [u, d].some((r) => r === undefined || r.error !== undefined) ? "n/a" : verdict(ok)
        ])
      }
      if (reference !== undefined) {
        rows.push([
          `RSS growth ${mem.mib} MiB: plain Node draining a pipe (no SSH)`,
          reference.isolation,
          reference.error === undefined ? `+${reference.maxGrowthMiB.toFixed(1)} MiB` : "FAILED",
          "",
          "",
          "(the runtime's floor)",
          ""
        ])
      }
    }
  }
  if (typeof attach === "string") {
    rows.push(["keystroke -> echo (attach vs ssh -tt)", "", attach.slice(0, 60), "", "", "(none in SPEC §4)", "n/a"])
  } else {
    const attachRow = (label: string, s: Samples) => [
      label,
      attach.isolation ?? `auto -> ${iso}`,
      withFailures(ms(med(s)), s),
      withFailures(`${ms(med(attach.anchor))} (j)`, attach.anchor),
      ratio(med(s), med(attach.anchor)),
      "(none in SPEC §4)",
      ""
    ]
    rows.push(attachRow("keystroke -> echo: sandbox-ssh attach (CLI)", attach.ours))
    if (isSamples(attach.library)) rows.push(attachRow("keystroke -> echo: client.attach in-process", attach.library))
  }

  const cpus = os.cpus()
  const lines = [
    "",
    `sandbox-ssh bench  ${started.toISOString()}  (commit ${commit}; took ${
      ((Date.now() - started.getTime()) / 1000).toFixed(0)
    } s)`,
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
    `(BENCH_RUNS=${process.env.BENCH_RUNS ?? `${counts.slow} (default)`}); each after ${counts.warmup} warm-up runs` +
    `${quick() ? "; BENCH_QUICK" : ""}`,
    t === undefined
      ? `io:      NOT MEASURED: ${ioOutcome as string}`
      : `io:      SFTP ${io.sftpMib} MiB, cat ${io.catMib} MiB, median of ${io.rounds} rounds after 1 warm-up, files in ` +
        `/dev/shm (tmpfs); ssh connections x ${counts.slow}; SFTP sandbox: ${t.sftpIsolation}; CLI: ${t.cliNote}`,
    "",
    table(
      ["metric (medians)", "isolation", "ours", "OpenSSH anchor", "ours/anchor (time)", "target (SPEC §4)", "met"],
      rows
    ),
    "",
    "ours/anchor is a time ratio: below 1 means ours is faster. Anchor: (a) `ssh host true` on a new connection,",
    "(b) `ssh host true` over the ControlMaster connection, (c) that 64 times at once, (d) node spawning `/bin/sh -c true`",
    "on the host (a reference, not OpenSSH). OpenSSH figures include starting the `ssh` client process, as its users pay it.",
    "Transfers (MiB/s of the median transfer; ratio = anchor MiB/s / ours MiB/s, a time ratio too), all aes128-gcm:",
    "(e) OpenSSH `sftp put`, (f) `sftp get`, over the anchor's ControlMaster to sshd (internal-sftp); every `sftp` row",
    "times one put/get alone on an already open `sftp -b -` session (no connection set-up), files in tmpfs;",
    "(g) `head -c N /dev/zero | ssh host 'cat > /dev/null'` and (h) `ssh host 'head -c N /dev/zero' > /dev/null`, over the",
    "ControlMaster, whole process; ours: client.spawn, its stdin fed 64 KiB chunks from a Stream / its stdout drained;",
    "(i) `ssh host true` on a new connection to sshd, interleaved with ours (both via the real `ssh` client);",
    "(j) bench/attach.ts: a key typed on a PTY running `ssh -tt host /bin/sh -l` until its echo (ours: the same through",
    "`sandbox-ssh attach` on a PTY, and client.attach with in-memory terminal streams);",
    "(k) `sftp -B 32768 put`, (l) `sftp -B 32768 get`: as (e) and (f) with 32 KiB requests (paramiko's and ssh2's",
    "`fastGet`'s size; OpenSSH's own default is 255 KiB against a server that offers it, as ours and sshd do).",
    "RSS growth: child process (node --expose-gc), max RSS sampled every 5 ms minus RSS just before, per direction.",
    "Full GCs (in the spread below): mark-compacts during each timed transfer of the process that runs our side of it",
    "(SftpClient's rows: its child, bench/sftpChild.ts; our listener: the bench's). A round with a run of them is V8",
    "(Node 20) on a small heap counting the ArrayBuffers a transfer allocates against its old-generation limit (with a",
    "70 MB live heap they were rare), rather than our code doing more work; a run leaves the limit small for the transfer",
    "after it. The transfer that allocates is SftpClient.readStream (its chunks are the consumer's); uploads to our",
    "listener land in reused slabs (src/internal/transport/inboundBuffers.ts), not a fresh buffer per socket read. V8",
    "also pretenures Effect's Chunk objects, which then keep readStream's chunks alive until the next full GC. The",
    "reference row under readStream is not ours: after it in each round, the same bytes from a tmpfs file on the host",
    "through @effect/platform's FileSystem.stream (chunks of SftpClient's read length), consumed the same way: no SSH,",
    "no sandbox, the same GCs.",
    "",
    "spread (p10 / median / p90, n):"
  ]
  /**
   * Each timed run in the order it ran, with its full GCs, for a few runs (the quantiles before are
   * sorted); for many, only the sum of full GCs when there were any.
   */
  const fullGcsText = (s: Samples) => {
    const gcs = s.fullGcs ?? []
    if (gcs.length === 0) return ""
    if (gcs.length <= 10 && gcs.length === s.times.length) {
      return `; in order: ${s.times.map((t, i) => `${ms(t).trim()} (${gcs[i]} full GCs)`).join(", ")}`
    }
    const total = gcs.reduce((a, b) => a + b, 0)
    return total === 0 ? "" : `; full GCs ${total} over ${gcs.length} runs`
  }
  const spread = (label: string, s: Samples | undefined) => {
    if (s === undefined) return
    const x = summarize(s.times)
    lines.push(
      `  ${label.padEnd(34)} ${ms(x.p10).padStart(10)} / ${ms(x.median).padStart(10)} / ${
        ms(x.p90).padStart(10)
      }, n ${x.n}${s.failures > 0 ? `; ${s.failures} failed, first: ${s.firstFailure}` : ""}${fullGcsText(s)}`
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
  const sc = got(t?.sftpClient)
  const sa = got(t?.sftpAnchor)
  const sl = got(t?.sftpListener)
  const ss = got(t?.sftpStdio)
  const cat = got(t?.cat)
  const conn = got(t?.connect)
  if (t !== undefined) lines.push("  transfers, ms each:")
  spread("ours SftpClient.write", sc?.write)
  spread("ours SftpClient.writeSink", sc?.writeSink)
  spread("ours SftpClient.read", sc?.read)
  spread("ours SftpClient.readStream", sc?.readStream)
  spread("reference FileSystem.stream", sc?.localStream)
  spread("sftp put -> our listener", sl?.put)
  spread("sftp get <- our listener", sl?.get)
  spread("sftp put -> serve --stdio", ss?.put)
  spread("sftp get <- serve --stdio", ss?.get)
  spread("anchor (e) sftp put", sa?.put)
  spread("anchor (f) sftp get", sa?.get)
  spread("sftp -B 32768 put -> our listener", got(t?.sftpSmallListener)?.put)
  spread("sftp -B 32768 get <- our listener", got(t?.sftpSmallListener)?.get)
  spread("anchor (k) sftp -B 32768 put", got(t?.sftpSmallAnchor)?.put)
  spread("anchor (l) sftp -B 32768 get", got(t?.sftpSmallAnchor)?.get)
  spread("ours cat up", cat?.oursUp)
  spread("ours head down", cat?.oursDown)
  spread("anchor (g) cat up", cat?.anchorUp)
  spread("anchor (h) head down", cat?.anchorDown)
  spread("ssh true -> our listener", conn?.listener)
  spread("ssh true -> serve --stdio", conn?.stdio)
  spread("ssh true -> serve --stdio, first", conn?.stdioFirst)
  spread("anchor (i) new connection + true", conn?.anchor)
  spread("CLI --version", got(t?.cliVersion))
  if (typeof attach !== "string") {
    spread("keystroke echo: attach CLI", attach.ours)
    spread("keystroke echo: client.attach", attach.library)
    spread("anchor (j) keystroke echo ssh -tt", attach.anchor)
  }
  if (sc !== undefined) lines.push(`  SftpClient session: ${sc.requestBytes}`)
  const mem = got(t?.memory)
  if (mem !== undefined) {
    lines.push(`  memory rows (${mem.mib} MiB each, gc before baseline: ${mem.gc ? "yes" : "no"}):`)
    for (const r of mem.rows) {
      lines.push(
        `    ${r.label.padEnd(32)} +${r.maxGrowthMiB.toFixed(1)} MiB over ${r.baselineMiB.toFixed(1)} MiB, ${
          (r.mib / (r.ms / 1000)).toFixed(0)
        } MiB/s${r.error === undefined ? "" : `, FAILED: ${r.error}`}`
      )
    }
  }
  const missing = [
    o === undefined ? "our side (see ours:)" : undefined,
    t === undefined ? "transfers/connections/memory (see io:)" : undefined,
    ...(t === undefined
      ? []
      : [
        t.sftpClient,
        t.sftpAnchor,
        t.sftpListener,
        t.sftpStdio,
        t.sftpSmallAnchor,
        t.sftpSmallListener,
        t.cat,
        t.connect,
        t.cliVersion,
        t.memory
      ])
      .map((m) => isNotMeasured(m) ? m.notMeasured : undefined),
    typeof attach === "string" ? `keystroke latency: ${attach.replace(/^not measured: /, "")}` : undefined
  ].filter((x) => x !== undefined)
  lines.push(
    "",
    leftovers.length === 0
      ? "cleanup: no child process left after every phase closed its scopes"
      : `cleanup: ${leftovers.length} child process(es) LEFT after every phase closed: ${leftovers.join("; ")}`,
    ...(t === undefined || t.stdioLeftovers.length === 0 ? [] : [
      `cleanup: the serve --stdio daemons (stopped by the bench after the ProxyCommand runs) left ` +
      `${t.stdioLeftovers.length} entries in their TMPDIR (e.g. ${t.stdioLeftovers[0]}); the bench removed them`
    ]),
    missing.length === 0 ? "not measured: nothing" : `not measured: ${missing.join("; ")}`
  )
  yield* Console.log(lines.join("\n"))
})

absorbRepeatedSignals()
NodeRuntime.runMain(main)
