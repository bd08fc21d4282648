/**
 * Shared helpers of the benchmark harness: timing, statistics, child processes.
 *
 * Nothing here asserts timings; failures of the measured operations are counted and reported.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import { performance, PerformanceObserver } from "node:perf_hooks"

export class BenchError extends Data.TaggedError("BenchError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** Distribution of one set of samples, in milliseconds. */
export interface Summary {
  readonly n: number
  readonly median: number
  readonly p10: number
  readonly p90: number
  readonly min: number
  readonly max: number
}

const quantile = (sorted: ReadonlyArray<number>, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo)
}

export const summarize = (samples: ReadonlyArray<number>): Summary => {
  const sorted = [...samples].sort((a, b) => a - b)
  return {
    n: sorted.length,
    median: quantile(sorted, 0.5),
    p10: quantile(sorted, 0.1),
    p90: quantile(sorted, 0.9),
    min: sorted.length === 0 ? Number.NaN : sorted[0]!,
    max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]!
  }
}

/** Runs `effect` and returns the wall time it took, in milliseconds, with its value. */
export const timed = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<readonly [number, A], E, R> =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.map(effect, (a) => [performance.now() - start, a] as const)
  })

/** A set of timings plus how many of the measured operations failed (failures are not timed). */
export interface Samples {
  readonly times: ReadonlyArray<number>
  readonly failures: number
  readonly firstFailure?: string | undefined
  /** Full (mark-compact) GCs of this process during each timed operation, where counted. */
  readonly fullGcs?: ReadonlyArray<number> | undefined
}

let fullGcCount = 0
let gcObserver: PerformanceObserver | undefined

/**
 * Full GCs of this process so far (from the first call on). A transfer that V8 interrupts with a
 * run of them (its heap limits on a small heap count external memory allocated since the last
 * one: every packet buffer of a transfer) is slower for it; the bench shows the count next to the
 * times, so that such rounds can be told apart.
 */
export const fullGcs = (): number => {
  if (gcObserver === undefined) {
    gcObserver = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        // NODE_PERFORMANCE_GC_MAJOR
        const detail = (entry as unknown as { readonly detail?: { readonly kind?: number } }).detail
        if (detail?.kind === 4) fullGcCount++
      }
    })
    gcObserver.observe({ entryTypes: ["gc"] })
  }
  return fullGcCount
}

/**
 * Runs `measure` `warmup` times (discarded), then `runs` times, sequentially. `measure` yields the
 * time of one run in milliseconds, or `undefined` plus a reason when the measured operation failed.
 */
export const sample = <E, R>(
  runs: number,
  warmup: number,
  measure: Effect.Effect<number | { readonly failed: string }, E, R>
): Effect.Effect<Samples, E, R> =>
  Effect.gen(function*() {
    for (let i = 0; i < warmup; i++) yield* measure
    const times: Array<number> = []
    let failures = 0
    let firstFailure: string | undefined
    for (let i = 0; i < runs; i++) {
      const r = yield* measure
      if (typeof r === "number") times.push(r)
      else {
        failures++
        firstFailure ??= r.failed
      }
    }
    return { times, failures, firstFailure }
  })

export interface ProcessResult {
  readonly code: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
  /** From just before `spawn` to the `close` event (exit and stdio closed). */
  readonly ms: number
}

/**
 * Runs a program to completion with stdin from /dev/null, collecting its output. Interruption kills
 * it.
 */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: {
    readonly env?: NodeJS.ProcessEnv | undefined
    /** On interruption send SIGTERM and wait this long before SIGKILL (default: SIGKILL at once). */
    readonly graceMs?: number | undefined
  } = {}
): Effect.Effect<ProcessResult, BenchError> =>
  Effect.async<ProcessResult, BenchError>((resume) => {
    const start = performance.now()
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: options.env ?? process.env })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (b: Buffer) => out.push(b))
    child.stderr.on("data", (b: Buffer) => err.push(b))
    child.on("error", (cause) => resume(Effect.fail(new BenchError({ message: `spawn ${command} failed`, cause }))))
    child.on("close", (code, signal) => {
      const ms = performance.now() - start
      resume(Effect.succeed({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        ms
      }))
    })
    const graceMs = options.graceMs ?? 0
    return Effect.async<void>((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done(Effect.void)
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      child.once("exit", () => {
        clearTimeout(timer)
        done(Effect.void)
      })
      if (graceMs > 0) child.kill("SIGTERM")
    })
  })

/**
 * Ends a child the polite way (`ask`: EOF on its stdin, an IPC disconnect), then SIGKILL if it has
 * not exited after `graceMs`; done once it exited.
 */
export const endChild = (child: ChildProcess, ask: (child: ChildProcess) => void, graceMs: number) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
    child.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    ask(child)
  })

/** A failed run as a short reason, or `undefined` when it exited 0. */
export const failureOf = (r: ProcessResult): string | undefined =>
  r.code === 0
    ? undefined
    : `exit ${r.code ?? r.signal}: ${(r.stderr.trim() || r.stdout.trim()).split("\n").slice(-2).join(" | ")}`

/** Reads a positive integer from the environment. */
export const envInt = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const n = Number.parseInt(raw, 10)
  return Number.isFinite(n) && n > 0 ? n : fallback
}

/** How many runs each kind of measurement gets; `BENCH_RUNS` scales them all. */
export interface RunCounts {
  /** Slow operations (new connections): `BENCH_RUNS`, default 30. */
  readonly slow: number
  /** Fast operations (exec on an open connection, spawn): 4 × `BENCH_RUNS`. */
  readonly fast: number
  /** Bursts of concurrent execs: `BENCH_RUNS / 3`, at least 5. */
  readonly bursts: number
  readonly warmup: number
  /** Execs per burst (`BENCH_CONCURRENCY`, default 64). */
  readonly concurrency: number
}

/** `BENCH_QUICK=1`: smaller defaults everywhere (explicit `BENCH_*` settings still win). */
export const quick = (): boolean =>
  process.env.BENCH_QUICK !== undefined && !["", "0"].includes(process.env.BENCH_QUICK)

export const runCounts = (): RunCounts => {
  const base = envInt("BENCH_RUNS", quick() ? 8 : 30)
  return {
    slow: base,
    fast: base * 4,
    bursts: Math.max(5, Math.round(base / 3)),
    warmup: 3,
    concurrency: envInt("BENCH_CONCURRENCY", 64)
  }
}

/** Sizes and rounds of the transfer measurements (SFTP, streaming exec, memory). */
export interface IoCounts {
  /** SFTP transfers, MiB: `BENCH_SFTP_MIB`, default 256 (64 quick). */
  readonly sftpMib: number
  /** Streaming exec (`cat`) transfers, MiB: `BENCH_CAT_MIB`, default the SFTP size. */
  readonly catMib: number
  /** Rounds of each transfer (median reported): `BENCH_IO_ROUNDS`, default 3 (1 quick). */
  readonly rounds: number
  /** The memory measurement's transfer each way, MiB: `BENCH_MEMORY_MIB`, default 1024 (256 quick). */
  readonly memoryMib: number
  /** Also OpenSSH `sftp` through `serve --stdio` (`BENCH_SFTP_STDIO=1`; off by default, for time). */
  readonly sftpStdio: boolean
}

export const ioCounts = (): IoCounts => {
  const sftpMib = envInt("BENCH_SFTP_MIB", quick() ? 64 : 256)
  return {
    sftpMib,
    catMib: envInt("BENCH_CAT_MIB", sftpMib),
    rounds: envInt("BENCH_IO_ROUNDS", quick() ? 1 : 3),
    memoryMib: envInt("BENCH_MEMORY_MIB", quick() ? 256 : 1024),
    sftpStdio: process.env.BENCH_SFTP_STDIO !== undefined && !["", "0"].includes(process.env.BENCH_SFTP_STDIO)
  }
}

/**
 * `NodeRuntime.runMain` interrupts the main fiber on the first SIGINT/SIGTERM and then removes its
 * listeners, so a repeat kills the process before its finalizers ran (sshd, control master, temp
 * directories would stay behind). Repeats are normal: Ctrl-C reaches this process from the terminal
 * and again relayed by npm and tsx, and `run` follows interruption with SIGTERM. This listener
 * absorbs repeats for `graceMs` after the first signal; a signal after that exits at once (the
 * `process.on("exit")` backstops still kill what was started and remove temp directories).
 */
export const absorbRepeatedSignals = (graceMs = 10_000): void => {
  let first: number | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    if (first === undefined) {
      first = Date.now()
      return
    }
    if (Date.now() - first > graceMs) process.exit(signal === "SIGINT" ? 130 : 143)
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
}
