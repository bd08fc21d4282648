/**
 * SFTP runs with the login user's identity, as OpenSSH runs `sftp-server` as the logged-in user:
 * in an isolated LocalSandbox a user's SFTP session cannot read what that user's processes cannot,
 * and what it creates belongs to the user.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import type { Sandbox } from "../../src/Sandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import { makeOpenSshSetup, run } from "../support/openssh.js"
import { eventually, hasBwrap, processesWith, sh } from "./support.js"

/** Command lines of alice's file agent: nsenter's and the agent's own (`node agent.cjs --user=alice`). */
const aliceAgent = "agent.cjs\u0000--user=alice"

const uidOf = (pid: number): number | undefined => {
  try {
    const line = Fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Uid:"))
    return line === undefined ? undefined : Number(line.split(/\s+/)[1])
  } catch {
    return undefined
  }
}

/**
 * An isolated sandbox with root-only files (`/root/secret`, and `/tmp/root-only` in a directory
 * anyone can search) and a user alice (uid 1000) with a home.
 */
const makeSandbox = Effect.gen(function*() {
  const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
  const setup = yield* sh(
    sandbox,
    "echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd && echo 'alice:x:1000:' >> /etc/group && " +
      "echo s3cret > /root/secret && chmod 600 /root/secret && " +
      "echo s3cret > /tmp/root-only && chmod 600 /tmp/root-only"
  )
  assert.strictEqual(setup.exit.code, 0, setup.stderr.toString())
  // the sandbox's root has no capabilities (no chown): the host makes alice's home hers
  const home = Path.join(sandbox.info.root!, "home/alice")
  Fs.mkdirSync(home, { mode: 0o755 })
  Fs.chownSync(home, 1000, 1000)
  return sandbox
})

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString()

// other uids than 0 exist in the sandbox only when bwrap runs as root (see bubblewrap.ts, bwrapArgs)
describe.skipIf(!hasBwrap || process.getuid?.() !== 0)("SFTP as the login user (isolated LocalSandbox)", () => {
  it.scopedLive("alice's SFTP has alice's permissions and ownership, as her processes do", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox
      const ssh = SandboxSsh.make(sandbox)

      const root = yield* ssh.openClient()
      const rootSftp = yield* root.sftp()
      assert.strictEqual(text(yield* rootSftp.read("/root/secret")), "s3cret\n")

      const alice = yield* ssh.openClient({ user: "alice" })
      const sftp = yield* alice.sftp()
      const denied = yield* Effect.flip(sftp.read("/root/secret"))
      assert.strictEqual(denied._tag, "SftpError")
      assert.strictEqual(denied.reason, "PermissionDenied")
      // a root-only file in a directory she can search: the file's own mode refuses her
      assert.strictEqual((yield* Effect.flip(sftp.read("/tmp/root-only"))).reason, "PermissionDenied")
      assert.strictEqual(text(yield* rootSftp.read("/tmp/root-only")), "s3cret\n")
      const cat = yield* alice.exec("cat /root/secret")
      assert.notStrictEqual(cat.status, 0)
      assert.strictEqual(text(cat.stdout), "")

      // what alice creates is hers, seen through SFTP, by her processes and on the host
      yield* sftp.write("/tmp/by-alice", "hello")
      const info = yield* sftp.stat("/tmp/by-alice")
      assert.strictEqual(info.uid, 1000)
      assert.strictEqual(info.gid, 1000)
      assert.strictEqual(Fs.statSync(Path.join(sandbox.info.root!, "tmp/by-alice")).uid, 1000)
      const ids = yield* alice.exec("id -u; stat -c %u /tmp/by-alice; pwd")
      assert.strictEqual(ids.stdoutText, "1000\n1000\n/home/alice\n")
      // she starts in her home, as her shell does
      assert.strictEqual(yield* sftp.realPath("."), "/home/alice")
      yield* sftp.write("notes", "in her home")
      assert.strictEqual(Fs.readFileSync(Path.join(sandbox.info.root!, "home/alice/notes"), "utf8"), "in her home")

      // and she cannot write where her processes cannot
      const intoRoot = yield* Effect.flip(sftp.write("/root/planted", "x"))
      assert.strictEqual(intoRoot.reason, "PermissionDenied")
      assert.isFalse(Fs.existsSync(Path.join(sandbox.info.root!, "root/planted")))
      const chown = yield* Effect.flip(sftp.setstat("/tmp/by-alice", { uid: 0, gid: 0 }))
      assert.strictEqual(chown.reason, "PermissionDenied")

      // root's SFTP is still root's
      yield* rootSftp.write("/tmp/by-root", "x")
      assert.strictEqual((yield* rootSftp.stat("/tmp/by-root")).uid, 0)
    }))

  it.scopedLive("alice's file agent runs as alice and ends with her SFTP session", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox
      const alice = yield* SandboxSsh.make(sandbox).openClient({ user: "alice" })
      yield* Effect.scoped(Effect.gen(function*() {
        const sftp = yield* alice.sftp()
        yield* sftp.stat("/tmp")
        const agents = processesWith(aliceAgent)
        // nsenter (root, outside) and the agent it entered (alice, inside)
        assert.isAbove(agents.length, 0)
        assert.include(agents.map(uidOf), 1000)
        yield* sftp.close
      }))
      // the SFTP channel's end reaches the server a moment after the client's close returns
      assert.deepStrictEqual(yield* eventually(() => processesWith(aliceAgent), (pids) => pids.length === 0), [])
      // the connection lives on: further SFTP sessions of alice start new agents, and leave no file
      // descriptor behind (the agent's socket pair, its listener directory, the child's pipes)
      const openFds = () => Fs.readdirSync("/proc/self/fd").length
      const before = openFds()
      for (let i = 0; i < 3; i++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const again = yield* alice.sftp()
          assert.strictEqual(yield* again.realPath("."), "/home/alice")
          yield* again.close
        }))
        yield* eventually(() => processesWith(aliceAgent).length, (n) => n === 0)
      }
      assert.deepStrictEqual(processesWith(aliceAgent), [])
      assert.strictEqual(yield* eventually(openFds, (n) => n <= before), before)
    }))

  it.scopedLive("closing the sandbox's scope leaves no agent of a user behind", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const sandbox = yield* makeSandbox
        const fs = yield* sandbox.fileSystemFor!("alice")
        assert.strictEqual((yield* Effect.flip(fs.stat("/root/secret"))).reason, "PermissionDenied")
        assert.isAbove(processesWith(aliceAgent).length, 0)
      }))
      assert.deepStrictEqual(processesWith(aliceAgent), [])
    }))

  it.scopedLive("an unknown user gets no SFTP session, and the connection survives", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox
      const direct = yield* Effect.flip(Effect.scoped(sandbox.fileSystemFor!("mallory")))
      assert.strictEqual(direct.reason, "InvalidArgument")
      assert.include(direct.message, "mallory")

      const mallory = yield* SandboxSsh.make(sandbox).openClient({ user: "mallory" })
      const refused = yield* Effect.either(mallory.sftp())
      assert.strictEqual(refused._tag, "Left")
      // the same connection still answers (the shell cannot start for mallory either)
      const exec = yield* mallory.exec("true")
      assert.strictEqual(exec.status, 127)
      assert.include(exec.stderrText, "mallory")
    }))

  it.scopedLive("OpenSSH sftp logged in as alice (server user alice)", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const sandbox = yield* makeSandbox
      const server = yield* SandboxSsh.make(sandbox).prepareServer({
        hostKeyPath: Path.join(setup.home, "host_key"),
        authorizedKeysPath: Path.join(setup.home, "authorized_keys"),
        user: "alice"
      })
      const listener = yield* server.listen({ port: 0 })
      setup.trustHost(`[127.0.0.1]:${listener.port}`, server.hostKey.publicKey)
      const local = Path.join(setup.dir, "up.txt")
      Fs.writeFileSync(local, "uploaded")
      const batch = Path.join(setup.dir, "batch")
      Fs.writeFileSync(
        batch,
        [`-get /tmp/root-only ${setup.dir}/stolen`, `put ${local} /tmp/up.txt`, "pwd"].join("\n") + "\n"
      )
      const result = yield* run("sftp", [
        ...setup.sshOptions,
        "-P",
        String(listener.port),
        "-b",
        batch,
        "alice@127.0.0.1"
      ])
      assert.strictEqual(result.code, 0, result.stderr)
      assert.include(result.stderr, "Permission denied")
      assert.isFalse(Fs.existsSync(Path.join(setup.dir, "stolen")))
      assert.include(result.stdout.toString(), "/home/alice")
      const uploaded = Fs.statSync(Path.join(sandbox.info.root!, "tmp/up.txt"))
      assert.strictEqual(uploaded.uid, 1000)
    }))
})

describe("SFTP as the login user (non-isolated LocalSandbox)", () => {
  it.scopedLive("offers the host user only, as spawn does", () =>
    Effect.gen(function*() {
      const sandbox: Sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const other = yield* Effect.flip(Effect.scoped(sandbox.fileSystemFor!("someone-else")))
      assert.strictEqual(other.reason, "Unsupported")
      const spawnError = yield* Effect.flip(Effect.scoped(sandbox.spawn({ command: "true", user: "someone-else" })))
      assert.strictEqual(spawnError.reason, other.reason)
      const hostUser = (yield* sh(sandbox, "id -un")).stdout.toString().trim()
      assert.strictEqual(yield* Effect.scoped(sandbox.fileSystemFor!(hostUser)), sandbox.fs)
    }))
})
