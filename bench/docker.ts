/**
 * DockerSandbox against the `docker` CLI, in the same run on the same container:
 *
 * - exec `true` on an open client (`client.exec("true")`: SSH channel + Engine exec) vs
 *   `docker exec <c> true` (a CLI process + the same Engine exec);
 * - a file of `BENCH_DOCKER_MIB` MiB (default 256) written and read through the DockerSandbox file
 *   system (`sandbox.fs`: agent + `dd` streams), and through SFTP on an open client, vs `docker cp`
 *   both ways (the Engine's archive API).
 *
 * Reports medians and ratios (ours / docker); never asserts. Needs a running Engine: the socket in
 * `SANDBOX_SSH_DOCKER_SOCKET`, else the private one of `scripts/docker-test-env.sh` (started on
 * demand), and an image with a POSIX shell (`BENCH_DOCKER_IMAGE`, default `sandbox-ssh-test:busybox`).
 *
 * Run alone: `npx tsx bench/docker.ts`. From bench/index.ts: `measureDocker()` then `formatDocker`.
 */
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as DockerSandbox from "../src/DockerSandbox.js"
import type * as Sandbox from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import { BenchError, run, type Samples, summarize, timed } from "./util.js"

export interface DockerBenchOptions {
  readonly socketPath?: string | undefined
  readonly image?: string | undefined
  /** File size for the transfers, in MiB. Default `BENCH_DOCKER_MIB` or 256. */
  readonly mib?: number | undefined
  /** Exec runs per side. Default `BENCH_RUNS` × 2 or 40. */
  readonly execRuns?: number | undefined
  /** Transfer rounds per side and direction. Default `BENCH_IO_ROUNDS` or 3. */
  readonly rounds?: number | undefined
}

export interface DockerBenchResults {
  readonly engine: string
  readonly mib: number
  readonly execOurs: Samples
  readonly execCli: Samples
  readonly writeFs: Samples
  readonly readFs: Samples
  readonly writeSftp: Samples
  readonly readSftp: Samples
  readonly cpIn: Samples
  readonly cpOut: Samples
}

const envNumber = (name: string, fallback: number) => {
  const value = Number(process.env[name])
  return Number.isFinite(value) && value > 0 ? value : fallback
}

const engineSocket = (given: string | undefined): string => {
  if (given !== undefined) return given
  const fromEnv = process.env.SANDBOX_SSH_DOCKER_SOCKET
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv
  const script = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "..", "scripts", "docker-test-env.sh")
  const out = execFileSync("bash", [script, "start"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
  return out.trim().split("\n").pop()!
}

const dockerCli = fs.existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker"

const collect = (times: Array<number>): Samples => ({ times, failures: 0 })

const writeThroughFs = (sandbox: Sandbox.Sandbox, path: string, data: Uint8Array, chunk: number) =>
  Effect.gen(function*() {
    const file = yield* sandbox.fs.open(path, { write: true, create: true, truncate: true })
    for (let offset = 0; offset < data.length; offset += chunk) {
      yield* file.write(offset, data.subarray(offset, offset + chunk))
    }
    yield* file.close
  })

const readThroughFs = (sandbox: Sandbox.Sandbox, path: string, chunk: number) =>
  Effect.gen(function*() {
    const file = yield* sandbox.fs.open(path, { read: true })
    let offset = 0
    while (true) {
      const data = yield* file.read(offset, chunk)
      if (data.length === 0) break
      offset += data.length
    }
    yield* file.close
    return offset
  })

const cli = (socketPath: string, args: ReadonlyArray<string>) =>
  Effect.flatMap(run(dockerCli, ["-H", `unix://${socketPath}`, ...args]), (result) =>
    result.code === 0
      ? Effect.succeed(result.ms)
      : Effect.fail(new BenchError({ message: `docker ${args[0]} failed: ${result.stderr.trim()}` })))

export const measureDocker = (options: DockerBenchOptions = {}): Effect.Effect<DockerBenchResults, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const socketPath = engineSocket(options.socketPath)
    const image = options.image ?? process.env.BENCH_DOCKER_IMAGE ?? "sandbox-ssh-test:busybox"
    const mib = options.mib ?? envNumber("BENCH_DOCKER_MIB", 256)
    const execRuns = options.execRuns ?? envNumber("BENCH_RUNS", 20) * 2
    const rounds = options.rounds ?? envNumber("BENCH_IO_ROUNDS", 3)
    const name = `sandbox-ssh-bench-${process.pid}`
    const sandbox = yield* DockerSandbox.create({ image, name, socketPath, network: "none" })
    const client = yield* SandboxSsh.make(sandbox).openClient()
    const engine = execFileSync(
      dockerCli,
      ["-H", `unix://${socketPath}`, "version", "--format", "{{.Server.Version}}"],
      {
        encoding: "utf8"
      }
    ).trim()

    // exec true: alternate sides run by run so that load drifts hit both alike
    const execOurs: Array<number> = []
    const execCli: Array<number> = []
    for (let i = 0; i < 3; i++) {
      yield* client.exec("true")
      yield* cli(socketPath, ["exec", name, "true"])
    }
    for (let i = 0; i < execRuns; i++) {
      const [ours, output] = yield* timed(client.exec("true"))
      if (output.status !== 0) return yield* Effect.fail(new BenchError({ message: "exec true failed" }))
      execOurs.push(ours)
      execCli.push(yield* cli(socketPath, ["exec", name, "true"]))
    }

    const data = randomBytes(mib * 1024 * 1024)
    const dir = fs.mkdtempSync(Path.join(os.tmpdir(), "sandbox-ssh-bench-docker-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const local = Path.join(dir, "data.bin")
    fs.writeFileSync(local, data)
    const sftp = yield* client.sftp()
    const chunk = 256 * 1024
    const writeFs: Array<number> = []
    const readFs: Array<number> = []
    const writeSftp: Array<number> = []
    const readSftp: Array<number> = []
    const cpIn: Array<number> = []
    const cpOut: Array<number> = []
    for (let round = 0; round < rounds; round++) {
      writeFs.push((yield* timed(writeThroughFs(sandbox, "/tmp/fs.bin", data, chunk)))[0])
      const [readMs, size] = yield* timed(readThroughFs(sandbox, "/tmp/fs.bin", chunk))
      if (size !== data.length) return yield* Effect.fail(new BenchError({ message: `read ${size} bytes` }))
      readFs.push(readMs)
      yield* sandbox.fs.remove("/tmp/fs.bin")

      writeSftp.push((yield* timed(sftp.write("/tmp/sftp.bin", data)))[0])
      readSftp.push((yield* timed(sftp.read("/tmp/sftp.bin")))[0])
      yield* sftp.removeFile("/tmp/sftp.bin")

      cpIn.push(yield* cli(socketPath, ["cp", local, `${name}:/tmp/cp.bin`]))
      const out = Path.join(dir, "out.bin")
      cpOut.push(yield* cli(socketPath, ["cp", `${name}:/tmp/cp.bin`, out]))
      fs.rmSync(out, { force: true })
      yield* sandbox.fs.remove("/tmp/cp.bin")
    }
    return {
      engine,
      mib,
      execOurs: collect(execOurs),
      execCli: collect(execCli),
      writeFs: collect(writeFs),
      readFs: collect(readFs),
      writeSftp: collect(writeSftp),
      readSftp: collect(readSftp),
      cpIn: collect(cpIn),
      cpOut: collect(cpOut)
    }
  }))

/** The results as a table: medians, and ratios ours / docker (time: lower is better). */
export const formatDocker = (r: DockerBenchResults): string => {
  const median = (s: Samples) => summarize(s.times).median
  const rate = (s: Samples) => `${(r.mib / (median(s) / 1000)).toFixed(0)} MiB/s`
  const rows: Array<[string, string, string, string]> = [
    [
      "exec true (open client vs docker exec)",
      `${median(r.execOurs).toFixed(1)} ms`,
      `${median(r.execCli).toFixed(1)} ms`,
      (median(r.execOurs) / median(r.execCli)).toFixed(2)
    ],
    [
      `write ${r.mib} MiB: sandbox.fs vs docker cp in`,
      rate(r.writeFs),
      rate(r.cpIn),
      (median(r.writeFs) / median(r.cpIn)).toFixed(2)
    ],
    [
      `read ${r.mib} MiB: sandbox.fs vs docker cp out`,
      rate(r.readFs),
      rate(r.cpOut),
      (median(r.readFs) / median(r.cpOut)).toFixed(2)
    ],
    [
      `write ${r.mib} MiB: SFTP vs docker cp in`,
      rate(r.writeSftp),
      rate(r.cpIn),
      (median(r.writeSftp) / median(r.cpIn)).toFixed(2)
    ],
    [
      `read ${r.mib} MiB: SFTP vs docker cp out`,
      rate(r.readSftp),
      rate(r.cpOut),
      (median(r.readSftp) / median(r.cpOut)).toFixed(2)
    ]
  ]
  const header = ["DockerSandbox (Engine " + r.engine + ")", "ours", "docker", "time ratio"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")
  return [line(header), widths.map((w) => "-".repeat(w)).join("-|-"), ...rows.map(line)].join("\n")
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === Path.resolve(process.argv[1])) {
  Effect.runPromise(measureDocker()).then(
    (results) => console.log(formatDocker(results)),
    (error) => {
      console.error(error)
      process.exitCode = 1
    }
  )
}
