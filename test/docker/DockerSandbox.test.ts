import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { execFileSync, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as DockerSandbox from "../../src/DockerSandbox.js"
import type * as Sandbox from "../../src/Sandbox.js"
import { eventually, processesWith, sh } from "../local/support.js"
import { processConformance } from "../support/processConformance.js"
import { terminal } from "../support/terminal.js"
import { docker, engineSocket, image, makeSandbox, socketPath } from "./support.js"

describe("DockerSandbox processes", () => {
  processConformance(() => makeSandbox())

  it.scopedLive("reports what it is and runs in the container's working directory", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox({ workdir: "/tmp" })
      assert.strictEqual(sandbox.info.transport, "docker")
      assert.strictEqual(sandbox.info.isolated, true)
      assert.strictEqual(sandbox.info.isolation, "docker")
      assert.strictEqual(sandbox.info.shell, "/bin/sh")
      assert.strictEqual(sandbox.info.workdir, "/tmp")
      const pwd = yield* sh(sandbox, "pwd; hostname")
      assert.strictEqual(pwd.stdout.toString().split("\n")[0], "/tmp")
      const cwd = yield* sh(sandbox, "pwd", { cwd: "/etc" })
      assert.strictEqual(cwd.stdout.toString(), "/etc\n")
    }))

  it.scopedLive("signals the command's process group; a signal we sent is reported as Signaled (128 + n)", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      for (const [signal, code] of [["TERM", 143], ["KILL", 137], ["INT", 130]] as const) {
        const process = yield* sandbox.spawn({ command: "/bin/sh", args: ["-c", "sleep 30; sleep 30"] })
        yield* Stream.run(Stream.empty, process.stdin)
        yield* process.signal(signal)
        const exit = yield* process.exit
        assert.deepStrictEqual(exit, { _tag: "Signaled", signal, code, coreDumped: false } as const)
      }
      // a signal from inside is what the Engine reports: 128 + n
      const self = yield* sh(sandbox, "kill -TERM $$")
      assert.strictEqual(self.exit.code, 143)
      const process = yield* sandbox.spawn({ command: "sleep", args: ["30"] })
      const error = yield* Effect.flip(process.signal("NOPE"))
      assert.strictEqual(error.reason, "InvalidArgument")
      const resize = yield* Effect.flip(process.resize({ cols: 80, rows: 24 }))
      assert.strictEqual(resize.reason, "Unsupported")
    }))

  it.scopedLive("passes environment: sandbox options, then the process's own", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox({ env: { A: "sandbox", B: "sandbox" } })
      const output = yield* sh(sandbox, "echo $A $B $PATH", { env: { B: "process" } })
      const [a, b, path] = output.stdout.toString().trim().split(" ")
      assert.strictEqual(a, "sandbox")
      assert.strictEqual(b, "process")
      assert.include(path, "/bin")
    }))

  it.scopedLive("runs as the requested user", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const root = yield* sh(sandbox, "id -u")
      assert.strictEqual(root.stdout.toString(), "0\n")
      const user = yield* sh(sandbox, "id -un; echo $HOME", { user: "user" })
      assert.strictEqual(user.stdout.toString(), "user\n/home/user\n")
    }))

  it.scopedLive("a terminal reports TERM, death by a signal we sent, and an interactive shell's exit code", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const term = yield* sh(sandbox, "echo $TERM", { pty: { term: "vt100", cols: 80, rows: 24 } })
      assert.strictEqual(term.stdout.toString(), "vt100\r\n")
      const process = yield* sandbox.spawn({
        command: "/bin/sh",
        args: ["-c", "sleep 30"],
        pty: { term: "xterm", cols: 80, rows: 24 }
      })
      yield* process.signal("HUP")
      assert.deepStrictEqual(yield* process.exit, { _tag: "Signaled", signal: "HUP", code: 129, coreDumped: false })
      // BusyBox ash asks the terminal for the cursor position at each prompt: type after the prompt
      const shell = yield* sandbox.spawn({
        command: "/bin/sh",
        args: ["-i"],
        pty: { term: "xterm", cols: 80, rows: 24 }
      })
      const tty = yield* terminal(shell)
      yield* tty.readUntil((seen) => seen.includes("# "))
      yield* tty.type("\x1b[1;1Recho hello-$((6*7))\n")
      yield* tty.readUntil((seen) => seen.includes("hello-42\r\n"))
      yield* tty.type("exit 5\n")
      assert.deepStrictEqual(yield* shell.exit, { _tag: "Exited", code: 5 } as Sandbox.ProcessExit)
      yield* tty.drain
      const bad = yield* Effect.flip(sh(sandbox, "true", { pty: { term: "xterm", cols: 0, rows: 24 } }))
      assert.strictEqual(bad.reason, "InvalidArgument")
    }))

  it.scopedLive("closing the scope of a running process kills it; so does interrupting a wait", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      const marker = `marker-${randomUUID()}`
      const scope = yield* Scope.make()
      const process = yield* Scope.extend(
        sandbox.spawn({ command: "/bin/sh", args: ["-c", `sleep 100; : ${marker}`] }),
        scope
      )
      const waiting = yield* Effect.fork(process.exit)
      const running = yield* eventually(() => processesWith(marker), (pids) => pids.length > 0)
      assert.isAbove(running.length, 0)
      yield* Scope.close(scope, Exit.void)
      yield* Fiber.join(waiting)
      assert.deepStrictEqual(yield* eventually(() => processesWith(marker), (pids) => pids.length === 0), [])

      const other = `marker-${randomUUID()}`
      const result = yield* Effect.scoped(
        Effect.gen(function*() {
          const process = yield* sandbox.spawn({ command: "/bin/sh", args: ["-c", `sleep 100; : ${other}`] })
          yield* eventually(() => processesWith(other), (pids) => pids.length > 0)
          return yield* process.exit
        })
      ).pipe(Effect.timeoutOption("300 millis"))
      assert.strictEqual(result._tag, "None")
      assert.deepStrictEqual(yield* eventually(() => processesWith(other), (pids) => pids.length === 0), [])
    }))

  it.scopedLive("shares one environment: a background server started by one exec serves the next", () =>
    Effect.gen(function*() {
      const sandbox = yield* makeSandbox()
      yield* sh(sandbox, "echo shared > /tmp/state; (sleep 100 >/dev/null 2>&1 &) ; true")
      const output = yield* sh(sandbox, "cat /tmp/state; ps -o args | grep -q '^[s]leep 100' && echo running")
      assert.strictEqual(output.stdout.toString(), "shared\nrunning\n")
    }))
})

describe("DockerSandbox lifecycle", () => {
  it.scopedLive("create removes the container when the scope closes; a closed sandbox refuses to spawn", () =>
    Effect.gen(function*() {
      const name = `sandbox-ssh-test-${randomUUID().slice(0, 8)}`
      const scope = yield* Scope.make()
      const sandbox = yield* Scope.extend(makeSandbox({ name }), scope)
      assert.include(docker(["ps", "--format", "{{.Names}}"]), name)
      yield* Scope.close(scope, Exit.void)
      assert.notInclude(docker(["ps", "-a", "--format", "{{.Names}}"]), name)
      const error = yield* Effect.flip(sh(sandbox, "true"))
      assert.strictEqual(error.reason, "Closed")
    }))

  it.scopedLive("attaching leaves the container running and ends the processes it started", () =>
    Effect.gen(function*() {
      const name = `sandbox-ssh-test-${randomUUID().slice(0, 8)}`
      docker(["run", "-d", "--network", "none", "--name", name, image, "sleep", "100000"])
      yield* Effect.addFinalizer(() => Effect.sync(() => docker(["rm", "-f", name])))
      const marker = `marker-${randomUUID()}`
      yield* Effect.scoped(
        Effect.gen(function*() {
          const sandbox = yield* DockerSandbox.make({ container: name, socketPath: socketPath() })
          const output = yield* sh(sandbox, `/bin/sh -c 'sleep 1000; : ${marker}' >/dev/null 2>&1 & echo started`)
          assert.strictEqual(output.stdout.toString(), "started\n")
          assert.isAbove(processesWith(marker).length, 0)
        })
      )
      assert.deepStrictEqual(yield* eventually(() => processesWith(marker), (pids) => pids.length === 0), [])
      assert.include(docker(["ps", "--format", "{{.Names}}"]), name)
    }))

  it.scopedLive("a created container goes away when the process holding it is killed", () =>
    Effect.gen(function*() {
      const name = `sandbox-ssh-test-${randomUUID().slice(0, 8)}`
      const program = `
        import * as Effect from "effect/Effect"
        import * as DockerSandbox from "./src/DockerSandbox.js"
        await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
          yield* DockerSandbox.create({ image: ${JSON.stringify(image)}, name: ${JSON.stringify(name)},
            socketPath: ${JSON.stringify(socketPath())}, network: "none" })
          console.log("ready")
          yield* Effect.never
        })))`
      const child = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", program], {
            cwd: process.cwd(),
            stdio: ["ignore", "pipe", "inherit"],
            detached: true
          })
          await new Promise<void>((resolve, reject) => {
            child.stdout!.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && resolve())
            child.once("exit", (code) => reject(new Error(`holder exited with ${code}`)))
          })
          return child
        }),
        (child) => Effect.sync(() => child.kill("SIGKILL"))
      )
      assert.include(docker(["ps", "--format", "{{.Names}}"]), name)
      // SIGKILL: no finalizer runs
      process.kill(-child.pid!, "SIGKILL")
      const gone = yield* eventually(
        () => docker(["ps", "-a", "--format", "{{.Names}}"]).includes(name),
        (present) => !present,
        15_000
      )
      assert.isFalse(gone, "the container was removed")
    }), 60_000)
})

describe("DockerSandbox errors", () => {
  it.scopedLive("an unreachable daemon, a missing container and a stopped one are typed errors", () =>
    Effect.gen(function*() {
      const unreachable = yield* Effect.flip(
        DockerSandbox.make({ container: "x", socketPath: "/tmp/no-such-docker.sock" })
      )
      assert.strictEqual(unreachable._tag, "SandboxError")
      if (unreachable._tag === "SandboxError") {
        assert.strictEqual(unreachable.reason, "TransportFailed")
        assert.include(unreachable.message, "Docker daemon is unreachable")
        assert.include(unreachable.message, "/tmp/no-such-docker.sock")
      }
      const socketPath = yield* engineSocket
      const missing = yield* Effect.flip(DockerSandbox.make({ container: "no-such-container-here", socketPath }))
      assert.strictEqual(missing._tag === "SandboxError" && missing.reason, "NotFound")
      assert.include(missing.message, "no-such-container-here")

      const name = `sandbox-ssh-test-${randomUUID().slice(0, 8)}`
      docker(["create", "--network", "none", "--name", name, image, "sleep", "100000"])
      yield* Effect.addFinalizer(() => Effect.sync(() => docker(["rm", "-f", name])))
      const stopped = yield* Effect.flip(DockerSandbox.make({ container: name, socketPath }))
      assert.strictEqual(stopped._tag === "SandboxError" && stopped.reason, "Closed")
      assert.include(stopped.message, "not running")

      // stopped after attaching
      docker(["start", name])
      const sandbox = yield* DockerSandbox.make({ container: name, socketPath })
      docker(["kill", name])
      const afterStop = yield* Effect.flip(sh(sandbox, "true"))
      assert.strictEqual(afterStop.reason, "Closed")

      const noImage = yield* Effect.flip(DockerSandbox.create({ image: "no-such-image:here", socketPath }))
      assert.strictEqual(noImage._tag === "SandboxError" && noImage.reason, "NotFound")
      const badOption = yield* Effect.flip(DockerSandbox.make({ container: "", socketPath }))
      assert.strictEqual(badOption._tag, "InvalidOptionError")
    }))

  it.scopedLive("permission denied on the socket names the socket and the fix", () =>
    Effect.gen(function*() {
      // root passes any permission check: ask as an unprivileged user
      const socketPath = yield* engineSocket
      const program = `
        import * as Effect from "effect/Effect"
        import * as DockerSandbox from "./src/DockerSandbox.js"
        const error = await Effect.runPromise(Effect.flip(Effect.scoped(
          DockerSandbox.make({ container: "x", socketPath: ${JSON.stringify(socketPath)} }))))
        console.log(JSON.stringify({ reason: error.reason, message: error.message }))`
      const out = execFileSync(
        "setpriv",
        [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          process.execPath,
          "--import",
          "tsx",
          "--input-type=module",
          "-e",
          program
        ],
        { cwd: process.cwd(), encoding: "utf8", env: { ...process.env, HOME: "/tmp", TSX_TSCONFIG_PATH: "" } }
      )
      const result = JSON.parse(out.trim().split("\n").pop()!) as { reason: string; message: string }
      assert.strictEqual(result.reason, "PermissionDenied")
      assert.include(result.message, socketPath)
      assert.include(result.message, "docker")
    }))
})
