/**
 * The OpenSSH anchor: a private sshd on 127.0.0.1 (free port) in a temporary directory, with its own
 * host key, user key, authorized_keys and config, plus a client config pinning that host key. It is
 * measured in the same run as the library so that ratios compare like with like on this machine.
 *
 * Run it alone with `npx tsx bench/anchor.ts` (prints the anchor figures).
 *
 * ## Keeping dotfiles out of the measurement
 *
 * sshd always runs a command through the user's login shell (`<shell> -c <command>`), even under
 * `ForceCommand`, so wrapping the command cannot help. When that shell is bash, Debian's bash
 * (built with SSH_SOURCE_BASHRC) sources `/etc/bash.bashrc` and `~/.bashrc` for a *non-interactive*
 * command if it sees it was started by sshd (`SSH_CLIENT` set) and `SHLVL` is below 2 after its own
 * increment. Root's `~/.bashrc` here runs `pyenv init` etc. (~70 ms), which would be measured.
 * `SetEnv SHLVL=1` in sshd_config makes bash start at SHLVL=2 and skip both files; nothing on the
 * machine (users, /etc/passwd, dotfiles) is changed. `PermitUserRC no` skips `~/.ssh/rc`. The
 * anchor probes the session at start-up (shell, SHLVL, PATH) and reports what it saw; a PATH
 * carrying entries under $HOME means some rc file still ran, and the report says so.
 *
 * ## Choices that keep the comparison fair
 *
 * - Key exchange `curve25519-sha256` (what the library's ssh2 stack negotiates) rather than
 *   OpenSSH 9.2's default `sntrup761x25519-sha512` (~70 ms more per connection here).
 *   `BENCH_ANCHOR_KEX` overrides it.
 * - Cipher `aes128-gcm@openssh.com` on both sides, ed25519 host and user keys.
 * - `MaxSessions 100` so 64 concurrent channels on one multiplexed connection are accepted
 *   (the default 10 refuses the 11th).
 * - The control master is our own foreground child (`-M -N`, `ControlPersist no`), so cleanup
 *   kills it by pid; `ssh -O exit` is tried first.
 *
 * sshd needs its privilege-separation directory `/run/sshd`, which Debian's service unit creates
 * and containers without systemd lack; the anchor creates it (0755) if missing.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import type { ProcessResult, RunCounts, Samples } from "./util.js"
import { BenchError, failureOf, run, runCounts, sample, summarize, timed } from "./util.js"

const SSHD = "/usr/sbin/sshd"
const HOST = "anchor"

export interface SessionProbe {
  /** `$0` of the session: the login shell sshd ran the command with. */
  readonly shell: string
  readonly shlvl: string
  readonly path: string
  /** `true` when the PATH shows no sign of an rc file having run. */
  readonly clean: boolean
  readonly note: string
}

export interface Anchor {
  readonly dir: string
  readonly port: number
  readonly sshConfig: string
  /** The client's private key (its `.pub` sits next to it); our servers authorize it too. */
  readonly userKey: string
  readonly kex: string
  readonly version: string
  readonly probe: SessionProbe
  /** `ssh -F <cfg> [extra...] anchor <command...>` */
  readonly ssh: (
    extra: ReadonlyArray<string>,
    command: ReadonlyArray<string>
  ) => Effect.Effect<ProcessResult, BenchError>
}

const freePort = Effect.async<number, BenchError>((resume) => {
  const server = net.createServer()
  server.once("error", (cause) => resume(Effect.fail(new BenchError({ message: "no free port", cause }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** Resolves once something on `port` speaks SSH (sends its identification string). */
const sshBanner = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    let done = false
    const finish = (ok: boolean) => {
      if (done) return
      done = true
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    socket.setTimeout(1000, () => finish(false))
    socket.once("data", (b: Buffer) => finish(b.toString("latin1").startsWith("SSH-")))
    socket.once("error", () => finish(false))
    socket.once("close", () => finish(false))
    return Effect.sync(() => socket.destroy())
  })

const writeFile = (file: string, text: string, mode = 0o600) =>
  Effect.try({
    try: () => fs.writeFileSync(file, text, { mode }),
    catch: (cause) => new BenchError({ message: `write ${file}`, cause })
  })

const keygen = (file: string) =>
  Effect.flatMap(
    run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "sandbox-ssh-bench", "-f", file]),
    (r) =>
      r.code === 0
        ? Effect.void
        : Effect.fail(new BenchError({ message: `ssh-keygen failed: ${failureOf(r)}` }))
  )

const killAndWait = (child: ChildProcess, group: boolean) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resume(Effect.void)
    const pid = child.pid
    const send = (signal: NodeJS.Signals) => {
      try {
        if (group) process.kill(-pid, signal)
        else child.kill(signal)
      } catch {
        // already gone
      }
    }
    const timer = setTimeout(() => send("SIGKILL"), 2000)
    child.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    send("SIGTERM")
  })

const waitFor = <E, R>(what: string, attempts: number, delayMs: number, check: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    for (let i = 0; i < attempts; i++) {
      if (yield* check) return
      yield* Effect.sleep(delayMs)
    }
    return yield* Effect.fail(new BenchError({ message: `timed out waiting for ${what}` }))
  })

/** Starts sshd and the control master; everything is torn down when the scope closes. */
export const make: Effect.Effect<Anchor, BenchError, Scope.Scope> = Effect.gen(function*() {
  const kex = process.env.BENCH_ANCHOR_KEX || "curve25519-sha256"
  // Temporary directory (short path: the ControlPath socket must fit in sun_path).
  const dir = yield* Effect.acquireRelease(
    Effect.try({
      try: () => fs.mkdtempSync(path.join(os.tmpdir(), "ssb-anchor-")),
      catch: (cause) => new BenchError({ message: "mkdtemp", cause })
    }),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  // Backstop for an abrupt exit (uncaught error, process.exit): kill what we started, synchronously.
  const pids = new Set<number>()
  const onExit = () => {
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
  yield* Effect.acquireRelease(
    Effect.sync(() => process.on("exit", onExit)),
    () => Effect.sync(() => process.off("exit", onExit))
  )

  yield* Effect.try({
    try: () => fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }),
    catch: (cause) => new BenchError({ message: "cannot create sshd's privilege separation dir /run/sshd", cause })
  })

  const hostKey = path.join(dir, "host_key")
  const userKey = path.join(dir, "user_key")
  const authorizedKeys = path.join(dir, "authorized_keys")
  const knownHosts = path.join(dir, "known_hosts")
  const sshdConfig = path.join(dir, "sshd_config")
  const sshConfig = path.join(dir, "ssh_config")
  const controlPath = path.join(dir, "cm.sock")
  yield* Effect.all([keygen(hostKey), keygen(userKey)], { concurrency: 2 })
  yield* writeFile(authorizedKeys, fs.readFileSync(`${userKey}.pub`, "utf8"))
  const hostPub = fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(/\s+/).slice(0, 2).join(" ")

  const startSshd = (port: number) =>
    Effect.gen(function*() {
      yield* writeFile(
        sshdConfig,
        [
          `ListenAddress 127.0.0.1:${port}`,
          `HostKey ${hostKey}`,
          `PidFile ${path.join(dir, "sshd.pid")}`,
          "UsePAM no",
          "StrictModes no",
          `AuthorizedKeysFile ${authorizedKeys}`,
          "PermitRootLogin prohibit-password",
          "PubkeyAuthentication yes",
          "PasswordAuthentication no",
          "KbdInteractiveAuthentication no",
          "HostKeyAlgorithms ssh-ed25519",
          `KexAlgorithms ^${kex}`,
          "Ciphers ^aes128-gcm@openssh.com",
          "AcceptEnv LANG LC_*",
          // Keep login-shell rc files out of the measurement: see the module comment.
          "SetEnv SHLVL=1",
          "PermitUserRC no",
          "PermitUserEnvironment no",
          "UseDNS no",
          "PrintMotd no",
          "PrintLastLog no",
          "MaxSessions 100",
          "MaxStartups 200:30:400",
          "LogLevel ERROR",
          "Subsystem sftp internal-sftp",
          ""
        ].join("\n")
      )
      const check = yield* run(SSHD, ["-t", "-f", sshdConfig])
      if (check.code !== 0) {
        return yield* Effect.fail(new BenchError({ message: `sshd -t rejected the config: ${failureOf(check)}` }))
      }
      const child = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const c = spawn(SSHD, ["-D", "-e", "-f", sshdConfig], { detached: true, stdio: ["ignore", "ignore", "pipe"] })
          if (c.pid !== undefined) pids.add(c.pid)
          return c
        }),
        (c) => Effect.tap(killAndWait(c, true), () => Effect.sync(() => c.pid !== undefined && pids.delete(c.pid)))
      )
      let stderr = ""
      child.stderr!.on("data", (b: Buffer) => stderr += b.toString("utf8"))
      child.on("error", (e) => stderr += String(e))
      const exited = () => child.exitCode !== null || child.signalCode !== null
      yield* waitFor(
        "sshd to listen",
        100,
        50,
        Effect.suspend(() =>
          exited()
            ? Effect.fail(new BenchError({ message: `sshd exited: ${stderr.trim()}` }))
            : sshBanner(port)
        )
      )
      return child
    })

  // A free port can be taken between probing and sshd's bind: retry with another.
  let port = 0
  for (let attempt = 1;; attempt++) {
    port = yield* freePort
    const started = yield* Effect.either(startSshd(port))
    if (started._tag === "Right") break
    if (attempt >= 3) return yield* Effect.fail(started.left)
  }

  yield* writeFile(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`)
  yield* writeFile(
    sshConfig,
    [
      `Host ${HOST}`,
      "  HostName 127.0.0.1",
      `  Port ${port}`,
      "  User root",
      `  IdentityFile ${userKey}`,
      "  IdentitiesOnly yes",
      "  IdentityAgent none",
      "  PreferredAuthentications publickey",
      "  BatchMode yes",
      "  StrictHostKeyChecking yes",
      `  UserKnownHostsFile ${knownHosts}`,
      "  GlobalKnownHostsFile /dev/null",
      "  UpdateHostKeys no",
      "  HostKeyAlgorithms ssh-ed25519",
      `  KexAlgorithms ${kex}`,
      "  Ciphers aes128-gcm@openssh.com",
      "  ControlMaster no",
      `  ControlPath ${controlPath}`,
      "  ControlPersist no",
      "  LogLevel ERROR",
      ""
    ].join("\n")
  )

  const ssh = (extra: ReadonlyArray<string>, command: ReadonlyArray<string>) =>
    run("ssh", ["-F", sshConfig, ...extra, HOST, ...command])

  // Control master: a foreground child of ours, killed by pid at the end.
  const master = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const c = spawn("ssh", ["-F", sshConfig, "-M", "-N", "-o", "ControlPersist=no", HOST], {
        detached: true,
        stdio: ["ignore", "ignore", "pipe"]
      })
      if (c.pid !== undefined) pids.add(c.pid)
      return c
    }),
    (c) =>
      ssh(["-O", "exit"], []).pipe(
        Effect.timeout(2000),
        Effect.ignore,
        Effect.zipRight(killAndWait(c, false)),
        Effect.tap(() => Effect.sync(() => c.pid !== undefined && pids.delete(c.pid)))
      )
  )
  let masterErr = ""
  master.stderr!.on("data", (b: Buffer) => masterErr += b.toString("utf8"))
  yield* waitFor(
    "the control master",
    100,
    50,
    Effect.suspend(() =>
      master.exitCode !== null
        ? Effect.fail(new BenchError({ message: `control master exited: ${masterErr.trim()}` }))
        : Effect.map(ssh(["-O", "check"], []), (r) => r.code === 0)
    )
  )

  const version = (yield* run("ssh", ["-V"])).stderr.trim()

  // What a session looks like: the shell sshd used, and whether an rc file ran.
  const p = yield* ssh(["-o", "ControlMaster=no", "-o", "ControlPath=none"], [
    "printf '%s\\n%s\\n%s\\n' \"$0\" \"${SHLVL-}\" \"$PATH\""
  ])
  if (p.code !== 0) return yield* Effect.fail(new BenchError({ message: `probe session failed: ${failureOf(p)}` }))
  const [shell = "", shlvl = "", remotePath = ""] = p.stdout.split("\n")
  const home = os.userInfo().homedir
  const homeEntries = remotePath.split(":").filter((e) => home !== "/" && e.startsWith(home))
  const isBash = path.basename(shell.replace(/^-/, "")) === "bash"
  const clean = homeEntries.length === 0 && (!isBash || Number(shlvl) >= 2)
  const note = clean
    ? `login shell ${shell}, SHLVL=${shlvl}${
      isBash ? " (bash skips ~/.bashrc and /etc/bash.bashrc)" : ""
    }, PATH has no $HOME entries`
    : `WARNING: an rc file seems to run in sessions (shell ${shell}, SHLVL=${shlvl}, PATH=${remotePath})`
  return { dir, port, sshConfig, userKey, kex, version, probe: { shell, shlvl, path: remotePath, clean, note }, ssh }
})

export interface AnchorResults {
  /** (a) new connection + `true` */
  readonly connect: Samples
  /** (b) `true` on the multiplexed connection */
  readonly muxExec: Samples
  /** (c) `concurrency` concurrent `true` on the multiplexed connection, wall time per burst */
  readonly concurrent: Samples
  /** execs that failed across all bursts, out of bursts × concurrency */
  readonly concurrentFailed: number
  /** (d) plain local `/bin/sh -c true` through node's child_process */
  readonly localSpawn: Samples
}

const asSample = (r: ProcessResult): number | { readonly failed: string } => {
  const failed = failureOf(r)
  return failed === undefined ? r.ms : { failed }
}

export const measure = (anchor: Anchor, counts: RunCounts): Effect.Effect<AnchorResults, BenchError> =>
  Effect.gen(function*() {
    const connect = yield* sample(
      counts.slow,
      counts.warmup,
      Effect.map(anchor.ssh(["-o", "ControlMaster=no", "-o", "ControlPath=none"], ["true"]), asSample)
    )
    const muxExec = yield* sample(counts.fast, counts.warmup, Effect.map(anchor.ssh([], ["true"]), asSample))
    let concurrentFailed = 0
    const burst = Effect.map(
      timed(Effect.all(Array.from({ length: counts.concurrency }, () => anchor.ssh([], ["true"])), {
        concurrency: "unbounded"
      })),
      ([ms, results]) => {
        const failed = results.map(failureOf).filter((f) => f !== undefined)
        concurrentFailed += failed.length
        return failed.length === 0 ? ms : { failed: `${failed.length}/${results.length} failed: ${failed[0]}` }
      }
    )
    yield* burst // warm-up, not counted
    concurrentFailed = 0
    const concurrent = yield* sample(counts.bursts, 0, burst)
    const localSpawn = yield* sample(counts.fast, counts.warmup, Effect.map(run("/bin/sh", ["-c", "true"]), asSample))
    return { connect, muxExec, concurrent, concurrentFailed, localSpawn }
  })

const fmt = (s: Samples) => {
  const x = summarize(s.times)
  return `median ${x.median.toFixed(2)} ms  (p10 ${x.p10.toFixed(2)}, p90 ${x.p90.toFixed(2)}, n ${x.n})${
    s.failures > 0 ? `  FAILURES ${s.failures}: ${s.firstFailure}` : ""
  }`
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const program = Effect.gen(function*() {
    const counts = runCounts()
    const anchor = yield* make
    yield* Effect.log(`${anchor.version} on 127.0.0.1:${anchor.port}, kex ${anchor.kex}; ${anchor.probe.note}`)
    const r = yield* measure(anchor, counts)
    yield* Effect.log(`(a) new connection + true: ${fmt(r.connect)}`)
    yield* Effect.log(`(b) mux exec true:         ${fmt(r.muxExec)}`)
    yield* Effect.log(`(c) ${counts.concurrency} concurrent mux execs: ${fmt(r.concurrent)}`)
    yield* Effect.log(`(d) local spawn sh -c true: ${fmt(r.localSpawn)}`)
  }).pipe(Effect.scoped)
  const { runMain } = await import("@effect/platform-node/NodeRuntime")
  runMain(program)
}
