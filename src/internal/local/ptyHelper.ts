/**
 * The in-sandbox terminal helper: a small CommonJS program run by the host's `node` *inside* the
 * sandbox (or on the host in non-isolated mode). It allocates the pseudo-terminal where the command
 * runs, so the command sees the sandbox's own `/dev/pts/N`, and relays bytes over plain pipes.
 *
 * Protocol (one spawn of the helper per terminal process):
 * - argv[2]: JSON {@link PtyHelperSpec};
 * - fd 0 → terminal input; terminal output → fd 1 (stderr is merged by the terminal);
 * - fd 3 (a socket pair): newline-delimited JSON. Host → helper: `{"resize":[cols,rows]}`,
 *   `{"signal":"INT"}`. Helper → host: `{"pid":n}` once started, then `{"exit":{"code":n}}` or
 *   `{"exit":{"signal":"TERM","coreDumped":false}}` after the output was drained.
 * - The helper exits the same way as the command (re-raising its signal where Node allows it), so
 *   the host sees the right status even without the control message. If fd 3 closes, the helper
 *   kills the command's process group and exits.
 *
 * The command is started with `setsid -c` on the slave side (opened by name, blocking, without
 * becoming the helper's controlling terminal), so it is a session leader owning the terminal:
 * exit codes, job control and `tty` behave as under sshd.
 *
 * @internal
 */

/** @internal */
export interface PtyHelperSpec {
  /** Absolute path of node-pty's native `pty.node` as seen where the helper runs. */
  readonly native: string
  readonly setsid: string
  readonly file: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
  readonly env: Readonly<Record<string, string>>
  readonly cols: number
  readonly rows: number
}

/** @internal */
export const ptyHelperFileName = "pty-helper.cjs"

/** @internal */
export const ptyHelperSource = String.raw`"use strict"
// sandbox-ssh terminal helper (generated; see src/internal/local/ptyHelper.ts)
const fs = require("node:fs")
const net = require("node:net")
const tty = require("node:tty")
const os = require("node:os")
const childProcess = require("node:child_process")

const spec = JSON.parse(process.argv[2])
const native = require(spec.native)
const control = new net.Socket({ fd: 3, readable: true, writable: true })
control.on("error", () => {})
const send = (message) => {
  if (!control.destroyed) control.write(JSON.stringify(message) + "\n")
}

try {
  process.chdir(spec.cwd)
} catch (error) {
  process.stdout.write("sandbox-ssh: cannot change directory to " + spec.cwd + ": " + error.message + "\r\n")
  send({ exit: { code: 1 } })
  process.exitCode = 1
  return
}

const term = native.open(spec.cols, spec.rows)
// Reopen the slave by name: a blocking descriptor that does not become our controlling terminal.
const slave = fs.openSync(term.pty, fs.constants.O_RDWR | fs.constants.O_NOCTTY)
fs.closeSync(term.slave)
// The native master and our control socket are not close-on-exec: cover them with /dev/null in
// the child so the command cannot read its own terminal's master or talk to the host.
const devNull = fs.openSync("/dev/null", "r")
const stdio = [slave, slave, slave]
for (let fd = 3; fd <= term.master; fd++) stdio.push(fd === 3 || fd === term.master ? devNull : "ignore")
let child
try {
  child = childProcess.spawn(spec.setsid, ["-c", spec.file, ...spec.args], { stdio, env: spec.env })
} catch (error) {
  process.stdout.write("sandbox-ssh: cannot start " + spec.file + ": " + error.message + "\r\n")
  send({ exit: { code: 127 } })
  process.exitCode = 127
  return
}
fs.closeSync(slave)
fs.closeSync(devNull)

const master = new tty.ReadStream(term.master)
let childExit = null
let drained = false
let idle = null
let finished = false

const finish = () => {
  if (finished) return
  finished = true
  if (idle !== null) clearTimeout(idle)
  const [code, signal] = childExit
  const message = signal === null
    ? { exit: { code: code === null ? 1 : code } }
    : { exit: { signal: signal.replace(/^SIG/, ""), coreDumped: false } }
  send(message)
  master.destroy()
  process.stdin.destroy()
  // process.exit drops stdout writes still queued (stdout is a socket: writes are asynchronous),
  // so exit only once both the output and the control message are written.
  let pending = 2
  const exit = () => {
    if (--pending > 0) return
    const unraisable = signal === null || signal === "SIGPIPE" || signal === "SIGUSR1" ||
      signal === "SIGSTOP" || signal === "SIGCHLD" || signal === "SIGWINCH" || signal === "SIGURG" ||
      signal === "SIGCONT" || signal === "SIGTSTP" || signal === "SIGTTIN" || signal === "SIGTTOU"
    if (unraisable) {
      process.exit(signal === null ? message.exit.code : 128 + (os.constants.signals[signal] || 0))
    } else {
      process.kill(process.pid, signal)
    }
  }
  process.stdout.write("", exit)
  control.end(exit)
}
const maybeFinish = () => {
  if (childExit === null) return
  if (drained) return finish()
  // Background jobs may keep the terminal open: stop relaying once it has been quiet for a while.
  // The timer can fire before output already waiting in the master was read (a loaded machine
  // runs late timers first): finish only after one more poll phase (setImmediate) saw no data.
  if (idle !== null) clearTimeout(idle)
  const seen = received
  idle = setTimeout(() => setImmediate(() => {
    if (received === seen) finish()
    else maybeFinish()
  }), 100)
}
let received = 0

master.on("data", (data) => {
  received++
  process.stdout.write(data)
  if (childExit !== null) maybeFinish()
})
// EIO once every slave descriptor is closed: all output has been read.
master.on("error", () => {
  drained = true
  maybeFinish()
})
// libuv ends the stream when a poll reports POLLHUP after a short read, without reading again:
// what the command wrote just before the last slave descriptor closed can still be in the
// terminal. Read it out here, while the descriptor is still open (the master is non-blocking; the
// kernel answers EIO once it is empty). Bounded in case something reopened the slave and writes on.
const drainMaster = () => {
  const buffer = Buffer.allocUnsafe(65536)
  for (let reads = 0; reads < 64; reads++) {
    let length
    try {
      length = fs.readSync(term.master, buffer, 0, buffer.length, null)
    } catch {
      return
    }
    if (length === 0) return
    received++
    process.stdout.write(Buffer.from(buffer.subarray(0, length)))
  }
}
master.on("end", () => {
  drainMaster()
  drained = true
  maybeFinish()
})
process.stdin.on("data", (data) => master.write(data))
process.stdin.on("error", () => {})
process.stdout.on("error", () => {})

child.on("error", (error) => {
  process.stdout.write("sandbox-ssh: cannot start " + spec.file + ": " + error.message + "\r\n")
  childExit = [127, null]
  drained = true
  maybeFinish()
})
child.on("spawn", () => send({ pid: child.pid }))
child.on("exit", (code, signal) => {
  childExit = [code, signal]
  maybeFinish()
})

let buffered = ""
control.setEncoding("utf8")
control.on("data", (data) => {
  buffered += data
  let newline
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, newline)
    buffered = buffered.slice(newline + 1)
    let message
    try {
      message = JSON.parse(line)
    } catch {
      continue
    }
    if (Array.isArray(message.resize)) {
      try {
        native.resize(term.master, message.resize[0], message.resize[1])
      } catch {}
    } else if (typeof message.signal === "string" && child.pid !== undefined) {
      try {
        process.kill(-child.pid, "SIG" + message.signal)
      } catch {
        try {
          process.kill(child.pid, "SIG" + message.signal)
        } catch {}
      }
    }
  }
})
control.on("end", () => {
  if (finished || child.pid === undefined) return
  try {
    process.kill(-child.pid, "SIGKILL")
  } catch {}
  try {
    process.kill(child.pid, "SIGKILL")
  } catch {}
})
`
