/**
 * SftpClient's rounds (`measureSftp`) in a process of their own: `bench/io.ts` forks this module
 * once and asks it for one round at a time over IPC, between the rounds of the other SFTP rows.
 *
 * In the bench's own process these rounds shared a heap with our TCP listener, and their streams
 * (`readStream`, whose chunks are the consumer's, and the local reference after it) left V8's
 * old-generation limit small: the OpenSSH uploads to the listener that came next ran with 12–26
 * full GCs, the others with none (`npm run bench` at dcd1ab7: 795 / 366 / 666 ms for 12 / 0 / 12
 * full GCs; `sftp -B 32768`: 994 / 377 / 1001 ms for 17 / 0 / 26). OpenSSH's sshd never shares a
 * heap with a client, and the memory rows run in children for the same reason.
 *
 * That was one cause, not the only one: in 3 of the 6 bench runs made with this child, the uploads
 * still had runs of 5–25 full GCs, in every round of the run (the other 3 runs: none in any round).
 * The listener's process got into that state on its own while Node allocated every socket read;
 * since uploads land in reused slabs (`src/internal/transport/inboundBuffers.ts`) they had none
 * in 12 of 12 rounds of four runs.
 */
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { type ChildProcess, fork } from "node:child_process"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import * as LocalSandbox from "../src/LocalSandbox.js"
import { measureSftp, type SftpBenchResults } from "./sftp.js"
import { BenchError, endChild } from "./util.js"

export interface SftpChildParams {
  readonly mib: number
  readonly isolation: "auto" | "none"
  /** The sandbox's root (the bench's tmpfs directory); each round's file is named by the child's pid. */
  readonly root: string
  /** For `measureSftp`'s local reference stream. */
  readonly localDir: string
}

type Reply = { readonly ok: SftpBenchResults } | { readonly error: string }

const script = fileURLToPath(import.meta.url)

/** The child, running until the scope closes; `round` measures one round in it. */
export const start = (
  params: SftpChildParams
): Effect.Effect<{ readonly round: Effect.Effect<SftpBenchResults, BenchError> }, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() =>
        fork(script, [], {
          execArgv: ["--import", "tsx"],
          env: { ...process.env, BENCH_SFTP_CHILD: JSON.stringify(params) },
          stdio: ["ignore", "ignore", "inherit", "ipc"],
          serialization: "advanced"
        })
      ),
      // it closes its sandbox once disconnected
      (child) => endChild(child, (child) => child.disconnect(), 10_000)
    ),
    (child) => ({ round: round(child) })
  )

const round = (child: ChildProcess): Effect.Effect<SftpBenchResults, BenchError> =>
  Effect.async<SftpBenchResults, BenchError>((resume) => {
    const onMessage = (reply: Reply) => {
      cleanup()
      resume("ok" in reply ? Effect.succeed(reply.ok) : Effect.fail(new BenchError({ message: reply.error })))
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      cleanup()
      resume(Effect.fail(new BenchError({ message: `the SftpClient child exited (${code ?? signal})` })))
    }
    const cleanup = () => {
      child.off("message", onMessage)
      child.off("exit", onExit)
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      return resume(Effect.fail(new BenchError({ message: "the SftpClient child is gone" })))
    }
    child.on("message", onMessage)
    child.on("exit", onExit)
    child.send("round")
    return Effect.sync(cleanup)
  })

const serve = (params: SftpChildParams) =>
  Effect.scoped(Effect.gen(function*() {
    const sandbox = yield* LocalSandbox.make({ isolation: params.isolation, root: params.root })
    // made once for every round (see `SftpBenchOptions.data`)
    const data = randomBytes(params.mib * 1024 * 1024)
    const runPromise = Runtime.runPromise(yield* Effect.runtime<never>())
    const measure = measureSftp({ mib: params.mib, rounds: 1, sandbox, data, localDir: params.localDir }).pipe(
      Effect.match({
        onSuccess: (ok): Reply => ({ ok }),
        onFailure: (e): Reply => ({ error: e instanceof Error ? e.message : String(e) })
      })
    )
    // one round at a time, as asked; until the bench disconnects
    yield* Effect.async<void>((resume) => {
      const onMessage = () => {
        runPromise(measure).then((reply) => process.send?.(reply))
      }
      const onDisconnect = () => resume(Effect.void)
      process.on("message", onMessage)
      process.once("disconnect", onDisconnect)
      return Effect.sync(() => {
        process.off("message", onMessage)
        process.off("disconnect", onDisconnect)
      })
    })
  }))

const params = process.env.BENCH_SFTP_CHILD
if (params !== undefined && process.send !== undefined && process.argv[1] === script) {
  Effect.runPromise(serve(JSON.parse(params) as SftpChildParams)).then(
    () => process.exit(0),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}
