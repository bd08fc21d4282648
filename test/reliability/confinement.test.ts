/**
 * Confinement seen from an exec in an isolated (bubblewrap) sandbox, through the public client:
 * no remount of the read-only /usr, no chroot/unshare escape to host files, no view of host
 * processes through /proc, no signal or ptrace reaching a host process, no TCP connection to a
 * host port on 127.0.0.1 (or the host's other addresses).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as ChildProcess from "node:child_process"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as Path from "node:path"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import type { SshClient } from "../../src/SshClient.js"
import { processAlive } from "../support/processes.js"
import { hasBwrap, report } from "./support.js"

const makeClient = Effect.gen(function*() {
  const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
  assert.isTrue(sandbox.info.isolated)
  return yield* SandboxSsh.make(sandbox).openClient()
})

const sh = (client: SshClient, script: string) =>
  Effect.map(client.exec(script), (out) => ({ status: out.status, out: out.stdoutText, err: out.stderrText }))

/** A host file the sandbox must never read, with a secret in it. */
const hostSecret = Effect.acquireRelease(
  Effect.sync(() => {
    const secret = `host-secret-${randomUUID()}`
    // the name differs from the content: error messages name the path, they must not count as leaks
    const path = Path.join(os.tmpdir(), `sandbox-ssh-confinement-${randomUUID()}.txt`)
    fs.writeFileSync(path, secret, { mode: 0o644 })
    return { secret, path }
  }),
  ({ path }) => Effect.sync(() => fs.rmSync(path, { force: true }))
)

/** A host process with a recognisable command line, killed with the scope. */
const hostSleeper = Effect.acquireRelease(
  Effect.sync(() => {
    const seconds = `${1000 + Math.floor(Math.random() * 1000)}.${Math.floor(Math.random() * 1e6)}`
    const child = ChildProcess.spawn("sleep", [seconds], { stdio: "ignore" })
    return { pid: child.pid!, marker: `sleep ${seconds}`, child }
  }),
  ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
)

describe.skipIf(!hasBwrap)("confinement of an isolated exec", () => {
  it.scopedLive("/usr cannot be remounted read-write or written; nothing can be mounted", () =>
    Effect.gen(function*() {
      const client = yield* makeClient
      const remount = yield* sh(client, "mount -o remount,rw /usr")
      const remountRoot = yield* sh(client, "mount -o remount,rw /")
      const write = yield* sh(client, "touch /usr/sandbox-was-here")
      const tmpfs = yield* sh(client, "mount -t tmpfs none /mnt")
      const caps = yield* sh(client, "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status")
      yield* report({
        suite: "confinement",
        name: "mounts",
        remount: remount.status,
        remountRoot: remountRoot.status,
        write: write.status,
        tmpfs: tmpfs.status
      })
      assert.notStrictEqual(remount.status, 0)
      assert.notStrictEqual(remountRoot.status, 0)
      assert.notStrictEqual(write.status, 0)
      assert.notStrictEqual(tmpfs.status, 0)
      assert.isFalse(fs.existsSync("/usr/sandbox-was-here"))
      for (const line of caps.out.trim().split("\n")) assert.match(line, /:\s+0+$/)
    }))

  it.scopedLive("chroot and unshare escapes do not reach host files", () =>
    Effect.gen(function*() {
      const client = yield* makeClient
      const { path, secret } = yield* hostSecret
      const attempts: Record<string, string> = {
        direct: `cat ${path}`,
        procRoot: `cat /proc/1/root${path}`,
        procSelfRoot: `cat /proc/self/root${path}`,
        parentDirs: `cat ../../../../../../../..${path}`,
        chroot: `chroot / cat ${path}`,
        unshareMount: `unshare -m cat ${path}`,
        unshareNet: "unshare -n true",
        // a new user namespace gives CAP_SYS_CHROOT over it: the classic chroot breakout
        userNsChrootBreakout: `unshare -Ur perl -e 'mkdir "/tmp/esc"; chroot "/tmp/esc" or die "chroot: $!"; ` +
          `chdir ".." for 1..64; chroot "." or die "chroot: $!"; exec "/bin/cat", "${path}"'`,
        userNsRemount: "unshare -Urm sh -c 'mount -o remount,rw /usr && touch /usr/escaped'",
        userNsBindHost: `unshare -Urm sh -c 'mount --bind / /mnt && cat /mnt${path}'`,
        nsenterInit: `nsenter -t 1 -m cat ${path}`
      }
      const results: Record<string, { status: number; leaked: boolean }> = {}
      for (const [name, script] of Object.entries(attempts)) {
        const result = yield* sh(client, script)
        results[name] = { status: result.status, leaked: (result.out + result.err).includes(secret) }
      }
      yield* report({ suite: "confinement", name: "escapes", results })
      for (const [name, result] of Object.entries(results)) {
        assert.isFalse(result.leaked, `${name} leaked the host secret`)
        if (name !== "unshareNet") assert.notStrictEqual(result.status, 0, name)
      }
      assert.notStrictEqual(results.unshareNet!.status, 0)
      assert.isFalse(fs.existsSync("/usr/escaped"))
    }))

  it.scopedLive("host processes are not visible, and cannot be signalled or ptraced", () =>
    Effect.gen(function*() {
      const client = yield* makeClient
      const sleeper = yield* hostSleeper
      const ps = yield* sh(client, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done")
      const count = yield* sh(client, "ls -d /proc/[0-9]* | wc -l")
      const hostPid = String(globalThis.process.pid)
      const attempts = {
        kill: `kill -9 ${sleeper.pid}`,
        killTest: `kill -0 ${hostPid}`,
        strace: `strace -p ${sleeper.pid} -e trace=none`,
        // PTRACE_ATTACH (16) through the raw syscall (101 on x86_64)
        ptrace: `perl -e 'my $r = syscall(101, 16, ${sleeper.pid}, 0, 0); print "$r $!\\n"; exit($r == 0 ? 0 : 1)'`,
        procMem: `cat /proc/${sleeper.pid}/mem`
      }
      const results: Record<string, number> = {}
      for (const [name, script] of Object.entries(attempts)) results[name] = (yield* sh(client, script)).status
      // last, as it ends this sandbox (see the report): kill everything the sandbox can signal
      results.killAll = (yield* sh(client, "kill -9 -1; echo $?")).status
      const alive = yield* processAlive(sleeper.pid)
      const testAlive = yield* processAlive(globalThis.process.pid)
      yield* report({
        suite: "confinement",
        name: "processes",
        visibleInside: Number(count.out.trim()),
        hostMarkerVisible: ps.out.includes(sleeper.marker),
        results,
        hostSleeperAlive: alive
      })
      assert.notInclude(ps.out, sleeper.marker)
      assert.notInclude(ps.out, "vitest")
      assert.isBelow(Number(count.out.trim()), 20)
      for (const name of ["kill", "killTest", "strace", "ptrace", "procMem"] as const) {
        assert.notStrictEqual(results[name], 0, name)
      }
      assert.isTrue(alive)
      assert.isTrue(testAlive)
    }))

  it.scopedLive("a host TCP port on 127.0.0.1 (or the host's other addresses) cannot be reached", () =>
    Effect.gen(function*() {
      const client = yield* makeClient
      let accepted = 0
      const server = net.createServer((socket) => {
        accepted += 1
        socket.destroy()
      })
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => {
          server.listen(0, "0.0.0.0", () => resume(Effect.void))
        }),
        () => Effect.sync(() => server.close())
      )
      const port = (server.address() as net.AddressInfo).port
      const addresses = [
        "127.0.0.1",
        ...Object.values(os.networkInterfaces()).flat().filter((i) =>
          i !== undefined && i.family === "IPv4" && !i.internal
        ).map((i) => i!.address)
      ]
      const results: Record<string, { status: number; out: string }> = {}
      for (const address of addresses) {
        const node = yield* sh(
          client,
          `node -e "require('net').connect(${port}, '${address}')` +
            `.on('connect', () => { console.log('CONNECTED'); process.exit(0) })` +
            `.on('error', (e) => { console.log(e.code); process.exit(1) })"`
        )
        results[`node ${address}`] = { status: node.status, out: node.out.trim() }
        const bash = yield* sh(client, `bash -c 'echo hi > /dev/tcp/${address}/${port}'`)
        results[`bash ${address}`] = { status: bash.status, out: bash.err.trim().split("\n").pop() ?? "" }
      }
      // the sandbox's own loopback works (it is not simply broken)
      const own = yield* sh(
        client,
        `node -e "const s = require('net').createServer(c => c.end('pong')).listen(0, '127.0.0.1', () => ` +
          `require('net').connect(s.address().port, '127.0.0.1').on('data', d => { console.log(String(d)); process.exit(0) }))"`
      )
      yield* report({ suite: "confinement", name: "network", port, results, ownLoopback: own.out.trim(), accepted })
      for (const [name, result] of Object.entries(results)) {
        assert.notStrictEqual(result.status, 0, name)
        assert.notInclude(result.out, "CONNECTED", name)
      }
      assert.strictEqual(own.out.trim(), "pong")
      assert.strictEqual(accepted, 0)
    }))
})
