// `sandbox-ssh serve --stdio`, the OpenSSH ProxyCommand: relays one SSH connection between
// stdin/stdout and the server daemon of the selected sandbox (`serve --socket`, src/cli/daemon.ts),
// starting that daemon when none answers. The daemon keeps the sandbox (and whatever runs in it)
// for every connection, and for --linger after the last one.
//
// OpenSSH starts one of these per connection, so it loads no bundle and no Effect: only Node's
// built-in modules. Its options are the daemon's (src/cli/daemonMain.ts); it resolves the selection
// (bin/daemonSelection.cjs) and passes the rest to the daemon, which checks them and reports through
// its log (printed here on failure).
"use strict"
const childProcess = require("node:child_process")
const fs = require("node:fs")
const net = require("node:net")
const os = require("node:os")
const path = require("node:path")
const { daemonSelection, fail } = require("./daemonSelection.cjs")

/** How long a starting daemon may take before it accepts connections. */
const START_TIMEOUT_MS = 15_000
/** The log is cut when a new daemon starts and it has grown past this. */
const MAX_LOG_BYTES = 1024 * 1024

const { selection, socketPath, logPath, values, home } = daemonSelection("serve", process.argv.slice(3))

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

main().catch((error) => fail(String(error?.stack ?? error)))
