// The server daemon a `sandbox-ssh serve --stdio` or `stop` command line names (bin/relay.cjs,
// bin/stop.cjs): one daemon, one sandbox per selection (sandbox directory, isolation, host key,
// authorized_keys, user), reached at `<home>/run/<hash>.sock`. Node's built-in modules only.
"use strict"
const crypto = require("node:crypto")
const fs = require("node:fs")
const os = require("node:os")
const path = require("node:path")
const { parseArgs } = require("node:util")

/** `sun_path` holds 108 bytes with the NUL; the daemon also binds `<socket>.<pid>`. */
const MAX_SOCKET_PATH = 107 - 8

const fail = (message) => {
  process.stderr.write(`sandbox-ssh: ${message}\n`)
  process.exit(1)
}

/**
 * The daemon a command line names (`serve --stdio` and `stop` take the same selection options):
 * the options, the resolved selection, and the daemon's socket and log in the run directory, which
 * is created 0700 and refused when anyone else could enter it. Exits with a message on bad input.
 */
const daemonSelection = (command, argv) => {
  let values
  try {
    values = parseArgs({
      args: argv,
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
  return { values, home, selection, socketPath, logPath }
}

module.exports = { daemonSelection, fail }
