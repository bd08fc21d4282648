/**
 * OpenSSH's own file tools against a sandbox: sftp, scp (SFTP and legacy mode) and rsync, through
 * the TCP listener and through `serve --stdio` as a ProxyCommand (relayed to the sandbox's daemon).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as Path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import { makeOpenSshSetup, type OpenSshSetup, run, stopDaemons } from "./support/openssh.js"

const bin = Path.resolve(import.meta.dirname, "../bin/sandbox-ssh.js")
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

type Isolation = "bubblewrap" | "none"

interface Target {
  readonly setup: OpenSshSetup
  /** Options that reach the sandbox for ssh/sftp/scp (without the destination). */
  readonly options: (tool: "ssh" | "sftp" | "scp") => ReadonlyArray<string>
  readonly destination: string
  /** The sandbox's root directory on the host (its `/` when isolated). */
  readonly root: string
  /** Where the sandbox sees `rel` (isolated: under its own `/`; not isolated: the host path). */
  readonly remote: (rel: string) => string
  /** The host path of a sandbox path. */
  readonly host: (rel: string) => string
}

const viaListener = (isolation: Isolation): Effect.Effect<Target, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const setup = yield* makeOpenSshSetup
    const root = fs.mkdtempSync(Path.join(setup.dir, "root-"))
    const sandbox = yield* LocalSandbox.make({ root, isolation })
    const server = yield* SandboxSsh.make(sandbox).prepareServer({
      hostKeyPath: Path.join(setup.home, "host_key"),
      authorizedKeysPath: Path.join(setup.home, "authorized_keys")
    })
    const listener = yield* server.listen({ port: 0 })
    setup.trustHost(`[127.0.0.1]:${listener.port}`, server.hostKey.publicKey)
    return target(
      setup,
      root,
      isolation,
      (tool) => [...setup.sshOptions, tool === "ssh" ? "-p" : "-P", String(listener.port)],
      "127.0.0.1"
    )
  })

const viaProxyCommand = (isolation: Isolation): Effect.Effect<Target, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const setup = yield* makeOpenSshSetup
    // the daemon serves every connection of the test, and outlives them (--linger)
    yield* Effect.addFinalizer(() => stopDaemons(setup.home))
    const root = fs.mkdtempSync(Path.join(setup.dir, "root-"))
    const proxy =
      `env SANDBOX_SSH_HOME=${setup.home} ${process.execPath} ${bin} serve --stdio --root ${root} --isolation ${isolation}`
    setup.trustHost("sandbox-under-test", (yield* hostPublicKey(setup)).trim())
    return target(
      setup,
      root,
      isolation,
      () => [...setup.sshOptions, "-o", `ProxyCommand=${proxy}`, "-o", "HostKeyAlias=sandbox-under-test"],
      "sandbox-under-test"
    )
  })

/** The CLI's host key (created on first use) as a known_hosts key. */
const hostPublicKey = (setup: OpenSshSetup) =>
  Effect.gen(function*() {
    const config = yield* run(process.execPath, [bin, "config-ssh", "--name", "probe"], {
      env: { SANDBOX_SSH_HOME: setup.home }
    })
    assert.strictEqual(config.code, 0, config.stderr)
    const line = fs.readFileSync(Path.join(setup.home, "known_hosts"), "utf8").trim().split("\n")[0]!
    return line.split(" ").slice(1).join(" ")
  })

const target = (
  setup: OpenSshSetup,
  root: string,
  isolation: Isolation,
  options: Target["options"],
  destination: string
): Target => ({
  setup,
  options,
  destination: `root@${destination}`,
  root,
  remote: (rel) => isolation === "bubblewrap" ? `/${rel}` : Path.join(root, rel),
  host: (rel) => Path.join(root, rel)
})

const transports = [
  ["listener", viaListener],
  ["ProxyCommand", viaProxyCommand]
] as const

describe.each(["bubblewrap", "none"] as const)("OpenSSH tools (%s)", (isolation) => {
  describe.each(transports)("through the %s", (_, makeTarget) => {
    it.scopedLive("sftp -b: put, get, mkdir, rename, ln -s, ls -l, chmod, df, rm, rmdir", () =>
      Effect.gen(function*() {
        const t = yield* makeTarget(isolation)
        const local = Path.join(t.setup.dir, "local.bin")
        const data = new Uint8Array(3 * 1024 * 1024 + 1).map((_, i) => (i * 31) % 256)
        fs.writeFileSync(local, data)
        fs.mkdirSync(t.host("work"), { recursive: true })
        const batch = Path.join(t.setup.dir, "batch")
        fs.writeFileSync(
          batch,
          [
            `put ${local} ${t.remote("work/up.bin")}`,
            `get ${t.remote("work/up.bin")} ${t.setup.dir}/down.bin`,
            `mkdir ${t.remote("work/dir")}`,
            `rename ${t.remote("work/up.bin")} ${t.remote("work/dir/moved.bin")}`,
            `ln -s ${t.remote("work/dir/moved.bin")} ${t.remote("work/link")}`,
            `ls -l ${t.remote("work/dir")}`,
            `chmod 640 ${t.remote("work/dir/moved.bin")}`,
            `df ${t.remote("work")}`,
            `rm ${t.remote("work/link")}`,
            `mkdir ${t.remote("work/empty")}`,
            `rmdir ${t.remote("work/empty")}`
          ].join("\n") + "\n"
        )
        const result = yield* run("sftp", [...t.options("sftp"), "-b", batch, t.destination])
        assert.strictEqual(result.code, 0, result.stderr)
        assert.strictEqual(sha256(fs.readFileSync(Path.join(t.setup.dir, "down.bin"))), sha256(data))
        assert.strictEqual(sha256(fs.readFileSync(t.host("work/dir/moved.bin"))), sha256(data))
        assert.strictEqual(fs.statSync(t.host("work/dir/moved.bin")).mode & 0o777, 0o640)
        assert.isFalse(fs.existsSync(t.host("work/link")))
        assert.isFalse(fs.existsSync(t.host("work/empty")))
        assert.include(result.stdout.toString(), "moved.bin")
        assert.match(result.stdout.toString(), /Size\s+Used\s+Avail/)
      }))

    it.scopedLive("scp in SFTP mode and in legacy -O mode, both ways", () =>
      Effect.gen(function*() {
        const t = yield* makeTarget(isolation)
        const local = Path.join(t.setup.dir, "scp.bin")
        const data = new Uint8Array(1024 * 1024 + 7).map((_, i) => (i * 7) % 256)
        fs.writeFileSync(local, data)
        fs.mkdirSync(t.host("scp"), { recursive: true })
        for (const mode of [[], ["-O"]]) {
          const name = mode.length === 0 ? "sftp-mode" : "legacy"
          const up = yield* run("scp", [
            ...t.options("scp"),
            ...mode,
            local,
            `${t.destination}:${t.remote(`scp/${name}`)}`
          ])
          assert.strictEqual(up.code, 0, up.stderr)
          assert.strictEqual(sha256(fs.readFileSync(t.host(`scp/${name}`))), sha256(data), `upload ${name}`)
          const back = Path.join(t.setup.dir, `back-${name}`)
          const down = yield* run("scp", [
            ...t.options("scp"),
            ...mode,
            `${t.destination}:${t.remote(`scp/${name}`)}`,
            back
          ])
          assert.strictEqual(down.code, 0, down.stderr)
          assert.strictEqual(sha256(fs.readFileSync(back)), sha256(data), `download ${name}`)
        }
      }))

    it.scopedLive("rsync -av copies a tree, and a second run transfers nothing", () =>
      Effect.gen(function*() {
        const t = yield* makeTarget(isolation)
        const tree = Path.join(t.setup.dir, "tree")
        fs.mkdirSync(Path.join(tree, "a/b"), { recursive: true })
        fs.writeFileSync(Path.join(tree, "a/b/file"), "x".repeat(100_000))
        fs.writeFileSync(Path.join(tree, "top"), "top\n")
        fs.symlinkSync("top", Path.join(tree, "link"))
        const ssh = ["ssh", ...t.options("ssh")].map((word) => word.includes(" ") ? `'${word}'` : word).join(" ")
        const sync = () => run("rsync", ["-av", "-e", ssh, `${tree}/`, `${t.destination}:${t.remote("synced/")}`])
        const first = yield* sync()
        assert.strictEqual(first.code, 0, first.stderr)
        assert.include(first.stdout.toString(), "a/b/file")
        assert.strictEqual(fs.readFileSync(t.host("synced/a/b/file"), "utf8"), "x".repeat(100_000))
        assert.strictEqual(fs.readlinkSync(t.host("synced/link")), "top")
        const second = yield* sync()
        assert.strictEqual(second.code, 0, second.stderr)
        assert.notInclude(second.stdout.toString(), "a/b/file")
        assert.notInclude(second.stdout.toString(), "top\n")
      }))
  })
})
