/**
 * `serve --stdio` as OpenSSH's ProxyCommand relays each connection to one server daemon per
 * sandbox (`serve --socket`): a real `ssh` client, the real CLI, real sandboxes and processes.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { randomInt } from "node:crypto"
import * as fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { eventually } from "./local/support.js"
import { daemonsOf, makeOpenSshSetup, run, stopDaemons } from "./support/openssh.js"
import { allProcesses, processAlive } from "./support/processes.js"

const bin = Path.resolve(import.meta.dirname, "../bin/sandbox-ssh.js")
const alias = "sandbox-daemon-test"

type Isolation = "auto" | "bubblewrap" | "none"

/** Host processes whose command line has `marker`. */
const withMarker = (marker: string) => allProcesses().filter((p) => p.args.includes(marker)).map((p) => p.pid)

/** A unique `sleep` argument, to find that process on the host. */
const sleepMarker = () => `${1000 + randomInt(1000)}.${randomInt(1_000_000)}`

/** A command that leaves `sleep <marker>` running after the connection ends. */
const background = (isolation: Isolation, marker: string) =>
  // Without isolation the sandbox ends the process groups its execs started: nohup stays in one.
  isolation === "bubblewrap"
    ? `setsid sleep ${marker} </dev/null >/dev/null 2>&1 &`
    : `nohup sleep ${marker} </dev/null >/dev/null 2>&1 &`

/**
 * A client key, a host key, and `ssh` through `serve --stdio` with its own SANDBOX_SSH_HOME; every
 * daemon it started is stopped when the test ends.
 */
const makeBox = (isolation: Isolation, extra: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const setup = yield* makeOpenSshSetup
    yield* Effect.addFinalizer(() => stopDaemons(setup.home))
    const hostKey = Path.join(setup.home, "ssh_host_ed25519_key")
    const keygen = yield* run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", hostKey])
    assert.strictEqual(keygen.code, 0, keygen.stderr)
    setup.trustHost(alias, fs.readFileSync(`${hostKey}.pub`, "utf8").trim())
    const proxy = [process.execPath, bin, "serve", "--stdio", "--name", "box", "--isolation", isolation, ...extra]
      .join(" ")
    const sshVia = (proxyCommand: string) => (command: string) =>
      run(
        "ssh",
        [
          ...setup.sshOptions,
          "-o",
          `ProxyCommand=${proxyCommand}`,
          "-o",
          `HostKeyAlias=${alias}`,
          `root@${alias}`,
          command
        ],
        { env: { SANDBOX_SSH_HOME: setup.home } }
      )
    const ssh = sshVia(proxy)
    /** `ssh` through the same sandbox named with another `--isolation`. */
    const sshWith = (other: Isolation) => sshVia(proxy.replace(`--isolation ${isolation}`, `--isolation ${other}`))
    const run_ = Path.join(setup.home, "run")
    const sockets = () => fs.existsSync(run_) ? fs.readdirSync(run_).filter((name) => name.endsWith(".sock")) : []
    return { setup, home: setup.home, ssh, sshWith, sockets, daemons: () => daemonsOf(setup.home) }
  })

describe.each(["bubblewrap", "none"] as const)("serve --stdio (%s)", (isolation) => {
  it.scopedLive("a background process of one connection is there for the next; the sandbox ends with the daemon", () =>
    Effect.gen(function*() {
      const box = yield* makeBox(isolation)
      const marker = sleepMarker()
      const first = yield* box.ssh(background(isolation, marker))
      assert.strictEqual(first.code, 0, first.stderr)
      const second = yield* box.ssh(`pgrep -f 'slee[p] ${marker}'`)
      assert.strictEqual(second.code, 0, second.stderr)
      assert.match(second.stdout.toString(), /^\d+\n$/)
      assert.strictEqual(box.daemons().length, 1)
      assert.deepStrictEqual(box.sockets().length, 1)
      assert.isNotEmpty(withMarker(marker))
      yield* stopDaemons(box.home)
      assert.deepStrictEqual(yield* eventually(() => withMarker(marker), (pids) => pids.length === 0, 10_000), [])
      assert.deepStrictEqual(box.sockets(), [])
    }))
})

describe("serve --stdio's daemon", () => {
  it.scopedLive("--isolation auto names the daemon of what it picks: auto and bubblewrap share one environment", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("auto")
      const marker = sleepMarker()
      const first = yield* box.ssh(background("bubblewrap", marker))
      assert.strictEqual(first.code, 0, first.stderr)
      // (the bracket keeps pgrep from matching the shell that runs it)
      const second = yield* box.sshWith("bubblewrap")(`pgrep -f 'slee[p] ${marker}'`)
      assert.strictEqual(second.code, 0, second.stderr)
      assert.match(second.stdout.toString(), /^\d+\n$/)
      assert.strictEqual(box.daemons().length, 1)
      assert.strictEqual(box.sockets().length, 1)
    }))

  it.scopedLive("sandbox-ssh stop ends the daemon of a selection, its sandbox and socket; again: nothing to stop", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("bubblewrap")
      const marker = sleepMarker()
      assert.strictEqual((yield* box.ssh(background("bubblewrap", marker))).code, 0)
      const [daemon] = box.daemons()
      assert.isDefined(daemon)
      assert.isNotEmpty(withMarker(marker))
      const cli = (args: ReadonlyArray<string>) =>
        run(process.execPath, [bin, "stop", "--name", "box", ...args], { env: { SANDBOX_SSH_HOME: box.home } })
      // another selection (isolation none) names another daemon: this one stays
      const other = yield* cli(["--isolation", "none"])
      assert.strictEqual(other.code, 0, other.stderr)
      assert.include(other.stderr, "no daemon serves")
      assert.deepStrictEqual(box.daemons(), [daemon])
      const stopped = yield* cli(["--isolation", "bubblewrap"])
      assert.strictEqual(stopped.code, 0, stopped.stderr)
      assert.include(stopped.stderr, `pid ${daemon}`)
      assert.deepStrictEqual(box.daemons(), [])
      assert.deepStrictEqual(box.sockets(), [])
      assert.deepStrictEqual(yield* eventually(() => withMarker(marker), (pids) => pids.length === 0, 10_000), [])
      const again = yield* cli(["--isolation", "bubblewrap"])
      assert.strictEqual(again.code, 0, again.stderr)
      assert.include(again.stderr, "no daemon serves")
    }))

  it.scopedLive("lingers for --linger after the last connection, then ends with its sandbox and socket", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("bubblewrap", ["--linger", "1s"])
      const marker = sleepMarker()
      assert.strictEqual((yield* box.ssh(background("bubblewrap", marker))).code, 0)
      // a second connection within the linger finds the same sandbox
      assert.strictEqual((yield* box.ssh(`pgrep -f 'slee[p] ${marker}'`)).code, 0)
      const [daemon, ...others] = box.daemons()
      assert.isDefined(daemon)
      assert.deepStrictEqual(others, [])
      assert.isTrue(yield* processAlive(daemon!))
      const ended = yield* eventually(() => box.daemons(), (pids) => pids.length === 0, 10_000)
      assert.deepStrictEqual(ended, [])
      assert.isFalse(yield* processAlive(daemon!))
      assert.deepStrictEqual(box.sockets(), [])
      assert.deepStrictEqual(yield* eventually(() => withMarker(marker), (pids) => pids.length === 0, 10_000), [])
    }))

  it.scopedLive("six connections at once on a fresh home: all served, by one daemon and one sandbox", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("bubblewrap")
      const results = yield* Effect.all(
        Array.from({ length: 6 }, () => box.ssh("readlink /proc/self/ns/pid")),
        { concurrency: "unbounded" }
      )
      for (const result of results) assert.strictEqual(result.code, 0, result.stderr)
      // one PID namespace: every connection ran in the same sandbox
      const namespaces = new Set(results.map((result) => result.stdout.toString()))
      assert.strictEqual(namespaces.size, 1, [...namespaces].join(", "))
      assert.match([...namespaces][0]!, /^pid:\[\d+\]\n$/)
      // daemons that lost the start race end on their own
      const daemons = yield* eventually(() => box.daemons(), (pids) => pids.length <= 1, 10_000)
      assert.strictEqual(daemons.length, 1)
      assert.strictEqual(box.sockets().length, 1)
    }))

  it.scopedLive("a SIGKILLed daemon leaves a stale socket, which the next connection replaces", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("bubblewrap")
      assert.strictEqual((yield* box.ssh("true")).code, 0)
      const [killed] = box.daemons()
      process.kill(killed!, "SIGKILL")
      yield* eventually(() => box.daemons(), (pids) => pids.length === 0, 10_000)
      assert.strictEqual(box.sockets().length, 1)
      const next = yield* box.ssh("echo again")
      assert.strictEqual(next.code, 0, next.stderr)
      assert.strictEqual(next.stdout.toString(), "again\n")
      const daemons = box.daemons()
      assert.strictEqual(daemons.length, 1)
      assert.notStrictEqual(daemons[0], killed)
      assert.strictEqual(box.sockets().length, 1)
      // the killed daemon could not remove its sandbox's runtime directory; the new one swept it
      const runtimeDirs = fs.readdirSync(Os.tmpdir()).filter((name) => name.includes(`.${killed}.`))
      assert.deepStrictEqual(runtimeDirs.filter((name) => name.startsWith("sandbox-ssh-run-")), [])
    }))

  it.scopedLive("without authorized_keys: the daemon's message reaches ssh's stderr, and no daemon stays", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("none")
      fs.rmSync(Path.join(box.home, "authorized_keys"))
      const result = yield* box.ssh("true")
      assert.strictEqual(result.code, 255)
      assert.include(result.stderr, "no authorized_keys file")
      assert.include(result.stderr, "sandbox-ssh authorize")
      assert.deepStrictEqual(yield* eventually(() => box.daemons(), (pids) => pids.length === 0, 10_000), [])
      assert.deepStrictEqual(box.sockets(), [])
    }))

  it.scopedLive("bad relay options and an open run directory are refused with a message and exit code 1", () =>
    Effect.gen(function*() {
      const box = yield* makeBox("none")
      const relay = (args: ReadonlyArray<string>) =>
        run(process.execPath, [bin, "serve", "--stdio", ...args], { env: { SANDBOX_SSH_HOME: box.home } })
      const unknown = yield* relay(["--bogus"])
      assert.strictEqual(unknown.code, 1)
      assert.include(unknown.stderr, "--bogus")
      assert.include(unknown.stderr, "see: sandbox-ssh serve --help")
      const isolation = yield* relay(["--isolation", "chroot"])
      assert.strictEqual(isolation.code, 1)
      assert.include(isolation.stderr, "--isolation")
      // checked by the daemon, reported by the relay
      const linger = yield* relay(["--isolation", "none", "--linger=-1s"])
      assert.strictEqual(linger.code, 1)
      assert.include(linger.stderr, "invalid option --linger")
      assert.strictEqual(linger.stdout.length, 0)
      fs.chmodSync(Path.join(box.home, "run"), 0o755)
      const open = yield* relay(["--isolation", "none"])
      assert.strictEqual(open.code, 1)
      assert.include(open.stderr, "chmod 700")
      assert.deepStrictEqual(box.daemons(), [])
    }))
})
