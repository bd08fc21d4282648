/**
 * The soak run (`npm run soak`): the reliability suite at full sizes (RELIABILITY_SCALE=soak: 10
 * rounds of 32 clients x 16 execs, 500 open/close cycles, 8 x 64 MiB SFTP transfers, a 1 GiB exec
 * stream, 20,000 + 5,000 fuzzed first flights with a fresh seed, floods ten times larger, slowloris
 * peers held until the login grace time), ending with ONE summary line: load held, faults
 * survived, hostile inputs tried, and what was lost.
 *
 * Usage: tsx test/reliability/soak.ts [extra vitest arguments]
 * Env: RELIABILITY_SEED to replay a fuzz run (the summary prints the seed used).
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"

interface Figure {
  readonly suite: string
  readonly name: string
  readonly [key: string]: any
}

const dir = fs.mkdtempSync(Path.join(os.tmpdir(), "sandbox-ssh-soak-"))
const figuresFile = Path.join(dir, "figures.jsonl")
const resultsFile = Path.join(dir, "results.json")
const seed = Number(process.env.RELIABILITY_SEED ?? Math.floor(Math.random() * 2 ** 31))
const started = Date.now()

const vitest = spawnSync(
  "npx",
  [
    "vitest",
    "run",
    "test/reliability",
    "--reporter=dot",
    "--reporter=json",
    `--outputFile.json=${resultsFile}`,
    ...process.argv.slice(2)
  ],
  {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, RELIABILITY_SCALE: "soak", RELIABILITY_REPORT: figuresFile, RELIABILITY_SEED: String(seed) }
  }
)

const figures: Array<Figure> = fs.existsSync(figuresFile)
  ? fs.readFileSync(figuresFile, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))
  : []
const results = fs.existsSync(resultsFile)
  ? JSON.parse(fs.readFileSync(resultsFile, "utf8")) as {
    numPassedTests: number
    numFailedTests: number
    numTotalTests: number
    testResults: Array<{ assertionResults: Array<{ fullName: string; status: string }> }>
  }
  : undefined
fs.rmSync(dir, { recursive: true, force: true })

const find = (suite: string, name: string) => figures.find((f) => f.suite === suite && f.name === name)
const sum = (values: ReadonlyArray<number | undefined>) => values.reduce<number>((a, b) => a + (b ?? 0), 0)

const execs = find("load", "concurrent-execs")
const cycles = find("load", "open-close-cycles")
const sftp = find("load", "sftp-transfers")
const stream = find("load", "exec-stream")
const ssh = find("load", "tcp-listener")
const load = [
  execs && `${execs.execs} execs (${execs.clients} clients x ${execs.execsPerClient}, ${execs.rounds} rounds)`,
  cycles && `${cycles.cycles} open/close cycles`,
  sftp && `${sftp.transfers}x${sftp.sizeMiB} MiB SFTP up+down sha256-checked (${sftp.isolation})`,
  stream && `${Math.round(stream.bytes / 2 ** 20)} MiB exec stream at ${stream.mibPerSecond} MiB/s`,
  ssh && `${ssh.sshClients} OpenSSH clients over TCP`
].filter(Boolean).join(", ")

const faults = figures.filter((f) => f.suite === "faults").map((f) => f.rounds ? `${f.name} x${f.rounds}` : f.name)

const fuzz = find("hostile", "pre-auth-fuzz")
const hostileNames = figures.filter((f) => f.suite === "hostile" && f.name !== "pre-auth-fuzz").map((f) => f.name)
const floods = sum(figures.filter((f) => f.suite === "hostile").map((f) => f.requests ?? f.opens))
const authTries = find("auth", "rejection-delay")
const hostile = [
  fuzz && `${fuzz.duplex.iterations + fuzz.tcp.iterations} fuzzed pre-auth inputs (seed ${fuzz.seed}, ` +
    `${fuzz.duplex.defects + fuzz.tcp.defects} defects, ${fuzz.duplex.hangs + fuzz.tcp.hangs} hangs, ` +
    `peak +${fuzz.peakGrowthMiB} MiB)`,
  `${floods} flooded requests/opens`,
  `${hostileNames.length} message-level attacks`,
  authTries && `rejection delay median ${authTries.medianRejectionMs} ms`
].filter(Boolean).join(", ")

const suite = find("load", "suite")
const failed =
  results?.testResults.flatMap((file) =>
    file.assertionResults.filter((test) => test.status === "failed").map((test) => test.fullName)
  ) ?? ["(no results: vitest did not finish)"]
const lost = failed.length === 0 && vitest.status === 0
  ? `nothing (fds ${suite?.fds.join("->")}, children ${suite?.children.join("->")}, listeners ${
    suite?.tcpListeners.join("->")
  }, heap ${suite?.heapUsedMiB.join("->")} MiB)`
  : `${failed.length} failed: ${failed.join("; ")}`

const minutes = ((Date.now() - started) / 60_000).toFixed(1)
console.log(
  `soak ${lost.startsWith("nothing") ? "PASSED" : "FAILED"} in ${minutes} min - load held: ${load || "none"}; ` +
    `faults survived: ${faults.length} (${faults.join(", ")}); hostile inputs tried: ${hostile}; lost: ${lost}`
)
process.exit(vitest.status ?? 1)
