import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as Module from "node:module"
import * as Path from "node:path"
import * as vm from "node:vm"
import { daemonsOf, makeOpenSshSetup, run, stopDaemons } from "./support/openssh.js"

const bin = Path.resolve(import.meta.dirname, "../bin/sandbox-ssh.js")

/** Runs the CLI with its home in the test's temp directory. */
const cli = (home: string, args: ReadonlyArray<string>, input?: string) =>
  run(process.execPath, [bin, ...args], { env: { SANDBOX_SSH_HOME: home }, ...(input === undefined ? {} : { input }) })

describe("sandbox-ssh CLI", () => {
  it.scopedLive("authorize adds a key once, with mode 0600", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const home = Path.join(setup.dir, "cli-home")
      const first = yield* cli(home, ["authorize", "--key", setup.publicKey])
      assert.strictEqual(first.code, 0)
      assert.include(first.stderr, "authorized: SHA256:")
      const again = yield* cli(home, ["authorize", "--stdin"], `${setup.publicKey}\n`)
      assert.strictEqual(again.code, 0)
      assert.include(again.stderr, "already authorized")
      const file = Path.join(home, "authorized_keys")
      assert.strictEqual(fs.readFileSync(file, "utf8"), `${setup.publicKey}\n`)
      assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600)
      const bad = yield* cli(home, ["authorize", "--key", "ssh-ed25519 nonsense"])
      assert.strictEqual(bad.code, 1)
      assert.include(bad.stderr, "no public key found")
    }))

  it.scopedLive("ssh reaches the sandbox through the config-ssh ProxyCommand", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const home = setup.home
      // the ProxyCommand's daemon outlives the connections (--linger, 5 minutes by default)
      yield* Effect.addFinalizer(() => stopDaemons(home))
      const config = yield* cli(home, ["config-ssh", "--name", "proxy-test", "--isolation", "bubblewrap"])
      assert.strictEqual(config.code, 0)
      const configFile = Path.join(setup.dir, "ssh_config")
      fs.writeFileSync(configFile, config.stdout)
      assert.match(config.stdout.toString(), /ProxyCommand .* serve --stdio --name proxy-test --isolation bubblewrap/)
      const ssh = (args: ReadonlyArray<string>, input?: string) =>
        run(
          "ssh",
          [
            "-F",
            configFile,
            "-i",
            setup.identity,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "sandbox-proxy-test",
            ...args
          ],
          { env: { SANDBOX_SSH_HOME: home }, ...(input === undefined ? {} : { input }) }
        )
      const result = yield* ssh(["echo out; echo err >&2; hostname; exit 42"])
      assert.strictEqual(result.code, 42)
      assert.strictEqual(result.stdout.toString(), "out\nsandbox\n")
      assert.strictEqual(result.stderr, "err\n")
      // Files persist in the named sandbox across connections.
      yield* ssh(["cat > /root/note"], "kept\n")
      const kept = yield* ssh(["cat /root/note"])
      assert.strictEqual(kept.stdout.toString(), "kept\n")
      assert.isTrue(fs.existsSync(Path.join(home, "sandboxes", "proxy-test", "root", "note")))
      const tty = yield* ssh(["-tt", "tty"])
      assert.match(tty.stdout.toString(), /^\/dev\/pts\/\d+\r?\n$/)
      // one daemon served them all
      assert.strictEqual(daemonsOf(home).length, 1)
    }))

  it.scopedLive("exec propagates exit codes and quotes arguments", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const root = fs.mkdtempSync(Path.join(setup.dir, "root-"))
      const argv = yield* cli(setup.home, ["exec", "--root", root, "--", "printf", "%s|", "a b", "it's", "$HOME"])
      assert.strictEqual(argv.code, 0)
      assert.strictEqual(argv.stdout.toString(), "a b|it's|$HOME|")
      const line = yield* cli(setup.home, ["exec", "--root", root, "--", "echo $((6 * 7)); exit 3"])
      assert.strictEqual(line.code, 3)
      assert.strictEqual(line.stdout.toString(), "42\n")
      const piped = yield* cli(setup.home, ["exec", "--root", root, "--", "tr a-z A-Z"], "shout\n")
      assert.strictEqual(piped.stdout.toString(), "SHOUT\n")
      const killed = yield* cli(setup.home, ["exec", "--root", root, "--", "kill -TERM $$"])
      assert.strictEqual(killed.code, 143)
      assert.include(killed.stderr, "SIGTERM")
    }))

  it.scopedLive("bad input gets an actionable error and a non-zero exit", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const noCommand = yield* cli(setup.home, ["exec", "--root", setup.dir])
      assert.strictEqual(noCommand.code, 1)
      assert.include(noCommand.stderr, "command")
      const badIsolation = yield* cli(setup.home, ["exec", "--isolation", "chroot", "--", "true"])
      assert.notStrictEqual(badIsolation.code, 0)
      const emptyHome = Path.join(setup.dir, "empty-home")
      const noKeys = yield* cli(emptyHome, ["serve", "--stdio"])
      assert.strictEqual(noKeys.code, 1)
      assert.include(noKeys.stderr, "sandbox-ssh authorize")
      assert.strictEqual(noKeys.stdout.length, 0)
      assert.deepStrictEqual(daemonsOf(emptyHome), [])
    }))

  it("the CLI and the server daemon run from code caches the build wrote and this Node accepts", () => {
    // bin/code-cache.cjs compiles each bundle exactly so; a missing or rejected cache costs every
    // start the bundle's compile time (a failed warm-up is only a warning of the build)
    for (const name of ["cli.cjs", "daemon.cjs"]) {
      const bundle = Path.resolve(import.meta.dirname, "../dist", name)
      const cachedData = fs.readFileSync(`${bundle}.cache`)
      const script = new vm.Script(Module.wrap(fs.readFileSync(bundle, "utf8")), { filename: bundle, cachedData })
      assert.isAbove(cachedData.length, 256 * 1024, name)
      assert.isFalse(script.cachedDataRejected, name)
    }
  })
})
