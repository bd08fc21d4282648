import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { randomUUID } from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { internals } from "../../src/internal/local/sandbox.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import { eventually, hasBwrap, processesWith, sh, startHolder } from "./support.js"

const make = LocalSandbox.make({ isolation: "bubblewrap" })

const text = (output: { readonly stdout: Buffer }) => output.stdout.toString()

describe.skipIf(!hasBwrap)("LocalSandbox isolation (bubblewrap)", () => {
  it.scopedLive("is one persistent environment: processes, files and loopback are shared", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const marker = `marker-${randomUUID()}`
      yield* sh(sandbox, `/bin/sh -c 'sleep 1000; : ${marker}' >/dev/null 2>&1 &`)
      const ps = yield* sh(sandbox, `for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done`)
      assert.include(text(ps), marker)

      yield* sh(sandbox, "echo persisted > /root/file")
      assert.strictEqual(text(yield* sh(sandbox, "cat /root/file")), "persisted\n")
      assert.strictEqual(Fs.readFileSync(Path.join(sandbox.info.root!, "root/file"), "utf8"), "persisted\n")

      const server = "require('http').createServer((q, s) => s.end('pong')).listen(18080, '127.0.0.1', " +
        "() => console.log('listening'))"
      const started = yield* sh(
        sandbox,
        `/usr/bin/node -e "${server}" > /tmp/server.log 2>&1 & ` +
          "for i in $(seq 100); do grep -q listening /tmp/server.log && break; sleep 0.05; done; cat /tmp/server.log"
      )
      assert.strictEqual(text(started), "listening\n")
      const client =
        "require('http').get('http://127.0.0.1:18080', (r) => r.on('data', (d) => process.stdout.write(d)))"
      const response = yield* sh(sandbox, `/usr/bin/node -e "${client}"`)
      assert.strictEqual(text(response), "pong")
    }))

  it.scopedLive("shows only the sandbox: no host secrets, own hostname, no capabilities", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap", hostname: "box1" })
      const marker = `host-secret-${randomUUID()}`
      const hostFile = Path.join(Os.homedir(), `.${marker}`)
      Fs.writeFileSync(hostFile, marker)
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(hostFile, { force: true })))

      const output = yield* sh(
        sandbox,
        "cat /etc/shadow; ls -a /root /home /etc/ssh; cat /etc/passwd; hostname; grep -E 'Cap(Eff|Prm|Bnd)|NoNewPrivs' /proc/self/status; " +
          "grep -r -l host-secret / --exclude-dir=proc --exclude-dir=usr --exclude-dir=sys 2>/dev/null; true"
      )
      const out = text(output)
      assert.notInclude(out, marker)
      assert.notInclude(out, "$y$") // no password hash
      assert.include(output.stderr.toString(), "/etc/shadow: No such file or directory")
      assert.include(output.stderr.toString(), "/etc/ssh")
      assert.include(out, "box1\n")
      assert.match(out, /CapEff:\s+0000000000000000/)
      assert.match(out, /CapPrm:\s+0000000000000000/)
      assert.match(out, /CapBnd:\s+0000000000000000/)
      assert.match(out, /NoNewPrivs:\s+1/)
      assert.strictEqual(out.split("\n").filter((l) => l.includes(":x:")).length, 2)

      const tools = yield* sh(sandbox, "echo 'a b' | awk '{print $2}'; ls -l /etc/localtime >/dev/null && echo tz")
      assert.strictEqual(text(tools), "b\ntz\n")

      const remount = yield* sh(sandbox, "mount -o remount,rw /usr 2>&1; touch /usr/x 2>&1")
      assert.notStrictEqual(remount.exit.code, 0)
      assert.isFalse(Fs.existsSync("/usr/x"))
    }))

  it.scopedLive("starts processes as a user of the sandbox's /etc/passwd", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      yield* sh(sandbox, "echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd && mkdir -p /home/alice")
      const output = yield* sh(sandbox, "id -u; id -g; echo $HOME $USER $LOGNAME; pwd", { user: "alice", cwd: "/tmp" })
      assert.strictEqual(text(output), "1000\n1000\n/home/alice alice alice\n/tmp\n")
      const denied = yield* sh(sandbox, "cat /root/.profile 2>&1; ls /root", { user: "alice", cwd: "/tmp" })
      assert.notStrictEqual(denied.exit.code, 0)
      const pty = yield* sh(sandbox, "id -u; tty", {
        user: "alice",
        cwd: "/tmp",
        pty: { term: "xterm", cols: 80, rows: 24 }
      })
      assert.match(text(pty), /^1000\r\n\/dev\/pts\/\d+\r\n$/)
      const unknown = yield* Effect.flip(sh(sandbox, "true", { user: "mallory" }))
      assert.strictEqual(unknown.reason, "InvalidArgument")
      assert.include(unknown.message, "mallory")
      // a planted symlink never makes the host read its own files (here: the host's /etc/passwd)
      yield* sh(sandbox, "mv /etc/passwd /etc/passwd.real && ln -s /proc/1/root/etc/passwd.real /etc/passwd")
      const planted = yield* Effect.flip(sh(sandbox, "true"))
      assert.strictEqual(planted.reason, "InvalidArgument")
    }))

  it.scopedLive("a missing working directory fails like the shell's cd", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const output = yield* sh(sandbox, "pwd", { cwd: "/no/such/dir" })
      assert.notStrictEqual(output.exit.code, 0)
      assert.include(output.stderr.toString(), "/no/such/dir")
      // the host's directory of the same name is never used
      const host = yield* sh(sandbox, "pwd; ls", { cwd: "/work" })
      assert.notStrictEqual(host.exit.code, 0)
    }))

  it.scopedLive("file operations and connections are served inside the sandbox", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      // the sandbox's own curated /etc/passwd, not the host's
      const stat = yield* sandbox.fs.stat("/etc/passwd")
      assert.strictEqual(stat.size, Fs.statSync(Path.join(sandbox.info.root!, "etc/passwd")).size)
      // nothing listens on the sandbox's own loopback port 80
      const connect = yield* Effect.flip(sandbox.connect("127.0.0.1", 80))
      assert.strictEqual(connect.reason, "ConnectFailed")
      const inside = internals(sandbox)
      assert.strictEqual(inside?.isolation, "bubblewrap")
      assert.isTrue(Fs.existsSync(`/proc/${inside!.nsenterTarget}`))
    }))

  it.scopedLive("nothing of the sandbox remains after its scope closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const sandbox = yield* Scope.extend(make, scope)
      const marker = `marker-${randomUUID()}`
      yield* sh(
        sandbox,
        `/bin/sh -c 'sleep 1000; : ${marker}' >/dev/null 2>&1 & /bin/sh -c 'setsid sleep 999 ${marker}' >/dev/null 2>&1 &`
      )
      const { bwrap, nsenterTarget, root, runtimeDir } = internals(sandbox)!
      assert.isAbove(processesWith(marker).length, 0)
      yield* Scope.close(scope, Exit.void)
      assert.isFalse(Fs.existsSync(`/proc/${nsenterTarget}`) && !isZombie(nsenterTarget!))
      assert.isFalse(Fs.existsSync(`/proc/${bwrap!.pid}`) && !isZombie(bwrap!.pid!))
      const left = yield* eventually(() => processesWith(marker), (pids) => pids.length === 0)
      assert.deepStrictEqual(left, [])
      assert.deepStrictEqual(processesWith(root), [])
      assert.isFalse(Fs.existsSync(root))
      assert.isFalse(Fs.existsSync(runtimeDir))
    }))

  it.live("nothing of the sandbox survives a SIGKILL of the host process", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "local-sandbox-kill-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const marker = `marker-${randomUUID()}`
      const { holder, runtimeDir } = yield* startHolder(Path.join(import.meta.dirname, "holder.ts"), [root, marker])
      assert.isAbove(processesWith(marker).length, 0)
      assert.isAbove(processesWith(root).length, 0)
      assert.isTrue(Fs.existsSync(runtimeDir))
      holder.kill("SIGKILL")
      const left = yield* eventually(() => [...processesWith(marker), ...processesWith(root)], (pids) =>
        pids.length === 0)
      assert.deepStrictEqual(left, [])
      // the killed program cannot remove its runtime directory: the next sandbox started on this
      // host does (a test running alongside may be that sandbox, so it is checked only afterwards)
      yield* Effect.scoped(LocalSandbox.make({ isolation: "bubblewrap" }))
      assert.isFalse(Fs.existsSync(runtimeDir), `${runtimeDir} is left`)
    }).pipe(Effect.scoped))

  it.scopedLive("a sandbox killed from outside refuses to spawn", () =>
    Effect.gen(function*() {
      const sandbox = yield* make
      const { bwrap } = internals(sandbox)!
      bwrap!.kill("SIGKILL")
      yield* eventually(() => bwrap!.exitCode !== null || bwrap!.signalCode !== null, (done) => done)
      const error = yield* Effect.flip(sh(sandbox, "true"))
      assert.strictEqual(error.reason, "Closed")
    }))

  it.scopedLive("rejects a relative workdir", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(LocalSandbox.make({ isolation: "bubblewrap", workdir: "relative" }))
      assert.strictEqual(error._tag === "InvalidOptionError" && error.option, "workdir")
    }))

  it.scopedLive("reuses a given root: its files persist across sandboxes", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "local-sandbox-root-"))
      Fs.chmodSync(root, 0o755)
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      yield* Effect.scoped(Effect.flatMap(
        LocalSandbox.make({ isolation: "bubblewrap", root }),
        (sandbox) => sh(sandbox, "echo first > /root/note")
      ))
      const second = yield* Effect.scoped(Effect.flatMap(
        LocalSandbox.make({ isolation: "bubblewrap", root }),
        (sandbox) => sh(sandbox, "cat /root/note")
      ))
      assert.strictEqual(text(second), "first\n")
    }))
})

const isZombie = (pid: number) => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return true
  }
}
