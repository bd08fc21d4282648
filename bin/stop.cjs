// `sandbox-ssh stop <the selection options of serve --stdio>`: ends the server daemon that selection
// names (SIGTERM, then SIGKILL after 10 s), and with it its sandbox and every process in it.
"use strict"
const fs = require("node:fs")
const { daemonSelection, fail } = require("./daemonSelection.cjs")

const { selection, socketPath } = daemonSelection("stop", process.argv.slice(3))

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

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

stop().catch((error) => fail(String(error?.stack ?? error)))
