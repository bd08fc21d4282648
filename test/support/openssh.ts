/**
 * Real OpenSSH clients against our endpoints: keys, known_hosts and a config in a temp directory.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"
import type * as Sandbox from "../../src/Sandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import type * as SshServer from "../../src/SshServer.js"
import { allProcesses } from "./processes.js"

export interface RunResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: Buffer
  readonly stderr: string
}

/** Runs a command without blocking the event loop (our server lives in this process). */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: {
    readonly input?: string | Uint8Array
    readonly env?: Record<string, string>
    readonly timeoutMs?: number
  } = {}
): Effect.Effect<RunResult> =>
  Effect.async<RunResult>((resume) => {
    const child = spawn(command, args, { env: { ...process.env, ...options.env }, stdio: ["pipe", "pipe", "pipe"] })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (c: Buffer) => out.push(c))
    child.stderr.on("data", (c: Buffer) => err.push(c))
    child.stdin.on("error", () => {})
    if (options.input !== undefined) child.stdin.end(options.input)
    else child.stdin.end()
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

export interface OpenSshSetup {
  readonly dir: string
  /** `SANDBOX_SSH_HOME` for the server: holds authorized_keys with the client key. */
  readonly home: string
  readonly identity: string
  readonly publicKey: string
  readonly knownHosts: string
  /** Writes known_hosts for `host` with the server's public host key. */
  readonly trustHost: (host: string, hostPublicKey: string) => void
  /** Common `ssh` options; add `-p`, `-o ProxyCommand=...` etc. */
  readonly sshOptions: ReadonlyArray<string>
}

/** A temp directory with a client key pair and an authorized_keys file that allows it. */
export const makeOpenSshSetup: Effect.Effect<OpenSshSetup, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(async () => {
    const dir = fs.mkdtempSync(Path.join(os.tmpdir(), "sandbox-ssh-test-"))
    const home = Path.join(dir, "home")
    fs.mkdirSync(home, { mode: 0o700 })
    const identity = Path.join(dir, "id_ed25519")
    await Effect.runPromise(run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test@client", "-f", identity]))
    const publicKey = fs.readFileSync(`${identity}.pub`, "utf8").trim()
    fs.writeFileSync(Path.join(home, "authorized_keys"), `${publicKey}\n`, { mode: 0o600 })
    const knownHosts = Path.join(dir, "known_hosts")
    fs.writeFileSync(knownHosts, "")
    const setup: OpenSshSetup = {
      dir,
      home,
      identity,
      publicKey,
      knownHosts,
      trustHost: (host, hostPublicKey) => fs.writeFileSync(knownHosts, `${host} ${hostPublicKey}\n`),
      sshOptions: [
        "-F",
        "/dev/null",
        "-i",
        identity,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        `UserKnownHostsFile=${knownHosts}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR"
      ]
    }
    return setup
  }),
  (setup) => Effect.sync(() => fs.rmSync(setup.dir, { recursive: true, force: true }))
)

/** Runs OpenSSH's `ssh` against an endpoint with `args` (options, then the command), `input` on stdin. */
export type Ssh = (args: ReadonlyArray<string>, input?: string | Uint8Array) => Effect.Effect<RunResult>

/**
 * Serves `sandbox` on a TCP port of 127.0.0.1 with the host key and authorized_keys of `setup`,
 * trusted by its known_hosts; `ssh` runs the setup's client against it as root.
 */
export const listenForOpenSsh = (
  setup: OpenSshSetup,
  sandbox: Sandbox.Sandbox,
  options: SshServer.ServerOptions = {}
) =>
  Effect.gen(function*() {
    const server = yield* SandboxSsh.make(sandbox).prepareServer({
      hostKeyPath: Path.join(setup.home, "host_key"),
      authorizedKeysPath: Path.join(setup.home, "authorized_keys"),
      ...options
    })
    const listener = yield* server.listen({ port: 0 })
    setup.trustHost(`[127.0.0.1]:${listener.port}`, server.hostKey.publicKey)
    const ssh: Ssh = (args, input) =>
      run(
        "ssh",
        [...setup.sshOptions, "-p", String(listener.port), "root@127.0.0.1", ...args],
        input === undefined ? {} : { input }
      )
    return { server, listener, ssh }
  })

/**
 * The server daemons (`serve --socket`, started by `serve --stdio`) whose socket is in
 * `<home>/run`, by pid.
 */
export const daemonsOf = (home: string): Array<number> =>
  allProcesses().filter((p) => p.args.includes(` serve --socket ${Path.join(home, "run")}/`)).map((p) => p.pid)

/**
 * Stops the daemons of `home` as a person would (SIGTERM: each closes its sandbox, whose processes
 * end, and removes its socket), SIGKILL after 10 s, and waits until they are gone. For finalizers:
 * a daemon outlives its last connection for `--linger`.
 */
export const stopDaemons = (home: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const signal = (pids: ReadonlyArray<number>, name: NodeJS.Signals) => {
      for (const pid of pids) {
        try {
          process.kill(pid, name)
        } catch {
          // gone already
        }
      }
    }
    signal(daemonsOf(home), "SIGTERM")
    for (let waited = 0; daemonsOf(home).length > 0; waited += 20) {
      if (waited === 10_000) signal(daemonsOf(home), "SIGKILL")
      if (waited > 15_000) break
      yield* Effect.sleep("20 millis")
    }
  })
