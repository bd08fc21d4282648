import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as Path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import type * as SshServer from "../src/SshServer.js"
import { listenForOpenSsh, makeOpenSshSetup, type OpenSshSetup, run, type Ssh } from "./support/openssh.js"
import { freePort, readFromPort } from "./support/ports.js"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

interface Endpoint {
  readonly setup: OpenSshSetup
  readonly server: SshServer.SshServer
  readonly listener: SshServer.Listener
  readonly ssh: Ssh
}

const makeEndpoint = (
  isolation: "bubblewrap" | "none",
  options: SshServer.ServerOptions = {}
): Effect.Effect<Endpoint, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const setup = yield* makeOpenSshSetup
    const sandbox = yield* LocalSandbox.make({ isolation })
    const { listener, server, ssh } = yield* listenForOpenSsh(setup, sandbox, options)
    return { setup, server, listener, ssh }
  })

describe("SshServer over TCP with OpenSSH's ssh (bubblewrap)", () => {
  it.scopedLive("runs commands with their exit codes and separate stderr", () =>
    Effect.gen(function*() {
      const { ssh } = yield* makeEndpoint("bubblewrap")
      for (const code of [0, 1, 42]) {
        const result = yield* ssh([`echo out; echo err >&2; exit ${code}`])
        assert.strictEqual(result.code, code)
        assert.strictEqual(result.stdout.toString(), "out\n")
        assert.strictEqual(result.stderr, "err\n")
      }
      const hostname = yield* ssh(["hostname"])
      assert.strictEqual(hostname.stdout.toString(), "sandbox\n")
    }))

  it.scopedLive("carries 50 MiB through stdin intact", () =>
    Effect.gen(function*() {
      const { ssh } = yield* makeEndpoint("bubblewrap")
      const data = new Uint8Array(50 * 1024 * 1024).map((_, i) => (i * 2654435761) >>> 24)
      const result = yield* ssh(["sha256sum"], data)
      assert.strictEqual(result.code, 0)
      assert.strictEqual(result.stdout.toString().split(" ")[0], sha256(data))
    }))

  it.scopedLive("gives ssh -tt a terminal of the requested size", () =>
    Effect.gen(function*() {
      const { ssh } = yield* makeEndpoint("bubblewrap")
      const result = yield* ssh(["-tt", "tty; stty size; exit 3"])
      assert.strictEqual(result.code, 3)
      const lines = result.stdout.toString().split(/\r?\n/)
      assert.match(lines[0]!, /^\/dev\/pts\/\d+$/)
      assert.match(lines[1]!, /^\d+ \d+$/)
    }))

  it.scopedLive("passes SetEnv variables and reports a signal death", () =>
    Effect.gen(function*() {
      const { ssh } = yield* makeEndpoint("bubblewrap")
      const env = yield* ssh(["-o", "SetEnv=GREETING=hello", "echo $GREETING"])
      assert.strictEqual(env.stdout.toString(), "hello\n")
      const killed = yield* ssh(["kill -TERM $$"])
      assert.strictEqual(killed.code, 255)
    }))

  it.scopedLive("forwards -L to a server that an earlier exec started inside the sandbox", () =>
    Effect.gen(function*() {
      const { ssh } = yield* makeEndpoint("bubblewrap")
      // The sandbox has its own loopback: the port is free inside whatever the host uses.
      const server = "require('net').createServer((s) => s.end('hello from the sandbox\\n')).listen(7777, '127.0.0.1')"
      const started = yield* ssh([`nohup /usr/bin/node -e "${server}" >/dev/null 2>&1 &`])
      assert.strictEqual(started.code, 0)
      const localPort = yield* freePort
      yield* Effect.forkScoped(ssh(["-N", "-o", "ExitOnForwardFailure=yes", "-L", `${localPort}:127.0.0.1:7777`]))
      const received = yield* readFromPort(localPort)
      assert.strictEqual(received, "hello from the sandbox\n")
    }))

  it.scopedLive("refuses a key that is not authorized", () =>
    Effect.gen(function*() {
      const { setup, listener } = yield* makeEndpoint("bubblewrap")
      const other = Path.join(setup.dir, "other_key")
      yield* run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other])
      const options = setup.sshOptions.map((option) => option === setup.identity ? other : option)
      const result = yield* run("ssh", [...options, "-p", String(listener.port), "root@127.0.0.1", "true"])
      assert.strictEqual(result.code, 255)
      assert.include(result.stderr, "Permission denied")
    }))
})

describe("SshServer.serveConnection", () => {
  it.scopedLive("serves one connection over stdin/stdout, as OpenSSH's ProxyCommand", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const root = fs.mkdtempSync(Path.join(setup.dir, "root-"))
      // the host key the proxied server will load, created (and trusted) here first
      const keys = yield* SandboxSsh.make(yield* LocalSandbox.make({ root, isolation: "none" })).prepareServer({
        hostKeyPath: Path.join(setup.home, "host_key"),
        authorizedKeysPath: Path.join(setup.home, "authorized_keys")
      })
      setup.trustHost("proxied", keys.hostKey.publicKey)
      const script = Path.join(import.meta.dirname, "support", "serve-connection.ts")
      const proxy = `${process.execPath} --import tsx ${script} ${setup.home} ${root}`
      const out = yield* run("ssh", [
        ...setup.sshOptions,
        "-o",
        `ProxyCommand=${proxy}`,
        "root@proxied",
        "echo in $(pwd); echo oops >&2; exit 3"
      ])
      assert.strictEqual(out.stdout.toString(), `in ${fs.realpathSync(root)}\n`)
      assert.strictEqual(out.stderr.toString(), "oops\n")
      assert.strictEqual(out.code, 3)
    }))
})

describe("SshServer keys and options", () => {
  it.scopedLive("keeps the host key stable across servers and refuses loose permissions", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const ssh = SandboxSsh.make(sandbox)
      const hostKeyPath = Path.join(setup.home, "keys", "host")
      const options = { hostKeyPath, authorizedKeysPath: Path.join(setup.home, "authorized_keys") }
      const first = yield* ssh.prepareServer(options)
      const second = yield* ssh.prepareServer(options)
      assert.strictEqual(first.hostKey.fingerprint, second.hostKey.fingerprint)
      assert.strictEqual(fs.statSync(hostKeyPath).mode & 0o777, 0o600)
      assert.strictEqual(fs.statSync(Path.dirname(hostKeyPath)).mode & 0o777, 0o700)
      const before = fs.readFileSync(hostKeyPath, "utf8")
      fs.chmodSync(hostKeyPath, 0o644)
      const loose = yield* Effect.flip(ssh.prepareServer(options))
      assert.strictEqual(loose._tag, "KeyError")
      assert.include(loose.message, "chmod 600")
      assert.strictEqual(fs.readFileSync(hostKeyPath, "utf8"), before)
    }))

  it.scopedLive("creates one host key when two servers start at once", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const ssh = SandboxSsh.make(sandbox)
      const options = {
        hostKeyPath: Path.join(setup.home, "race", "host"),
        authorizedKeysPath: Path.join(setup.home, "authorized_keys")
      }
      const servers = yield* Effect.all(Array.from({ length: 8 }, () => ssh.prepareServer(options)), {
        concurrency: "unbounded"
      })
      const fingerprints = new Set(servers.map((server) => server.hostKey.fingerprint))
      assert.strictEqual(fingerprints.size, 1)
      assert.deepStrictEqual(fs.readdirSync(Path.join(setup.home, "race")), ["host"])
    }))

  it.scopedLive("reports bad authorized_keys lines and loads the rest; a missing file names the fix", () =>
    Effect.gen(function*() {
      const setup = yield* makeOpenSshSetup
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const ssh = SandboxSsh.make(sandbox)
      const authorizedKeysPath = Path.join(setup.home, "authorized_keys")
      fs.writeFileSync(
        authorizedKeysPath,
        `# comment\n\nssh-ed25519 not-base64!\nno-pty,from="127.0.0.1" ${setup.publicKey}\n`
      )
      const server = yield* ssh.prepareServer({ hostKeyPath: Path.join(setup.home, "h"), authorizedKeysPath })
      assert.strictEqual(server.authorizedKeys.keys.length, 1)
      assert.deepStrictEqual(server.authorizedKeys.problems.map((p) => p.line), [3])
      assert.deepStrictEqual(server.authorizedKeys.keys[0]!.options.map((o) => o.name), ["no-pty", "from"])
      const missing = yield* Effect.flip(
        ssh.prepareServer({ hostKeyPath: Path.join(setup.home, "h"), authorizedKeysPath: "/nonexistent/keys" })
      )
      assert.strictEqual(missing._tag, "KeyError")
      assert.include(missing.message, "/nonexistent/keys")
      assert.include(missing.message, "sandbox-ssh authorize")
      fs.chmodSync(authorizedKeysPath, 0o666)
      const writable = yield* Effect.flip(
        ssh.prepareServer({ hostKeyPath: Path.join(setup.home, "h"), authorizedKeysPath })
      )
      assert.strictEqual(writable._tag, "KeyError")
      assert.strictEqual((writable as { reason: string }).reason, "BadPermissions")
      assert.include(writable.message, "chmod go-w")
    }))

  it.scopedLive("enforces authorized_keys restrictions: command=, no-pty, from=, environment=", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint("none")
      const authorizedKeysPath = Path.join(endpoint.setup.home, "authorized_keys")
      fs.writeFileSync(
        authorizedKeysPath,
        `command="echo forced:$SSH_ORIGINAL_COMMAND:$MODE",no-pty,environment="MODE=ro" ${endpoint.setup.publicKey}\n`
      )
      const forced = yield* endpoint.ssh(["echo asked"])
      assert.strictEqual(forced.stdout.toString(), "forced:echo asked:ro\n")
      // OpenSSH treats a refused PTY as fatal when one was explicitly requested.
      const tty = yield* endpoint.ssh(["-tt", "echo asked"])
      assert.strictEqual(tty.code, 255)
      assert.include(tty.stderr, "PTY allocation request failed")
      fs.writeFileSync(authorizedKeysPath, `from="10.9.8.7" ${endpoint.setup.publicKey}\n`)
      const refused = yield* endpoint.ssh(["true"])
      assert.strictEqual(refused.code, 255)
      fs.writeFileSync(authorizedKeysPath, `from="127.0.0.0/8,!10.0.0.1" ${endpoint.setup.publicKey}\n`)
      const allowed = yield* endpoint.ssh(["echo ok"])
      assert.strictEqual(allowed.stdout.toString(), "ok\n")
      fs.writeFileSync(authorizedKeysPath, `unknown-option ${endpoint.setup.publicKey}\n`)
      const unknown = yield* endpoint.ssh(["true"])
      assert.strictEqual(unknown.code, 255)
    }))

  it.scopedLive("forwards -L to a server listening inside the sandbox's network", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint("none")
      const target = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer((socket) => socket.end("hello from inside\n"))
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => server.close())
      )
      const targetPort = (target.address() as net.AddressInfo).port
      const localPort = yield* freePort
      yield* Effect.forkScoped(
        endpoint.ssh(["-N", "-o", "ExitOnForwardFailure=yes", "-L", `${localPort}:127.0.0.1:${targetPort}`])
      )
      const received = yield* readFromPort(localPort)
      assert.strictEqual(received, "hello from inside\n")
    }))

  it.scopedLive("forwards -D (SOCKS5) connections through the sandbox, and refuses a closed port", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint("none")
      const target = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer((socket) => socket.pipe(socket))
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => server.close())
      )
      const targetPort = (target.address() as net.AddressInfo).port
      const socksPort = yield* freePort
      yield* Effect.forkScoped(endpoint.ssh(["-N", "-o", "ExitOnForwardFailure=yes", "-D", `127.0.0.1:${socksPort}`]))
      const echoed = yield* socks5(socksPort, targetPort, "ping through socks")
      assert.deepStrictEqual(echoed, { status: 0, data: "ping through socks" })
      const closedPort = yield* freePort
      const refused = yield* socks5(socksPort, closedPort, "x")
      assert.notStrictEqual(refused.status, 0)
    }))

  it.scopedLive("closes an idle connection after the inactivity timeout", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint("none", { inactivityTimeout: "1 second" })
      const started = Date.now()
      const result = yield* endpoint.ssh(["-N"])
      assert.strictEqual(result.code, 255)
      assert.isBelow(Date.now() - started, 30_000)
      const busy = yield* endpoint.ssh(["sleep 0.3; echo still-here"])
      assert.strictEqual(busy.stdout.toString(), "still-here\n")
    }))

  it.scopedLive("invalid options fail before anything starts", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const ssh = SandboxSsh.make(sandbox)
      const result = yield* Effect.either(ssh.prepareServer({ inactivityTimeout: -5 }))
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.strictEqual(result.left._tag, "InvalidOptionError")
    }))
})

/** A minimal SOCKS5 client: CONNECT to 127.0.0.1:port through the proxy, send `message`, read the echo. */
const socks5 = (proxyPort: number, port: number, message: string): Effect.Effect<{ status: number; data: string }> =>
  Effect.async<{ status: number; data: string }, Error>((resume) => {
    const socket = net.connect(proxyPort, "127.0.0.1")
    let stage = 0
    let buffer = Buffer.alloc(0)
    let data = ""
    socket.on("connect", () => socket.write(Buffer.from([5, 1, 0])))
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      if (stage === 0 && buffer.length >= 2) {
        buffer = buffer.subarray(2)
        stage = 1
        const request = Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 255])
        socket.write(request)
      }
      if (stage === 1 && buffer.length >= 10) {
        const status = buffer[1]!
        buffer = buffer.subarray(10)
        stage = 2
        if (status !== 0) {
          socket.destroy()
          return resume(Effect.succeed({ status, data: "" }))
        }
        socket.write(message)
      }
      if (stage === 2) {
        data += buffer.toString()
        buffer = Buffer.alloc(0)
        if (data.length >= message.length) {
          socket.destroy()
          resume(Effect.succeed({ status: 0, data }))
        }
      }
    })
    socket.on("close", () => resume(Effect.succeed({ status: stage < 2 ? 255 : 0, data })))
    socket.on("error", (error) => resume(Effect.fail(error)))
  }).pipe(
    Effect.retry(Schedule.intersect(Schedule.spaced("100 millis"), Schedule.recurs(100))),
    Effect.orDie
  )
