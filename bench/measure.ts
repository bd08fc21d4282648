/**
 * Our side of the benchmark over any `Sandbox`: the library's public API only (`SandboxSsh.make`,
 * `openClient`, `exec`, `close`, and the sandbox's own `spawn` for the "exec vs spawn" ratio).
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type { Sandbox } from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import type { RunCounts, Samples } from "./util.js"
import { sample, timed } from "./util.js"

export interface OursResults {
  readonly isolation: string
  readonly isolated: boolean
  readonly shell: string
  /** `openClient()` alone: keys + handshake + auth (scope closing not timed). */
  readonly openClient: Samples
  /** `openClient()` + `exec("true")` + `close`: like-for-like with `ssh host true`. */
  readonly connectExec: Samples
  /** The phases of `connectExec`, each timed on its own (successful runs only). */
  readonly connectPhases: { readonly open: Samples; readonly exec: Samples; readonly close: Samples }
  /** `exec("true")` on an open client (interleaved with `spawn`, one of each per round). */
  readonly exec: Samples
  /** `sandbox.spawn(<shell> -c true)` until exit and its scope closed: the sandbox's own cost. */
  readonly spawn: Samples
  /** Per round: exec time minus spawn time of that same round (can be negative). */
  readonly execMinusSpawn: Samples
  /** Wall time of `concurrency` concurrent `exec("true")` on one client, per burst. */
  readonly concurrent: Samples
  /** Execs that failed (error or non-zero status) across all bursts. */
  readonly concurrentFailed: number
}

type Measured = number | { readonly failed: string }

const failedWith = (cause: Cause.Cause<unknown>): Measured => ({ failed: Cause.pretty(cause).split("\n")[0]! })

/** Times `effect`; a failure or a non-success output becomes a counted failure, not a bench crash. */
const measureExit = <E, R>(effect: Effect.Effect<{ readonly success: boolean; readonly status: number }, E, R>) =>
  timed(effect).pipe(
    Effect.map(([ms, out]): Measured => out.success ? ms : { failed: `status ${out.status}` }),
    Effect.catchAllCause((cause) => Effect.succeed(failedWith(cause)))
  )

/** Measures the SSH layer over any sandbox. */
export const measureSandbox = (sandbox: Sandbox, counts: RunCounts) =>
  Effect.gen(function*() {
    const ssh = SandboxSsh.make(sandbox)

    const openClient = yield* sample(
      counts.slow,
      counts.warmup,
      Effect.scoped(Effect.gen(function*() {
        const [ms] = yield* timed(ssh.openClient())
        return ms
      })).pipe(Effect.catchAllCause((cause) => Effect.succeed(failedWith(cause))))
    )

    const phases = { open: [] as Array<number>, exec: [] as Array<number>, close: [] as Array<number> }
    let round = 0 // warm-up rounds come first and are not recorded
    const connectExec = yield* sample(
      counts.slow,
      counts.warmup,
      measureExit(
        Effect.scoped(Effect.gen(function*() {
          const [open, client] = yield* timed(ssh.openClient())
          const [exec, out] = yield* timed(client.exec("true"))
          const [close] = yield* timed(client.close)
          if (round >= counts.warmup && out.success) {
            phases.open.push(open)
            phases.exec.push(exec)
            phases.close.push(close)
          }
          return out
        })).pipe(Effect.ensuring(Effect.sync(() => round++)))
      )
    )
    const asSamples = (times: Array<number>): Samples => ({ times, failures: 0 })

    const client = yield* ssh.openClient()
    const spawnOnce = measureExit(Effect.scoped(Effect.gen(function*() {
      const proc = yield* sandbox.spawn({ command: sandbox.info.shell, args: ["-c", "true"] })
      const exit = yield* proc.exit
      return { success: exit.code === 0, status: exit.code }
    })))
    const execOnce = measureExit(client.exec("true"))
    // One spawn and one exec per round, alternating which goes first, so that load from elsewhere on
    // the machine hits both alike; the paired difference is the SSH layer's own cost.
    const spawnTimes: Array<number> = []
    const execTimes: Array<number> = []
    const diffs: Array<number> = []
    let spawnFailures = 0
    let execFailures = 0
    let spawnFailure: string | undefined
    let execFailure: string | undefined
    for (let i = 0; i < counts.warmup + counts.fast; i++) {
      const execFirst = i % 2 === 1
      const first = yield* (execFirst ? execOnce : spawnOnce)
      const second = yield* (execFirst ? spawnOnce : execOnce)
      if (i < counts.warmup) continue
      const [e, sp] = execFirst ? [first, second] : [second, first]
      if (typeof sp === "number") spawnTimes.push(sp)
      else {
        spawnFailures++
        spawnFailure ??= sp.failed
      }
      if (typeof e === "number") execTimes.push(e)
      else {
        execFailures++
        execFailure ??= e.failed
      }
      if (typeof e === "number" && typeof sp === "number") diffs.push(e - sp)
    }
    const spawn: Samples = { times: spawnTimes, failures: spawnFailures, firstFailure: spawnFailure }
    const exec: Samples = { times: execTimes, failures: execFailures, firstFailure: execFailure }

    let concurrentFailed = 0
    const burst = timed(
      Effect.all(
        Array.from({ length: counts.concurrency }, () =>
          client.exec("true").pipe(
            Effect.map((out) => out.success ? undefined : `status ${out.status}`),
            Effect.catchAllCause((cause) => Effect.succeed(Cause.pretty(cause).split("\n")[0]!))
          )),
        { concurrency: "unbounded" }
      )
    ).pipe(Effect.map(([ms, results]): Measured => {
      const failed = results.filter((r) => r !== undefined)
      concurrentFailed += failed.length
      return failed.length === 0 ? ms : { failed: `${failed.length}/${results.length} failed: ${failed[0]}` }
    }))
    yield* burst // warm-up, not counted
    concurrentFailed = 0
    const concurrent = yield* sample(counts.bursts, 0, burst)
    yield* client.close

    return {
      isolation: sandbox.info.isolation,
      isolated: sandbox.info.isolated,
      shell: sandbox.info.shell,
      openClient,
      connectExec,
      connectPhases: { open: asSamples(phases.open), exec: asSamples(phases.exec), close: asSamples(phases.close) },
      exec,
      spawn,
      execMinusSpawn: asSamples(diffs),
      concurrent,
      concurrentFailed
    } satisfies OursResults
  }).pipe(Effect.scoped)
