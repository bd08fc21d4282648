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
import * as fs from "node:fs"
import * as path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import { catUp, headDown, tempDir, zeroChunks } from "./io.js"
import * as OpensshSftp from "./opensshSftp.js"
import { BenchError, envInt, quick, timed } from "./util.js"

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

export const measureMemory = (params: Params) =>
  Effect.gen(function*() {
    const mib = params.mib ?? envInt("BENCH_MEMORY_MIB", quick() ? 256 : 1024)
    const bytes = mib * MiB
    const dir = params.dir ?? (yield* tempDir("ssb-mem-", "/dev/shm"))
    const rows: Array<MemoryRow> = []
    const removeLater = (file: string) => Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(file, { force: true })))

    const sandbox = yield* LocalSandbox.make({ isolation: "auto" })
    const sftpSandbox = yield* LocalSandbox.make({ isolation: params.sftpIsolation ?? "none", root: dir })
    const sftpLabel = params.sftpLabel ?? sftpSandbox.info.isolation
    const remote = (file: string) => sftpSandbox.info.isolated ? `/${path.relative(dir, file)}` : file

    // SftpClient, both ends in this process.
    const file = path.join(dir, `mem-${process.pid}.bin`)
    yield* removeLater(file)
    yield* Effect.scoped(Effect.gen(function*() {
      const client = yield* SandboxSsh.make(sftpSandbox).openClient()
      const sftp = yield* client.sftp()
      rows.push(
        yield* track(
          "SftpClient writeSink",
          sftpLabel,
          mib,
          Stream.run(zeroChunks(bytes), sftp.writeSink(remote(file)))
        )
      )
      rows.push(
        yield* track(
          "SftpClient readStream",
          sftpLabel,
          mib,
          Stream.runFold(sftp.readStream(remote(file)), 0, (n, c) => n + c.length).pipe(
            Effect.filterOrFail((n) => n === bytes, (n) => new BenchError({ message: `read ${n}/${bytes} bytes` }))
          )
        )
      )
    }))

    // OpenSSH sftp against our listener in this process.
    if (
      params.sshConfig !== undefined && params.host !== undefined && params.hostKeyPath !== undefined &&
      params.authorizedKeysPath !== undefined && fs.existsSync(file) && fs.statSync(file).size === bytes
    ) {
      const sshConfig = params.sshConfig
      const host = params.host
      const put = path.join(dir, `mem-put-${process.pid}.bin`)
      const got = path.join(dir, `mem-get-${process.pid}.bin`)
      yield* removeLater(put)
      yield* removeLater(got)
      yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* SandboxSsh.make(sftpSandbox).prepareServer({
          hostKeyPath: params.hostKeyPath,
          authorizedKeysPath: params.authorizedKeysPath
        })
        const listener = yield* server.listen({ port: 0 })
        const session = yield* OpensshSftp.open(["-F", sshConfig, "-P", String(listener.port)], host)
        const sized = (f: string) =>
          Effect.suspend(() =>
            fs.statSync(f).size === bytes ? Effect.void : Effect.fail(new BenchError({ message: `${f}: wrong size` }))
          )
        rows.push(
          yield* track(
            "OpenSSH sftp put -> our server",
            sftpLabel,
            mib,
            Effect.zipRight(session.command(`put ${file} ${remote(put)}`), sized(put))
          )
        )
        fs.rmSync(put, { force: true })
        rows.push(
          yield* track(
            "OpenSSH sftp get <- our server",
            sftpLabel,
            mib,
            Effect.zipRight(session.command(`get ${remote(file)} ${got}`), sized(got))
          )
        )
        fs.rmSync(got, { force: true })
      }))
    }
    fs.rmSync(file, { force: true })

    // Streaming exec.
    yield* Effect.scoped(Effect.gen(function*() {
      const client = yield* SandboxSsh.make(sandbox).openClient()
      const label = sandbox.info.isolation
      rows.push(yield* track("exec cat up (stdin)", label, mib, catUp(client, bytes)))
      rows.push(yield* track("exec head down (stdout)", label, mib, headDown(client, bytes)))
    }))
    return { mib, gc: gc !== undefined, rows } satisfies MemoryResults
  }).pipe(Effect.scoped)

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, "/"))) {
  const raw = process.env.BENCH_MEMORY_PARAMS
  const params = raw === undefined || raw === "" ? {} : JSON.parse(raw) as Params
  NodeRuntime.runMain(
    measureMemory(params).pipe(
      Effect.flatMap((results) => Effect.sync(() => process.stdout.write(`${JSON.stringify(results)}\n`)))
    )
  )
}
