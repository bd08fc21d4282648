// `sandbox-ssh serve --stdio`, the OpenSSH ProxyCommand: relays one SSH connection between
// stdin/stdout and the server daemon of the selected sandbox (`serve --socket`, src/cli/daemon.ts),
// starting that daemon when none answers. The daemon keeps the sandbox (and whatever runs in it)
// for every connection, and for --linger after the last one.
//
// `sandbox-ssh stop <the same selection options>` ends that daemon (SIGTERM, then SIGKILL after
// 10 s): its sandbox and every process in it end too.
//
// OpenSSH starts one of these per connection, so it loads no bundle and no Effect: only Node's
// built-in modules. Its options are those of serveStdio.ts; it checks the few it needs and passes
// the rest to the daemon, which checks them and reports through its log (printed here on failure).
"use strict"
const childProcess = require("node:child_process")
const crypto = require("node:crypto")
const fs = require("node:fs")
const net = require("node:net")
const os = require("node:os")
const path = require("node:path")
const { parseArgs } = require("node:util")

/** How long a starting daemon may take before it accepts connections. */
const START_TIMEOUT_MS = 15_000
/** The log is cut when a new daemon starts and it has grown past this. */
const MAX_LOG_BYTES = 1024 * 1024
/** `sun_path` holds 108 bytes with the NUL; the daemon also binds `<socket>.<pid>`. */
const MAX_SOCKET_PATH = 107 - 8

const fail = (message) => {
  process.stderr.write(`sandbox-ssh: ${message}\n`)
  process.exit(1)
}

const stopping = process.argv[2] === "stop"
const command = stopping ? "stop" : "serve"

let values
try {
  values = parseArgs({
    args: process.argv.slice(3),
    strict: true,
    allowPositionals: false,
    options: {
      stdio: { type: "boolean" },
      linger: { type: "string" },
      root: { type: "string" },
      name: { type: "string" },
      isolation: { type: "string", default: "auto" },
      "host-key": { type: "string" },
      "authorized-keys": { type: "string" },
      user: { type: "string" },
      verbose: { type: "boolean", short: "v" }
    }
  }).values
} catch (error) {
  fail(`invalid option ${command}: ${error.message} (see: sandbox-ssh ${command} --help)`)
}
if (!["auto", "bubblewrap", "none"].includes(values.isolation)) {
  fail("invalid option --isolation: one of auto, bubblewrap, none")
}

// The defaults as the daemon resolves them: src/internal/home.ts (home, host key, authorized_keys),
// src/cli/sandboxSelection.ts (the sandbox root), src/internal/options.ts (user). Keep in step.
const configuredHome = process.env.SANDBOX_SSH_HOME
const home = configuredHome !== undefined && configuredHome !== ""
  ? path.resolve(configuredHome)
  : path.join(os.homedir(), ".sandbox-ssh")
// `auto` is resolved here as LocalSandbox resolves it (src/internal/local/bubblewrap.ts, findBwrap),
// so that `auto` and what it picks name one daemon and one environment, not two.
const hasBwrap = () =>
  ["/usr/bin/bwrap", ...(process.env.PATH ?? "").split(":").filter((dir) => dir !== "").map((dir) =>
    path.join(dir, "bwrap")
  )].some((candidate) => {
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })
const selection = {
  root: values.root !== undefined
    ? path.resolve(values.root)
    : path.join(home, "sandboxes", values.name ?? "default"),
  isolation: values.isolation === "auto" ? (hasBwrap() ? "bubblewrap" : "none") : values.isolation,
  hostKey: path.resolve(values["host-key"] ?? path.join(home, "ssh_host_ed25519_key")),
  authorizedKeys: path.resolve(values["authorized-keys"] ?? path.join(home, "authorized_keys")),
  user: values.user ?? "root"
}
const hash = crypto.createHash("sha256").update(JSON.stringify(selection)).digest("hex").slice(0, 16)
const run = path.join(home, "run")
const socketPath = path.join(run, `${hash}.sock`)
const logPath = path.join(run, `${hash}.log`)

// The run directory holds sockets that give a shell in the sandbox: only we may enter it.
try {
  fs.mkdirSync(run, { recursive: true, mode: 0o700 })
} catch (error) {
  fail(`cannot create ${run}: ${error.message}`)
}
const stats = fs.lstatSync(run)
if (!stats.isDirectory() || stats.uid !== process.getuid() || (stats.mode & 0o077) !== 0) {
  fail(
    `${run} must be a directory of uid ${process.getuid()} that only it can use (it is ${
      stats.isDirectory() ? "a directory" : "not a directory"
    } of uid ${stats.uid}, mode ${(stats.mode & 0o777).toString(8)}); fix: chmod 700 ${run}`
  )
}
if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
  fail(`${socketPath} is too long for a Unix socket; use a shorter SANDBOX_SSH_HOME`)
}

for (const signal of ["SIGHUP", "SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(128 + os.constants.signals[signal]))
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** A connected socket, or the error of the attempt. */
const connect = () =>
  new Promise((resolve) => {
    const socket = net.connect(socketPath)
    const onError = (error) => {
      socket.destroy()
      resolve({ error })
    }
    socket.once("error", onError)
    socket.once("connect", () => {
      socket.off("error", onError)
      resolve({ socket })
    })
  })

/**
 * The daemon's first bytes (its SSH identification, which a server sends unasked), or nothing when
 * the connection ends first: a daemon closing down (its linger is over) or that lost a start race
 * drops connections it never served, and then no SSH byte went either way, so trying again is safe.
 * (This relay reads nothing from stdin until then.)
 */
const firstChunk = (socket) =>
  new Promise((resolve) => {
    const done = (chunk) => {
      socket.off("data", onData)
      socket.off("end", onEnd)
      socket.off("error", onEnd)
      socket.off("close", onEnd)
      resolve(chunk)
    }
    const onData = (chunk) => {
      socket.pause()
      done(chunk)
    }
    const onEnd = () => done(undefined)
    socket.on("data", onData)
    socket.once("end", onEnd)
    socket.once("error", onEnd)
    socket.once("close", onEnd)
  })

/** Starts a daemon for this selection, detached (its own session), its stderr appended to the log. */
const startDaemon = () => {
  const log = fs.openSync(logPath, "a", 0o600)
  try {
    const size = fs.fstatSync(log).size
    if (size > MAX_LOG_BYTES) fs.ftruncateSync(log, 0)
    const offset = size > MAX_LOG_BYTES ? 0 : size
    const args = [path.join(__dirname, "sandbox-ssh.js"), "serve", "--socket", socketPath]
    if (values.linger !== undefined) args.push(`--linger=${values.linger}`)
    if (values.root !== undefined) args.push("--root", selection.root)
    if (values.name !== undefined) args.push(`--name=${values.name}`)
    args.push("--isolation", selection.isolation, "--host-key", selection.hostKey)
    args.push("--authorized-keys", selection.authorizedKeys, `--user=${selection.user}`)
    if (values.verbose) args.push("--verbose")
    const child = childProcess.spawn(process.execPath, args, {
      cwd: "/",
      detached: true,
      stdio: ["ignore", "ignore", log],
      env: { ...process.env, SANDBOX_SSH_HOME: home }
    })
    const daemon = { child, offset, exit: undefined }
    child.once("exit", (code, signal) => {
      daemon.exit = { code, signal }
    })
    child.once("error", (error) => {
      daemon.exit = { code: null, signal: null, error }
    })
    child.unref()
    return daemon
  } finally {
    fs.closeSync(log)
  }
}

/** What the daemon wrote to its log since `offset`. */
const logSince = (offset) => {
  try {
    const fd = fs.openSync(logPath, "r")
    try {
      const size = fs.fstatSync(fd).size
      const buffer = Buffer.alloc(Math.max(0, Math.min(size - offset, 64 * 1024)))
      fs.readSync(fd, buffer, 0, buffer.length, Math.max(offset, size - buffer.length))
      return buffer.toString()
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return ""
  }
}

const daemonFailed = (daemon) => {
  const logged = logSince(daemon.offset)
  if (logged !== "") process.stderr.write(logged.endsWith("\n") ? logged : `${logged}\n`)
  const { code, signal, error } = daemon.exit
  fail(
    error !== undefined
      ? `cannot start the server daemon: ${error.message}`
      : `the server daemon exited with ${signal ?? code} before it served (log: ${logPath})`
  )
}

/** Relays until either side is done: stdin EOF half-closes the socket; the socket's end ends us. */
const relay = (socket, first) => {
  const finish = () => process.stdout.write("", () => process.exit(0))
  socket.once("end", finish)
  socket.once("close", finish)
  socket.on("error", () => {})
  process.stdout.on("error", () => process.exit(0))
  process.stdin.on("error", () => socket.end())
  process.stdout.write(first)
  socket.pipe(process.stdout, { end: false })
  process.stdin.pipe(socket)
}

const main = async () => {
  const deadline = Date.now() + START_TIMEOUT_MS
  let daemon
  let dropped = 0
  for (;;) {
    const attempt = await connect()
    if (attempt.socket !== undefined) {
      const first = await firstChunk(attempt.socket)
      if (first !== undefined) return relay(attempt.socket, first)
      attempt.socket.destroy()
      if (++dropped > 5) fail(`the server daemon at ${socketPath} keeps closing connections (log: ${logPath})`)
      continue
    }
    const code = attempt.error.code
    if (code !== "ENOENT" && code !== "ECONNREFUSED" && code !== "EAGAIN") {
      fail(`cannot connect to the server daemon at ${socketPath}: ${attempt.error.message}`)
    }
    if (daemon !== undefined && daemon.exit !== undefined) {
      // exit 0 before serving: it found another daemon already serving (which may be gone since)
      if (daemon.exit.code !== 0) daemonFailed(daemon)
      daemon = undefined
    }
    if (daemon === undefined && code !== "EAGAIN") daemon = startDaemon()
    if (Date.now() > deadline) {
      if (daemon !== undefined) {
        try {
          process.kill(daemon.child.pid, "SIGTERM")
        } catch {
          // gone already
        }
      }
      process.stderr.write(daemon === undefined ? "" : logSince(daemon.offset))
      fail(`the server daemon did not answer at ${socketPath} within ${START_TIMEOUT_MS / 1000} s (log: ${logPath})`)
    }
    await sleep(daemon === undefined ? 5 : 10)
  }
}

/** Host pids of this user's daemons serving `socketPath` (`serve --socket <socketPath>`). */
const daemonsServing = () =>
  fs.readdirSync("/proc").flatMap((entry) => {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) return []
    try {
      if (fs.statSync(`/proc/${entry}`).uid !== process.getuid()) return []
      const args = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0")
      const at = args.findIndex((arg) => arg === "--socket")
      const serving = at !== -1 ? args[at + 1] : args.find((arg) => arg.startsWith("--socket="))?.slice(9)
      return args.includes("serve") && serving === socketPath ? [pid] : []
    } catch {
      return []
    }
  })

const stop = async () => {
  const pids = daemonsServing()
  if (pids.length === 0) {
    process.stderr.write(`sandbox-ssh: no daemon serves ${selection.root}\n`)
    return
  }
  const signal = (name) => {
    for (const pid of pids) {
      try {
        process.kill(pid, name)
      } catch {
        // gone already
      }
    }
  }
  signal("SIGTERM")
  const deadline = Date.now() + 10_000
  while (daemonsServing().length > 0) {
    if (Date.now() > deadline) {
      signal("SIGKILL")
      break
    }
    await sleep(20)
  }
  process.stderr.write(`sandbox-ssh: stopped the daemon of ${selection.root} (pid ${pids.join(", ")})\n`)
}

;(stopping ? stop() : main()).catch((error) => fail(String(error?.stack ?? error)))
