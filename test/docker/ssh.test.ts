/**
 * The SSH layer, unchanged, on a DockerSandbox: the in-process client (exec, PTY, SFTP) and a TCP
 * endpoint driven by OpenSSH's own ssh, sftp and scp.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as Path from "node:path"
import type * as Sandbox from "../../src/Sandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import { sh } from "../local/support.js"
import { listenForOpenSsh, makeOpenSshSetup, type OpenSshSetup, run, type Ssh } from "../support/openssh.js"
import { freePort, readFromPort } from "../support/ports.js"
import { makeSandbox } from "./support.js"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

describe("SandboxSsh.openClient on a DockerSandbox", () => {
  it.scopedLive("exec: exit codes, stderr, signal deaths, stdin, a PTY", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const client = yield* SandboxSsh.make(sandbox).openClient()
      for (const code of [0, 1, 42, 255]) {
        const output = yield* client.exec(`echo out; echo err >&2; exit ${code}`)
        assert.strictEqual(output.status, code)
        assert.strictEqual(output.stdoutText, "out\n")
        assert.strictEqual(output.stderrText, "err\n")
      }
      const killed = yield* client.exec("kill -KILL $$")
      assert.strictEqual(killed.status, 137)
      const input = yield* client.exec("wc -c; cat /etc/hostname >/dev/null", { stdin: "12345" })
      assert.strictEqual(input.stdoutText.trim(), "5")
      const tty = yield* client.exec("tty; stty size", { tty: true, size: { cols: 90, rows: 30 } })
      assert.match(tty.stdoutText, /^\/dev\/pts\/\d+\r\n30 90\r\n$/)
      const big = yield* client.exec("head -c 1048576 /dev/zero")
      assert.strictEqual(big.stdout.length, 1048576)
      const timed = yield* Effect.timeoutOption(client.exec("sleep 30"), "300 millis")
      assert.strictEqual(timed._tag, "None")
      const after = yield* sh(sandbox, "ps -o args | grep -c '^[s]leep 30' || true")
      assert.strictEqual(after.stdout.toString().trim(), "0")
    }))

  it.scopedLive("sftp: whole files, directories, renames, links, attributes", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const client = yield* SandboxSsh.make(sandbox).openClient()
      const sftp = yield* client.sftp()
      const data = new Uint8Array(8 * 1024 * 1024 + 3).map((_, i) => (i * 2654435761) >>> 24)
      yield* sftp.mkdir("/tmp/work")
      yield* sftp.write("/tmp/work/a.bin", data)
      assert.strictEqual(sha256(yield* sftp.read("/tmp/work/a.bin")), sha256(data))
      const remote = yield* client.exec("sha256sum /tmp/work/a.bin")
      assert.strictEqual(remote.stdoutText.split(" ")[0], sha256(data))
      yield* sftp.write("/tmp/work/b.txt", "bee")
      const renamed = yield* Effect.flip(sftp.rename("/tmp/work/a.bin", "/tmp/work/b.txt"))
      assert.strictEqual(renamed.reason, "Failure")
      yield* sftp.rename("/tmp/work/a.bin", "/tmp/work/b.txt", { overwrite: true })
      assert.strictEqual((yield* sftp.stat("/tmp/work/b.txt")).size, data.length)
      yield* sftp.symlink("b.txt", "/tmp/work/link")
      assert.strictEqual(yield* sftp.readLink("/tmp/work/link"), "b.txt")
      assert.strictEqual((yield* sftp.lstat("/tmp/work/link")).type, "SymbolicLink")
      assert.strictEqual(yield* sftp.realPath("/tmp/work/../work/link"), "/tmp/work/b.txt")
      yield* sftp.chmod("/tmp/work/b.txt", 0o600)
      assert.strictEqual((yield* sftp.stat("/tmp/work/b.txt")).mode & 0o777, 0o600)
      yield* sftp.writeAt("/tmp/work/b.txt", 2, "XY")
      const head = yield* client.exec("head -c 4 /tmp/work/b.txt | od -An -c")
      assert.match(head.stdoutText, /X\s+Y/)
      const names = (yield* sftp.readdir("/tmp/work")).map((e) => e.name).sort()
      assert.deepStrictEqual(names, ["b.txt", "link"])
      const missing = yield* Effect.flip(sftp.stat("/tmp/work/nope"))
      assert.strictEqual(missing.reason, "NoSuchFile")
      assert.isTrue(yield* sftp.exists("/tmp/work/link"))
      const stats = yield* sftp.statvfs("/tmp")
      assert.isAbove(stats.blocks, 0)
      yield* sftp.removeFile("/tmp/work/link")
      yield* sftp.removeFile("/tmp/work/b.txt")
      yield* sftp.removeDir("/tmp/work")
      assert.isFalse(yield* sftp.exists("/tmp/work"))
      assert.strictEqual(yield* sftp.realPath("."), sandbox.info.workdir)
    }))
})

interface Endpoint {
  readonly setup: OpenSshSetup
  readonly sandbox: Sandbox.Sandbox
  readonly port: number
  readonly ssh: Ssh
  readonly options: ReadonlyArray<string>
}

const makeEndpoint: Effect.Effect<Endpoint, unknown, Scope.Scope> = Effect.gen(function*() {
  const setup = yield* makeOpenSshSetup
  const sandbox = yield* makeSandbox({ hostname: "dockerbox" })
  const { listener, ssh } = yield* listenForOpenSsh(setup, sandbox)
  return { setup, sandbox, port: listener.port, ssh, options: setup.sshOptions }
})

describe("OpenSSH tools through prepareServer(...).listen() on a DockerSandbox", () => {
  it.scopedLive("ssh: exit codes, stderr, stdin, -tt, a signal death", () =>
    Effect.gen(function*() {
      const { ssh } = yield* makeEndpoint
      for (const code of [0, 1, 42]) {
        const result = yield* ssh([`echo out; echo err >&2; exit ${code}`])
        assert.strictEqual(result.code, code)
        assert.strictEqual(result.stdout.toString(), "out\n")
        assert.strictEqual(result.stderr, "err\n")
      }
      const hostname = yield* ssh(["hostname"])
      assert.strictEqual(hostname.stdout.toString(), "dockerbox\n")
      const data = new Uint8Array(8 * 1024 * 1024).map((_, i) => (i * 2654435761) >>> 24)
      const piped = yield* ssh(["sha256sum"], data)
      assert.strictEqual(piped.stdout.toString().split(" ")[0], sha256(data))
      const tty = yield* ssh(["-tt", "tty; stty size; exit 3"])
      assert.strictEqual(tty.code, 3)
      const lines = tty.stdout.toString().split(/\r?\n/)
      assert.match(lines[0]!, /^\/dev\/pts\/\d+$/)
      assert.match(lines[1]!, /^\d+ \d+$/)
      const env = yield* ssh(["-o", "SetEnv=GREETING=hello", "echo $GREETING"])
      assert.strictEqual(env.stdout.toString(), "hello\n")
    }))

  it.scopedLive("sftp -b and scp (SFTP mode) both ways", () =>
    Effect.gen(function*() {
      const { port, setup, ssh } = yield* makeEndpoint
      const local = Path.join(setup.dir, "local.bin")
      const data = new Uint8Array(3 * 1024 * 1024 + 1).map((_, i) => (i * 31) % 256)
      fs.writeFileSync(local, data)
      const batch = Path.join(setup.dir, "batch")
      fs.writeFileSync(
        batch,
        [
          "mkdir /tmp/work",
          `put ${local} /tmp/work/up.bin`,
          `get /tmp/work/up.bin ${setup.dir}/down.bin`,
          "mkdir /tmp/work/dir",
          "rename /tmp/work/up.bin /tmp/work/dir/moved.bin",
          "ln -s /tmp/work/dir/moved.bin /tmp/work/link",
          "ls -l /tmp/work/dir",
          "chmod 640 /tmp/work/dir/moved.bin",
          "df /tmp/work",
          "rm /tmp/work/link",
          "mkdir /tmp/work/empty",
          "rmdir /tmp/work/empty"
        ].join("\n") + "\n"
      )
      const options = [...setup.sshOptions, "-P", String(port)]
      const result = yield* run("sftp", [...options, "-b", batch, "root@127.0.0.1"])
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(sha256(fs.readFileSync(Path.join(setup.dir, "down.bin"))), sha256(data))
      assert.include(result.stdout.toString(), "moved.bin")
      const remote = yield* ssh(["sha256sum /tmp/work/dir/moved.bin; stat -c %a /tmp/work/dir/moved.bin; ls /tmp/work"])
      assert.strictEqual(
        remote.stdout.toString(),
        `${sha256(data)}  /tmp/work/dir/moved.bin\n640\ndir\n`
      )
      const up = yield* run("scp", [...options, local, "root@127.0.0.1:/tmp/work/scp.bin"])
      assert.strictEqual(up.code, 0, up.stderr)
      const back = Path.join(setup.dir, "scp-back.bin")
      const down = yield* run("scp", [...options, "root@127.0.0.1:/tmp/work/scp.bin", back])
      assert.strictEqual(down.code, 0, down.stderr)
      assert.strictEqual(sha256(fs.readFileSync(back)), sha256(data))
    }))

  it.scopedLive("ssh -L reaches a server on the container's loopback", () =>
    Effect.gen(function*() {
      const { sandbox, ssh } = yield* makeEndpoint
      yield* sh(
        sandbox,
        "echo 'hello from inside' > /tmp/reply; nc -ll -p 8080 -e cat /tmp/reply >/dev/null 2>&1 & sleep 0.2"
      )
      const localPort = yield* freePort
      yield* Effect.forkScoped(
        ssh(["-N", "-o", "ExitOnForwardFailure=yes", "-L", `${localPort}:127.0.0.1:8080`])
      )
      const received = yield* readFromPort(localPort)
      assert.strictEqual(received, "hello from inside\n")
    }))
})
