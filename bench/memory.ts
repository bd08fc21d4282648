/**
 * Memory of the process hosting the library during large transfers (SPEC §4: a 1 GiB transfer,
 * either way, grows the process by < 64 MiB). Run as a child of `npm run bench` (bench/io.ts) so
 * that nothing the benchmark did before is in its heap, or alone:
 *
 *   node --expose-gc --import tsx bench/memory.ts        (BENCH_MEMORY_MIB, default 1024)
 *
 * For each transfer: a GC (with `--expose-gc`), then the baseline `process.memoryUsage.rss()`, then
 * RSS sampled every 5 ms during the transfer (and once after it); the figure is the maximum minus
 * the baseline. Payloads are streamed from one reused 64 KiB chunk, or read from and written to a
 * tmpfs file, so the benchmark itself never holds the payload.
 *
 * - `SftpClient` `writeSink` then `readStream` of the file (the client side and our SFTP server both
 *   live in this process);
 * - OpenSSH's `sftp` put and get against our TCP listener in this process (the server side);
 * - `client.spawn("cat > /dev/null")` fed, `client.spawn("head -c N /dev/zero")` drained.
 *
 * Prints one JSON line (`MemoryResults`) on stdout.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import * as OpensshSftp from "./opensshSftp.js"
import { catUp, headDown, tempDir, zeroChunks } from "./transfers.js"
import { absorbRepeatedSignals, BenchError, envInt, quick, timed } from "./util.js"

export interface MemoryRow {
  readonly label: string
  readonly isolation: string
  readonly mib: number
  /** Wall time of the transfer, ms. */
  readonly ms: number
  readonly baselineMiB: number
  readonly maxGrowthMiB: number
  /** Why the transfer failed (its figures are then not meaningful). */
  readonly error?: string | undefined
}

export interface MemoryResults {
  readonly mib: number
  readonly gc: boolean
  readonly rows: ReadonlyArray<MemoryRow>
}

interface Params {
  /** A directory for the files (tmpfs); a fresh one when absent. */
  readonly dir?: string | undefined
  readonly mib?: number | undefined
  /** For OpenSSH `sftp` against our listener; skipped without them. */
  readonly sshConfig?: string | undefined
  readonly host?: string | undefined
  readonly hostKeyPath?: string | undefined
  readonly authorizedKeysPath?: string | undefined
  /** The isolation for SFTP ("auto" or "none", see bench/io.ts) and its label. */
  readonly sftpIsolation?: "auto" | "none" | undefined
  readonly sftpLabel?: string | undefined
  /** Only this transfer (one process per transfer); all of them when absent. */
  readonly only?: Transfer | undefined
}

const MiB = 1024 * 1024
const gc = (globalThis as { gc?: () => void }).gc

const reason = (cause: Cause.Cause<unknown>) => {
  const e = Cause.squash(cause)
  return (e instanceof Error ? e.message : String(e)).split("\n")[0]!
}

/** Runs one transfer and reports the RSS growth over the baseline taken just before it. */
const track = <E, R>(label: string, isolation: string, mib: number, transfer: Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    gc?.()
    yield* Effect.sleep(20)
    const baseline = process.memoryUsage.rss()
    let max = baseline
    const sampleRss = () => {
      const rss = process.memoryUsage.rss()
      if (rss > max) max = rss
    }
    const [ms, exit] = yield* Effect.acquireUseRelease(
      Effect.sync(() => setInterval(sampleRss, 5)),
      () => timed(Effect.exit(transfer)),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
    sampleRss()
    const row: MemoryRow = {
      label,
      isolation,
      mib,
      ms,
      baselineMiB: baseline / MiB,
      maxGrowthMiB: (max - baseline) / MiB,
      error: exit._tag === "Failure" ? reason(exit.cause) : undefined
    }
    process.stderr.write(
      `  memory: ${label}: +${row.maxGrowthMiB.toFixed(1)} MiB over ${row.baselineMiB.toFixed(1)} MiB, ${
        (mib / (ms / 1000)).toFixed(0)
      } MiB/s${row.error === undefined ? "" : `, FAILED: ${row.error}`}\n`
    )
    return row
  })

/** Not the library: plain Node draining `head -c N /dev/zero`'s stdout, the runtime's own floor. */
export const REFERENCE = "reference: node drains a pipe"

/** The transfers, in the order they run (readStream and the OpenSSH rows read writeSink's file). */
export const TRANSFERS = [
  "SftpClient writeSink",
  "SftpClient readStream",
  "OpenSSH sftp put -> our server",
  "OpenSSH sftp get <- our server",
  "exec cat up (stdin)",
  "exec head down (stdout)",
  REFERENCE
] as const
export type Transfer = typeof TRANSFERS[number]

/** Writes `bytes` zeros to `file` unless it already has that size (before any baseline is taken). */
const ensureFile = (file: string, bytes: number) =>
  Effect.sync(() => {
    if (fs.existsSync(file) && fs.statSync(file).size === bytes) return
    const fd = fs.openSync(file, "w", 0o644)
    try {
      const chunk = Buffer.alloc(8 * MiB)
      for (let left = bytes; left > 0; left -= chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, left))
    } finally {
      fs.closeSync(fd)
    }
  })

/**
 * Measures `params.only` (one transfer, as `npm run bench` does: one fresh process each, so that
 * no transfer inherits the heap another one grew), or every transfer in turn.
 */
export const measureMemory = (params: Params) =>
  Effect.gen(function*() {
    const mib = params.mib ?? envInt("BENCH_MEMORY_MIB", quick() ? 256 : 1024)
    const bytes = mib * MiB
    const dir = params.dir ?? (yield* tempDir("ssb-mem-", "/dev/shm"))
    const want = (t: Transfer) => params.only === undefined || params.only === t
    const rows: Array<MemoryRow> = []
    const file = path.join(dir, "mem.bin") // shared by the processes of one run
    const scratch = (name: string) =>
      Effect.acquireRelease(
        Effect.sync(() => path.join(dir, `mem-${name}-${process.pid}.bin`)),
        (f) => Effect.sync(() => fs.rmSync(f, { force: true }))
      )

    if (TRANSFERS.slice(0, 4).some(want)) {
      const sftpSandbox = yield* LocalSandbox.make({ isolation: params.sftpIsolation ?? "none", root: dir })
      const label = params.sftpLabel ?? sftpSandbox.info.isolation
      const remote = (f: string) => sftpSandbox.info.isolated ? `/${path.relative(dir, f)}` : f
      if (want("SftpClient writeSink") || want("SftpClient readStream")) {
        // SftpClient, both ends in this process.
        yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* SandboxSsh.make(sftpSandbox).openClient()
          const sftp = yield* client.sftp()
          if (want("SftpClient writeSink")) {
            rows.push(
              yield* track(
                "SftpClient writeSink",
                label,
                mib,
                Stream.run(zeroChunks(bytes), sftp.writeSink(remote(file)))
              )
            )
          }
          if (want("SftpClient readStream")) {
            yield* ensureFile(file, bytes)
            rows.push(
              yield* track(
                "SftpClient readStream",
                label,
                mib,
                Stream.runFold(sftp.readStream(remote(file)), 0, (n, c) => n + c.length).pipe(
                  Effect.filterOrFail(
                    (n) => n === bytes,
                    (n) => new BenchError({ message: `read ${n}/${bytes} bytes` })
                  )
                )
              )
            )
          }
        }))
      }
      const { authorizedKeysPath, host, hostKeyPath, sshConfig } = params
      if (
        (want("OpenSSH sftp put -> our server") || want("OpenSSH sftp get <- our server")) &&
        sshConfig !== undefined && host !== undefined && hostKeyPath !== undefined && authorizedKeysPath !== undefined
      ) {
        // OpenSSH sftp against our listener in this process.
        yield* Effect.scoped(Effect.gen(function*() {
          yield* ensureFile(file, bytes)
          const server = yield* SandboxSsh.make(sftpSandbox).prepareServer({ hostKeyPath, authorizedKeysPath })
          const listener = yield* server.listen({ port: 0 })
          const session = yield* OpensshSftp.open(["-F", sshConfig, "-P", String(listener.port)], host)
          const sized = (f: string) =>
            Effect.suspend(() =>
              fs.statSync(f).size === bytes ? Effect.void : Effect.fail(new BenchError({ message: `${f}: wrong size` }))
            )
          if (want("OpenSSH sftp put -> our server")) {
            const put = yield* scratch("put")
            rows.push(
              yield* track(
                "OpenSSH sftp put -> our server",
                label,
                mib,
                Effect.zipRight(session.command(`put ${file} ${remote(put)}`), sized(put))
              )
            )
          }
          if (want("OpenSSH sftp get <- our server")) {
            const got = yield* scratch("get")
            rows.push(
              yield* track(
                "OpenSSH sftp get <- our server",
                label,
                mib,
                Effect.zipRight(session.command(`get ${remote(file)} ${got}`), sized(got))
              )
            )
          }
        }))
      }
    }

    if (want("exec cat up (stdin)") || want("exec head down (stdout)")) {
      yield* Effect.scoped(Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation: "auto" })
        const client = yield* SandboxSsh.make(sandbox).openClient()
        const label = sandbox.info.isolation
        if (want("exec cat up (stdin)")) {
          rows.push(yield* track("exec cat up (stdin)", label, mib, catUp(client, bytes)))
        }
        if (want("exec head down (stdout)")) {
          rows.push(yield* track("exec head down (stdout)", label, mib, headDown(client, bytes)))
        }
      }))
    }
    if (want(REFERENCE)) {
      const drain = Effect.async<void, BenchError>((resume) => {
        const child = spawn("head", ["-c", String(bytes), "/dev/zero"], { stdio: ["ignore", "pipe", "ignore"] })
        let received = 0
        child.stdout.on("data", (chunk: Buffer) => received += chunk.length)
        child.on("error", (e) => resume(Effect.fail(new BenchError({ message: e.message }))))
        child.on("close", (code) =>
          resume(
            code === 0 && received === bytes
              ? Effect.void
              : Effect.fail(new BenchError({ message: `head exited ${code} after ${received} bytes` }))
          ))
        return Effect.sync(() => child.kill("SIGKILL"))
      })
      rows.push(yield* track(REFERENCE, "host (no sandbox)", mib, drain))
    }
    return { mib, gc: gc !== undefined, rows } satisfies MemoryResults
  }).pipe(Effect.scoped)

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, "/"))) {
  const raw = process.env.BENCH_MEMORY_PARAMS
  const params = raw === undefined || raw === "" ? {} : JSON.parse(raw) as Params
  absorbRepeatedSignals()
  NodeRuntime.runMain(
    measureMemory(params).pipe(
      Effect.flatMap((results) => Effect.sync(() => process.stdout.write(`${JSON.stringify(results)}\n`)))
    )
  )
}
