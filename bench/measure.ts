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
  /** `openClient()` + `exec("true")` + closing the client: like-for-like with `ssh host true`. */
  readonly connectExec: Samples
  /** `exec("true")` on an open client. */
  readonly exec: Samples
  /** `sandbox.spawn(<shell> -c true)` until exit and its scope closed: the sandbox's own cost. */
  readonly spawn: Samples
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

    const connectExec = yield* sample(
      counts.slow,
      counts.warmup,
      measureExit(Effect.scoped(Effect.gen(function*() {
        const client = yield* ssh.openClient()
        const out = yield* client.exec("true")
        yield* client.close
        return out
      })))
    )

    const spawn = yield* sample(
      counts.fast,
      counts.warmup,
      measureExit(Effect.scoped(Effect.gen(function*() {
        const proc = yield* sandbox.spawn({ command: sandbox.info.shell, args: ["-c", "true"] })
        const exit = yield* proc.exit
        return { success: exit.code === 0, status: exit.code }
      })))
    )

    const client = yield* ssh.openClient()
    const exec = yield* sample(counts.fast, counts.warmup, measureExit(client.exec("true")))

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
      exec,
      spawn,
      concurrent,
      concurrentFailed
    } satisfies OursResults
  }).pipe(Effect.scoped)
