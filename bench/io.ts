/**
 * Transfers and real-client connections (SPEC §4), each side by side with the OpenSSH anchor in
 * the same run, interleaved round by round so that load from elsewhere on the machine hits both:
 *
 * - SFTP write/read of `BENCH_SFTP_MIB` (256) MiB: `SftpClient` (bench/sftp.ts, in a child process
 *   of its own: bench/sftpChild.ts) and OpenSSH's `sftp` against our server (in-process TCP
 *   listener, and `sandbox-ssh serve --stdio` as a ProxyCommand), vs OpenSSH's `sftp` through the
 *   anchor's ControlMaster to sshd. Files live in a tmpfs (`/dev/shm`), which is also the SFTP
 *   sandbox's root. Each `sftp put`/`get` is timed alone on an open session (bench/opensshSftp.ts),
 *   so connection set-up is not in the figure.
 *   The same with 32 KiB requests (`sftp -B 32768`, the size paramiko and ssh2's `fastGet` use),
 *   to our listener and to sshd.
 * - Streaming exec of `BENCH_CAT_MIB` MiB: `client.spawn("cat > /dev/null")` fed from a Stream and
 *   `client.spawn("head -c N /dev/zero")` drained, vs `head -c N /dev/zero | ssh host 'cat >
 *   /dev/null'` and `ssh host 'head -c N /dev/zero' > /dev/null` over the ControlMaster.
 * - `ssh host true` on a new connection to our server: through the TCP listener and through
 *   `serve --stdio` (ProxyCommand: a new relay process per connection, to the sandbox's server
 *   daemon, which the warm-up rounds start), and first connections of `serve --stdio` (the daemon
 *   stopped before each, so the relay starts it), vs sshd;
 *   and the CLI's start-up alone (`node bin/sandbox-ssh.js --version`).
 * - Memory: a child process (bench/memory.ts) moves `BENCH_MEMORY_MIB` (1024) MiB each way and
 *   reports its RSS growth.
 *
 * Isolation: `cat` and connections run in a `LocalSandbox` with isolation "auto" (bubblewrap when
 * installed). SFTP needs `sandbox.fs`: when an isolated sandbox's file operations fail (its
 * in-sandbox agent is not available yet: reason "Unsupported"), SFTP is measured on isolation
 * "none" and every SFTP row says so.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import * as LocalSandbox from "../src/LocalSandbox.js"
import type { Sandbox } from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import type { Anchor } from "./anchor.js"
import type { MemoryResults } from "./memory.js"
import { TRANSFERS } from "./memory.js"
import * as OpensshSftp from "./opensshSftp.js"
import { perSftpTransfer, SFTP_TRANSFERS, type SftpTransfer } from "./sftp.js"
import * as SftpChild from "./sftpChild.js"
import { catUp, headDown, tempDir } from "./transfers.js"
import type { IoCounts, ProcessResult, RunCounts, Samples } from "./util.js"
import { BenchError, failureOf, fullGcs, run, timed } from "./util.js"

const MiB = 1024 * 1024
const repo = fileURLToPath(new URL("..", import.meta.url))
const cliBin = path.join(repo, "bin", "sandbox-ssh.js")
const cliBundle = path.join(repo, "dist", "cli.cjs")
/** The request size of the small-request `sftp` rows: `sftp -B`, paramiko's and ssh2's `fastGet`'s. */
const SMALL_REQUEST = 32768

/** Host key alias of our servers in the ssh config (one host key for all of them). */
const ALIAS = "sandbox-ssh-bench"

/**
 * Ends the server daemons that `serve --stdio` started with SANDBOX_SSH_HOME=`home` (they outlive
 * their last connection by `--linger`), as a person would: SIGTERM, each closes its sandbox and
 * removes its socket; SIGKILL after 10 s.
 */
const stopDaemons = (home: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const pattern = ` serve --socket ${path.join(home, "run")}/`
    const daemons = () =>
      fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name)).map(Number).filter((pid) => {
        try {
          const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
          if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return false
          return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").includes(pattern)
        } catch {
          return false
        }
      })
    const signal = (name: NodeJS.Signals) => {
      for (const pid of daemons()) {
        try {
          process.kill(pid, name)
        } catch {
          // gone already
        }
      }
    }
    signal("SIGTERM")
    for (let waited = 0; daemons().length > 0 && waited <= 15_000; waited += 20) {
      if (waited === 10_000) signal("SIGKILL")
      yield* Effect.sleep("20 millis")
    }
  })

/** A section that could not be measured says why instead of giving a number. */
export type Measured<A> = A | { readonly notMeasured: string }
export const notMeasured = <A>(m: Measured<A>): m is { readonly notMeasured: string } =>
  typeof m === "object" && m !== null && "notMeasured" in m

export interface PutGet {
  /** ms per transfer of `mib` MiB */
  readonly put: Samples
  readonly get: Samples
}

export interface IoResults {
  readonly counts: IoCounts
  /** Isolation of the sandbox used for `cat` and connections. */
  readonly isolation: string
  /** Isolation of the sandbox used for SFTP, with the reason when it differs. */
  readonly sftpIsolation: string
  /**
   * `SftpClient` (ms per transfer): whole-file `write`/`read`, streaming `writeSink`/`readStream`;
   * and the reference `localStream` (`measureSftp`'s `localDir`: the same bytes from a host file).
   */
  readonly sftpClient: Measured<{ readonly [T in SftpTransfer]: Samples } & { readonly requestBytes: string }>
  /** OpenSSH `sftp` through the ControlMaster to sshd. */
  readonly sftpAnchor: Measured<PutGet>
  /** OpenSSH `sftp` to our in-process TCP listener. */
  readonly sftpListener: Measured<PutGet>
  /** OpenSSH `sftp` through `serve --stdio` as ProxyCommand. */
  readonly sftpStdio: Measured<PutGet>
  /**
   * OpenSSH `sftp -B 32768` (32 KiB requests, as paramiko's and ssh2's `fastGet` are) to sshd through
   * the ControlMaster, and to our TCP listener.
   */
  readonly sftpSmallAnchor: Measured<PutGet>
  readonly sftpSmallListener: Measured<PutGet>
  /** ms per transfer of `catMib` MiB */
  readonly cat: Measured<{
    readonly oursUp: Samples
    readonly oursDown: Samples
    readonly anchorUp: Samples
    readonly anchorDown: Samples
  }>
  /** `ssh host true`, new connection each time. */
  readonly connect: Measured<{
    readonly anchor: Samples
    readonly listener: Samples
    /** Through a running daemon (the warm-up rounds start it). */
    readonly stdio: Samples
    /** The first connection of a sandbox: the relay starts its daemon (stopped before each run). */
    readonly stdioFirst: Samples
  }>
  readonly cliVersion: Measured<Samples>
  /** Whether `dist/cli.cjs` (what `bin/sandbox-ssh.js` runs) is older than `src/`. */
  readonly cliNote: string
  readonly memory: Measured<MemoryResults>
  /** Entries `serve --stdio` processes left in their TMPDIR (removed by the bench afterwards). */
  readonly stdioLeftovers: ReadonlyArray<string>
}

// ---------------------------------------------------------------------------------------------

/** Collects ms samples; a failed run is counted with its first reason, never timed. */
const collector = () => {
  const times: Array<number> = []
  const gcs: Array<number> = []
  let failures = 0
  let firstFailure: string | undefined
  const reason = (cause: Cause.Cause<unknown>) => {
    const e = Cause.squash(cause)
    return (e instanceof Error ? e.message : String(e)).split("\n")[0]!
  }
  return {
    /** Runs `effect` (which yields ms); records it unless `record` is false (warm-up). */
    add: <E, R>(effect: Effect.Effect<number, E, R>, record = true) =>
      Effect.suspend(() => {
        const before = fullGcs()
        return Effect.matchCause(effect, {
          onSuccess: (ms) => {
            if (!record) return
            times.push(ms)
            gcs.push(fullGcs() - before)
          },
          onFailure: (cause) => {
            if (!record) return
            failures++
            firstFailure ??= reason(cause)
          }
        })
      }),
    /** Records a time measured elsewhere, with the full GCs during it. */
    record: (ms: number, fullGcsDuring: number) => {
      times.push(ms)
      gcs.push(fullGcsDuring)
    },
    samples: (): Samples => ({ times, failures, firstFailure, fullGcs: gcs })
  }
}

const causeText = (cause: Cause.Cause<unknown>) => {
  const e = Cause.squash(cause)
  return (e instanceof Error ? e.message : String(e)).split("\n")[0]!
}

/** Runs a section; a failure of the section itself becomes its "not measured" reason. */
const section = <A, E, R>(name: string, effect: Effect.Effect<A, E, R>): Effect.Effect<Measured<A>, never, R> =>
  effect.pipe(
    Effect.map((a): Measured<A> => a),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause as Cause.Cause<never>)
        : Effect.succeed({ notMeasured: `${name}: ${causeText(cause)}` })
    )
  )

const processMs = (r: ProcessResult) => {
  const failed = failureOf(r)
  return failed === undefined ? Effect.succeed(r.ms) : Effect.fail(new BenchError({ message: failed }))
}

const sh = (script: string) => run("/bin/sh", ["-c", script]).pipe(Effect.flatMap(processMs))

const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`

const fsTry = <A>(what: string, f: () => A) =>
  Effect.try({ try: f, catch: (cause) => new BenchError({ message: `${what}: ${String(cause)}`, cause }) })

/** A size check: a fast transfer that moved the wrong number of bytes is a failure. */
const expectSize = (file: string, bytes: number) =>
  fsTry(`stat ${file}`, () => fs.statSync(file).size).pipe(
    Effect.filterOrFail(
      (size) => size === bytes,
      (size) => new BenchError({ message: `${file}: ${size} bytes, expected ${bytes}` })
    )
  )

/** The newest mtime under `dir` (files only). */
const newestMtime = (dir: string): number => {
  let newest = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue
    newest = Math.max(newest, fs.statSync(path.join(entry.parentPath ?? entry.path, entry.name)).mtimeMs)
  }
  return newest
}

const cliFreshness = (): string => {
  try {
    if (!fs.existsSync(cliBundle)) return "dist/cli.cjs missing: run `npm run build`"
    const stale = fs.statSync(cliBundle).mtimeMs < newestMtime(path.join(repo, "src"))
    return stale
      ? "dist/cli.cjs is OLDER than src/ (`npm run build` to measure the current code)"
      : "dist/cli.cjs newer than src/"
  } catch (e) {
    return `cannot check dist/cli.cjs: ${String(e)}`
  }
}

/** The config block for our servers, sharing the anchor's client key and algorithms. */
const oursConfig = (options: {
  readonly anchor: Anchor
  readonly knownHosts: string
  readonly hosts: ReadonlyArray<readonly [string, ReadonlyArray<string>]>
}) =>
  [
    ...options.hosts.flatMap(([name, lines]) => [`Host ${name}`, ...lines.map((l) => `  ${l}`)]),
    "Host ours-*",
    "  HostName 127.0.0.1",
    "  User root",
    `  IdentityFile ${options.anchor.userKey}`,
    "  IdentitiesOnly yes",
    "  IdentityAgent none",
    "  PreferredAuthentications publickey",
    "  BatchMode yes",
    "  StrictHostKeyChecking yes",
    `  HostKeyAlias ${ALIAS}`,
    `  UserKnownHostsFile ${options.knownHosts}`,
    "  GlobalKnownHostsFile /dev/null",
    "  UpdateHostKeys no",
    "  HostKeyAlgorithms ssh-ed25519",
    `  KexAlgorithms ${options.anchor.kex}`,
    "  Ciphers aes128-gcm@openssh.com",
    "  ControlMaster no",
    "  ControlPath none",
    "  LogLevel ERROR",
    ""
  ].join("\n")

/** The memory child: `node --expose-gc --import tsx bench/memory.ts`, its JSON result. */
const runMemoryChild = (params: object) =>
  Effect.gen(function*() {
    const script = fileURLToPath(new URL("./memory.ts", import.meta.url))
    const r = yield* run(process.execPath, ["--expose-gc", "--import", "tsx", script], {
      env: { ...process.env, BENCH_MEMORY_PARAMS: JSON.stringify(params) },
      graceMs: 5000
    })
    process.stderr.write(r.stderr) // its progress lines
    const line = r.stdout.trim().split("\n").filter((l) => l.startsWith("{")).pop()
    if (r.code !== 0 || line === undefined) {
      return yield* new BenchError({ message: `memory child: ${failureOf(r) ?? "no result printed"}` })
    }
    return JSON.parse(line) as MemoryResults
  })

/** One child per transfer, in order; the shared 1 GiB file is removed at the end. */
const memoryChildren = (params: { readonly dir: string } & Record<string, unknown>) =>
  Effect.gen(function*() {
    const rows: Array<MemoryResults["rows"][number]> = []
    let gc = true
    let mib = 0
    for (const only of TRANSFERS) {
      const r = yield* runMemoryChild({ ...params, only }).pipe(
        Effect.catchAll((e) =>
          Effect.succeed({
            mib: 0,
            gc: false,
            rows: [{ label: only, isolation: "", mib: 0, ms: 0, baselineMiB: 0, maxGrowthMiB: 0, error: e.message }]
          })
        )
      )
      rows.push(...r.rows)
      gc &&= r.gc
      mib = Math.max(mib, r.mib)
    }
    return { mib, gc, rows } satisfies MemoryResults
  }).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(path.join(params.dir, "mem.bin"), { force: true }))))

// ---------------------------------------------------------------------------------------------

export const measure = (anchor: Anchor, counts: RunCounts, io: IoCounts): Effect.Effect<IoResults, BenchError> =>
  Effect.gen(function*() {
    const t0 = performance.now()
    const log = (line: string) =>
      Effect.sync(() => process.stderr.write(`  [${((performance.now() - t0) / 1000).toFixed(0)} s] ${line}\n`))
    const work = yield* tempDir("ssb-io-", "/dev/shm") // tmpfs: disks stay out of the figures
    const home = yield* tempDir("ssb-home-") // SANDBOX_SSH_HOME: host key, authorized_keys
    // serve --stdio's daemons (one per sandbox) and their sockets, in `home`/run, end before `home`
    yield* Effect.addFinalizer(() => stopDaemons(home))
    const stdioRoot = yield* tempDir("ssb-stdio-") // serve --stdio's sandbox root (bubblewrap)
    const hostKeyPath = path.join(home, "ssh_host_ed25519_key")
    const authorizedKeysPath = path.join(home, "authorized_keys")
    yield* fsTry(
      "authorized_keys",
      () => fs.writeFileSync(authorizedKeysPath, fs.readFileSync(`${anchor.userKey}.pub`), { mode: 0o600 })
    )

    // Sandboxes: "auto" for exec and connections; SFTP where `sandbox.fs` works.
    const sandbox = yield* LocalSandbox.make({ isolation: "auto" })
    const fsProbe = yield* Effect.either(sandbox.fs.stat(sandbox.info.workdir))
    const fsWorks = fsProbe._tag === "Right"
    const sftpMode = fsWorks ? "auto" : "none"
    const sftpSandbox: Sandbox = yield* LocalSandbox.make({ isolation: sftpMode, root: work })
    const sftpIsolation = fsWorks || !sandbox.info.isolated
      ? sftpSandbox.info.isolation
      : `none (${sandbox.info.isolation}: sandbox.fs failed ${fsProbe._tag === "Left" ? fsProbe.left.reason : "?"})`
    // A path in `work` as our SFTP server sees it: `/name` when `work` is the sandbox's `/`.
    const remote = (file: string) => sftpSandbox.info.isolated ? `/${path.relative(work, file)}` : file

    const serverOptions = { hostKeyPath, authorizedKeysPath }
    const server = yield* SandboxSsh.make(sandbox).prepareServer(serverOptions)
    const sftpServer = yield* SandboxSsh.make(sftpSandbox).prepareServer(serverOptions)
    const listener = yield* server.listen({ port: 0 })
    const sftpListener = yield* sftpServer.listen({ port: 0 })

    const knownHosts = path.join(home, "known_hosts")
    const config = path.join(home, "ssh_config")
    // The CLI's own temporary files go under `home` too (TMPDIR), so that whatever a `serve --stdio`
    // daemon leaves behind is counted below and removed with `home`, not left in /tmp. (The
    // daemons' sockets and logs are in `home`/run, not counted.)
    const proxyTmp = path.join(home, "tmp")
    yield* fsTry("mkdir", () => fs.mkdirSync(proxyTmp, { mode: 0o700 }))
    const proxy = (root: string, isolation: string) =>
      `ProxyCommand /usr/bin/env SANDBOX_SSH_HOME=${home} TMPDIR=${proxyTmp} ${process.execPath} ${cliBin} serve ` +
      `--stdio --root ${root} --isolation ${isolation}`
    yield* fsTry("ssh config", () => {
      fs.writeFileSync(knownHosts, `${ALIAS} ${server.hostKey.publicKey}\n`, { mode: 0o600 })
      fs.writeFileSync(
        config,
        oursConfig({
          anchor,
          knownHosts,
          hosts: [
            ["ours-listener", [`Port ${listener.port}`]],
            ["ours-sftp", [`Port ${sftpListener.port}`]],
            ["ours-stdio", [proxy(stdioRoot, "auto")]],
            ["ours-stdio-sftp", [proxy(work, sftpMode)]]
          ]
        }),
        { mode: 0o600 }
      )
    })
    const ssh = (host: string, command: string) => run("ssh", ["-F", config, host, command])

    // SFTP --------------------------------------------------------------------------------------
    yield* log(`SFTP ${io.sftpMib} MiB x ${io.rounds} rounds (${sftpIsolation})...`)
    const bytes = io.sftpMib * MiB
    // The warm-up round moves as much as a measured one. After a 16 MiB one (which only started
    // code paths and sessions), our first measured transfers still ran while V8 was optimizing:
    // OpenSSH put/get of 256 MiB through our listener went at 479–503/391–444 MiB/s with 526–636 ms
    // of CPU, the next rounds at 542–656/534–675 with 350–476 ms (`scratchpad/sftp/benchlike.ts`,
    // 2 runs). OpenSSH's C needs no warming; a JIT does.
    const src = path.join(work, "src.bin")
    yield* fsTry("source file", () => {
      const fd = fs.openSync(src, "w", 0o600)
      try {
        for (let left = bytes; left > 0; left -= 8 * MiB) fs.writeSync(fd, randomBytes(Math.min(8 * MiB, left)))
      } finally {
        fs.closeSync(fd)
      }
    })
    // The sessions (and serve --stdio's process) end with this section.
    const sections = yield* Effect.scoped(Effect.gen(function*() {
      const small = ["-B", String(SMALL_REQUEST)]
      const sessions = {
        anchor: yield* Effect.either(OpensshSftp.open(["-F", anchor.sshConfig], "anchor")),
        listener: yield* Effect.either(OpensshSftp.open(["-F", config], "ours-sftp")),
        smallAnchor: yield* Effect.either(OpensshSftp.open(["-F", anchor.sshConfig, ...small], "anchor")),
        smallListener: yield* Effect.either(OpensshSftp.open(["-F", config, ...small], "ours-sftp")),
        stdio: io.sftpStdio
          ? yield* Effect.either(OpensshSftp.open(["-F", config], "ours-stdio-sftp"))
          : Either.left(new BenchError({ message: "off by default to keep the run short; BENCH_SFTP_STDIO=1 runs it" }))
      }
      const sides = (["anchor", "listener", "stdio", "smallAnchor", "smallListener"] as const).map((name) => {
        const session = sessions[name]
        const remotePath = (file: string) => name === "anchor" || name === "smallAnchor" ? file : remote(file)
        const put = collector()
        const get = collector()
        const target = path.join(work, `put-${name}.bin`)
        const local = path.join(work, `get-${name}.bin`)
        const once = (record: boolean) =>
          session._tag === "Left" ? Effect.void : Effect.gen(function*() {
            yield* put.add(
              session.right.command(`put ${src} ${remotePath(target)}`).pipe(Effect.zipLeft(expectSize(target, bytes))),
              record
            )
            yield* fsTry("rm", () => fs.rmSync(target, { force: true }))
            yield* get.add(
              session.right.command(`get ${remotePath(src)} ${local}`).pipe(Effect.zipLeft(expectSize(local, bytes))),
              record
            )
            yield* fsTry("rm", () => fs.rmSync(local, { force: true }))
          })
        const result = (): Measured<PutGet> =>
          session._tag === "Left"
            ? {
              notMeasured: session.left.message.startsWith("off by default")
                ? session.left.message
                : `sftp session: ${session.left.message}`
            }
            : { put: put.samples(), get: get.samples() }
        return { once, result }
      })
      const client = collector()
      // SftpClient's rounds run in a child of their own (bench/sftpChild.ts says why).
      const sftpChild = yield* SftpChild.start({ mib: io.sftpMib, isolation: sftpMode, root: work, localDir: work })
      const sftpRates = perSftpTransfer(() => collector())
      let requestBytes = ""
      const msOf = (rate: number) => (io.sftpMib / rate) * 1000
      const sftpClientOnce = (record: boolean) =>
        client.add(
          sftpChild.round.pipe(
            Effect.tap((r) =>
              Effect.sync(() => {
                requestBytes = `requests up to ${r.maxReadLength} B read / ${r.maxWriteLength} B write`
                if (!record) return
                for (const transfer of SFTP_TRANSFERS) {
                  sftpRates[transfer].record(msOf(r[transfer]), r.fullGcs[transfer][0]!)
                }
              })
            ),
            Effect.as(0)
          ),
          record
        )
      // One warm-up round (not recorded), then the rounds, each side in turn.
      for (let round = 0; round <= io.rounds; round++) {
        const record = round > 0
        for (const side of sides) yield* side.once(record)
        yield* sftpClientOnce(record)
        if (record) yield* log(`SFTP round ${round}/${io.rounds} done`)
      }
      const [sftpAnchor, sftpListenerResult, sftpStdio, sftpSmallAnchor, sftpSmallListener] = sides.map((s) =>
        s.result()
      )
      const clientSamples = client.samples()
      const sftpClient: IoResults["sftpClient"] = clientSamples.failures > 0 && clientSamples.times.length === 0
        ? { notMeasured: `SftpClient: ${clientSamples.firstFailure}` }
        : {
          ...perSftpTransfer((transfer) => sftpRates[transfer].samples()),
          requestBytes
        }
      yield* fsTry("rm", () => fs.rmSync(src, { force: true }))
      return { sftpAnchor, sftpClient, sftpListenerResult, sftpStdio, sftpSmallAnchor, sftpSmallListener }
    }))
    const { sftpAnchor, sftpClient, sftpListenerResult, sftpSmallAnchor, sftpSmallListener, sftpStdio } = sections

    // Streaming exec --------------------------------------------------------------------------
    yield* log(`streaming exec ${io.catMib} MiB x ${io.rounds} rounds (${sandbox.info.isolation})...`)
    const cat = yield* section(
      "cat",
      Effect.scoped(Effect.gen(function*() {
        const bytes = io.catMib * MiB
        const c = yield* SandboxSsh.make(sandbox).openClient()
        const oursUp = collector()
        const oursDown = collector()
        const anchorUp = collector()
        const anchorDown = collector()
        const ms = <E, R>(effect: Effect.Effect<unknown, E, R>) => Effect.map(timed(effect), ([t]) => t)
        const cfg = q(anchor.sshConfig)
        // the warm-up round as large as the others (see SFTP above)
        for (let round = 0; round <= io.rounds; round++) {
          const record = round > 0
          yield* anchorUp.add(sh(`head -c ${bytes} /dev/zero | ssh -F ${cfg} anchor 'cat > /dev/null'`), record)
          yield* oursUp.add(ms(catUp(c, bytes)), record)
          yield* anchorDown.add(sh(`exec ssh -F ${cfg} anchor 'head -c ${bytes} /dev/zero' > /dev/null`), record)
          yield* oursDown.add(ms(headDown(c, bytes)), record)
        }
        return {
          oursUp: oursUp.samples(),
          oursDown: oursDown.samples(),
          anchorUp: anchorUp.samples(),
          anchorDown: anchorDown.samples()
        }
      }))
    )

    // New connections from the real ssh client --------------------------------------------------
    yield* log(`ssh host true on new connections x ${counts.slow} (anchor, listener, serve --stdio)...`)
    const connect = yield* section(
      "connect",
      Effect.gen(function*() {
        const a = collector()
        const l = collector()
        const s = collector()
        for (let round = 0; round < counts.slow + 2; round++) {
          const record = round >= 2
          yield* a.add(
            Effect.flatMap(anchor.ssh(["-o", "ControlMaster=no", "-o", "ControlPath=none"], ["true"]), processMs),
            record
          )
          yield* l.add(Effect.flatMap(ssh("ours-listener", "true"), processMs), record)
          yield* s.add(Effect.flatMap(ssh("ours-stdio", "true"), processMs), record)
        }
        // first connections, fewer (each starts a sandbox): the daemon is stopped before each
        const f = collector()
        for (let round = 0; round < Math.max(5, Math.round(counts.slow / 3)) + 1; round++) {
          yield* stopDaemons(home)
          yield* f.add(Effect.flatMap(ssh("ours-stdio", "true"), processMs), round >= 1)
        }
        return { anchor: a.samples(), listener: l.samples(), stdio: s.samples(), stdioFirst: f.samples() }
      })
    )
    const cliVersion = yield* section(
      "cli",
      Effect.gen(function*() {
        const v = collector()
        for (let round = 0; round < Math.max(5, Math.round(counts.slow / 3)) + 2; round++) {
          yield* v.add(Effect.flatMap(run(process.execPath, [cliBin, "--version"]), processMs), round >= 2)
        }
        return v.samples()
      })
    )

    // Memory, in a process of its own ---------------------------------------------------------
    yield* log(`memory: ${io.memoryMib} MiB each way in a child process...`)
    const memory = yield* section(
      "memory",
      memoryChildren({
        dir: work,
        mib: io.memoryMib,
        sshConfig: config,
        host: "ours-mem",
        hostKeyPath,
        authorizedKeysPath,
        sftpIsolation: sftpMode,
        sftpLabel: sftpIsolation
      })
    )

    // Every `serve --stdio` relay has ended by now (its ssh exited); their daemons end here (they
    // would linger after their last connection). What they left behind:
    yield* stopDaemons(home)
    const stdioLeftovers = yield* fsTry("readdir", () => fs.readdirSync(proxyTmp))
    return {
      counts: io,
      stdioLeftovers,
      isolation: sandbox.info.isolation,
      sftpIsolation,
      sftpClient,
      sftpAnchor,
      sftpListener: sftpListenerResult,
      sftpStdio,
      sftpSmallAnchor,
      sftpSmallListener,
      cat,
      connect,
      cliVersion,
      cliNote: cliFreshness(),
      memory
    } satisfies IoResults
  }).pipe(
    Effect.scoped,
    Effect.mapError((e) =>
      e instanceof BenchError ? e : new BenchError({ message: e instanceof Error ? e.message : String(e), cause: e })
    )
  )
