/**
 * Transfer helpers shared by bench/io.ts and bench/memory.ts: streamed payloads, `cat` up and
 * `head` down over `client.spawn`, and temporary directories that never outlive the run.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { SshClient } from "../src/SshClient.js"
import { BenchError } from "./util.js"

const fsTry = <A>(what: string, f: () => A) =>
  Effect.try({ try: f, catch: (cause) => new BenchError({ message: `${what}: ${String(cause)}`, cause }) })

/** `n` bytes as a stream of one reused 64 KiB chunk (the sender never keeps the whole payload). */
export const zeroChunks = (bytes: number): Stream.Stream<Uint8Array> => {
  const chunk = new Uint8Array(64 * 1024)
  const full = Math.floor(bytes / chunk.length)
  const rest = bytes - full * chunk.length
  const head = Stream.repeatValue(chunk).pipe(Stream.take(full))
  return rest === 0 ? head : Stream.concat(head, Stream.make(chunk.subarray(0, rest)))
}

/** `client.spawn("cat > /dev/null")` fed `bytes` from a Stream, until it exits 0. */
export const catUp = (client: SshClient, bytes: number) =>
  Effect.scoped(Effect.gen(function*() {
    const proc = yield* client.spawn("cat > /dev/null")
    yield* Effect.all([
      Stream.run(zeroChunks(bytes), proc.stdin),
      Stream.runDrain(proc.stdout),
      Stream.runDrain(proc.stderr)
    ], { concurrency: "unbounded", discard: true })
    const code = yield* proc.exitCode
    if (code !== 0) return yield* new BenchError({ message: `cat exited ${code}` })
  }))

/** `client.spawn("head -c N /dev/zero")` drained; fails unless exactly `bytes` arrived. */
export const headDown = (client: SshClient, bytes: number) =>
  Effect.scoped(Effect.gen(function*() {
    const proc = yield* client.spawn(`head -c ${bytes} /dev/zero`)
    const [received] = yield* Effect.all([
      Stream.runFold(proc.stdout, 0, (n, chunk) => n + chunk.length),
      Stream.run(Stream.empty, proc.stdin),
      Stream.runDrain(proc.stderr)
    ], { concurrency: "unbounded" })
    const code = yield* proc.exitCode
    if (code !== 0 || received !== bytes) {
      return yield* new BenchError({ message: `head exited ${code} after ${received}/${bytes} bytes` })
    }
  }))

/** A temporary directory removed with the scope (and at process exit, should the scope not run). */
export const tempDir = (prefix: string, under?: string) =>
  Effect.acquireRelease(
    fsTry("mkdtemp", () => {
      const base = under !== undefined && fs.existsSync(under) ? under : os.tmpdir()
      const dir = fs.mkdtempSync(path.join(base, prefix))
      const onExit = () => fs.rmSync(dir, { recursive: true, force: true })
      process.on("exit", onExit)
      return { dir, onExit }
    }),
    ({ dir, onExit }) =>
      Effect.sync(() => {
        process.off("exit", onExit)
        fs.rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ dir }) => dir))
