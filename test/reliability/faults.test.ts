/**
 * Faults from outside: a sandboxed process killed from the host, clients vanishing mid-upload
 * (real OpenSSH `sftp` and an ssh2 client), the in-process transport destroyed under pending
 * effects, scopes interrupted mid-handshake, mid-exec and mid-transfer, and the host program
 * SIGKILLed with sessions running. Each ends promptly, typed, and leaves no process, handle or
 * file descriptor behind.
 *
 * SFTP upload semantics (documented here, as measured): the server writes into the target file
 * itself, as OpenSSH's sftp-server does (no temporary file and rename). A client that vanishes
 * mid-upload leaves a visible partial file under the final name: shorter than the source, every
 * byte in it either the source's byte or a zero-filled gap (pipelined writes land out of order),
 * never anything else. The client sees its upload fail; the server closes the file.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import { randomBytes, randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"
import type ssh2 from "ssh2"
import { makeClient } from "../../src/internal/client/client.js"
import { connect } from "../../src/internal/client/connect.js"
import { makeDuplexPair } from "../../src/internal/transport/duplexPair.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import * as SshKeys from "../../src/SshKeys.js"
import { eventually, processesWith, startHolder } from "../local/support.js"
import { allProcesses, descendants } from "../support/processes.js"
import {
  connectSsh2,
  type Endpoint,
  hasBwrap,
  makeEndpoint,
  MiB,
  raw,
  report,
  scaled,
  settle,
  snapshot,
  throwawayClientOptions,
  timeout
} from "./support.js"

/** Host fds of this process that point at `path`. */
const fdsOn = (path: string): number =>
  fs.readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === path
    } catch {
      return false
    }
  }).length

/** Every 32 KiB block of `partial` is the source's block or zeros (a gap): nothing else. */
const checkPartial = (partial: Buffer, source: Buffer) => {
  let same = 0
  let gaps = 0
  let foreign = 0
  for (let at = 0; at < partial.length; at += 32 * 1024) {
    const block = partial.subarray(at, at + 32 * 1024)
    if (block.equals(source.subarray(at, at + block.length))) same += 1
    else if (block.every((byte) => byte === 0)) gaps += 1
    else foreign += 1
  }
  return { same, gaps, foreign }
}

const identityFile = (endpoint: Endpoint) => {
  const path = Path.join(endpoint.dir, "id_client")
  fs.writeFileSync(path, endpoint.key.privateKey, { mode: 0o600 })
  return path
}

describe.skipIf(!hasBwrap)("faults in a bubblewrap sandbox", () => {
  it.scopedLive("a sandboxed process killed from the host: the client gets exit-signal KILL promptly", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
      const client = yield* SandboxSsh.make(sandbox).openClient()
      const marker = String(900_000 + Math.floor(Math.random() * 99_999))
      const process = yield* client.spawn(`exec sleep ${marker}`)
      const exec = yield* Effect.fork(client.exec(`exec sleep ${Number(marker) + 1}`))
      // the sandboxed processes themselves (the shell exec'd sleep), not the host-side nsenter
      const sleeping = () =>
        allProcesses().filter((p) => p.args === `sleep ${marker}` || p.args === `sleep ${Number(marker) + 1}`)
          .map((p) => p.pid)
      const pids = yield* eventually(sleeping, (found) => found.length === 2)
      assert.strictEqual(pids.length, 2)
      const killedAt = Date.now()
      for (const pid of pids) globalThis.process.kill(pid, "SIGKILL")
      const exit = yield* process.exit.pipe(Effect.timeout("5 seconds"))
      const spawnMs = Date.now() - killedAt
      const output = yield* Fiber.join(exec).pipe(Effect.timeout("5 seconds"))
      const execMs = Date.now() - killedAt
      yield* report({ suite: "faults", name: "killed-from-host", spawnMs, execMs })
      assert.deepInclude(exit, { _tag: "Signaled", signal: "KILL", code: 137 })
      assert.strictEqual(output.signal, "KILL")
      assert.strictEqual(output.status, 137)
      assert.isBelow(spawnMs, 2000)
      assert.isBelow(execMs, 2000)
    }))

  it.scopedLive("interrupted mid-exec: the sandbox process is gone", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
      const client = yield* SandboxSsh.make(sandbox).openClient()
      const marker = `mid-exec-${randomUUID()}`
      const rounds = scaled(10, 100)
      for (let i = 0; i < rounds; i++) {
        const result = yield* Effect.either(
          client.exec(`sleep 1000; : ${marker}`).pipe(Effect.timeout(`${50 + (i % 5) * 50} millis`))
        )
        assert.isTrue(result._tag === "Left")
      }
      const left = yield* eventually(() => processesWith(marker), (pids) => pids.length === 0)
      yield* report({ suite: "faults", name: "interrupted-exec", rounds, left: left.length })
      assert.deepStrictEqual(left, [])
      // the client is still usable
      assert.strictEqual((yield* client.exec("echo ok")).stdoutText, "ok\n")
    }))

  it.live(
    "the host program SIGKILLed with sessions running: no sandbox process survives",
    () =>
      Effect.gen(function*() {
        const root = fs.mkdtempSync(Path.join(os.tmpdir(), "sandbox-ssh-reliability-kill-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
        const marker = `holder-${randomUUID()}`
        const { holder } = yield* startHolder(Path.join(import.meta.dirname, "holder.ts"), [root, marker, "4"])
        const running = yield* eventually(() => processesWith(marker), (pids) => pids.length >= 5)
        const tree = (yield* descendants(holder.pid!)).length
        const killedAt = Date.now()
        holder.kill("SIGKILL")
        const left = yield* eventually(
          () => [...processesWith(marker), ...processesWith(root)],
          (pids) => pids.length === 0,
          10_000
        )
        yield* report({
          suite: "faults",
          name: "host-sigkill",
          sandboxProcesses: running.length,
          holderTree: tree,
          goneMs: Date.now() - killedAt,
          left: left.length
        })
        assert.isAtLeast(running.length, 5)
        assert.deepStrictEqual(left, [])
      }).pipe(Effect.scoped),
    timeout(60_000)
  )
})

describe("clients vanishing mid-upload", () => {
  it.scopedLive(
    "a real sftp killed mid-put: the server closes the file, leaks nothing, leaves a visible partial file",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        const identity = identityFile(endpoint)
        const size = scaled(32, 256) * MiB
        const source = randomBytes(size)
        const local = Path.join(endpoint.dir, "upload.bin")
        fs.writeFileSync(local, source)
        const target = Path.join(endpoint.sandbox.info.workdir, "upload.bin")
        const before = yield* snapshot()
        const sftp = ChildProcess.spawn("sftp", [
          ...throwawayClientOptions(identity),
          "-l",
          "80000", // 10 MB/s, so that there is a middle to kill it in
          "-P",
          String(endpoint.listener.port),
          "-b",
          "-",
          "root@127.0.0.1"
        ], { stdio: ["pipe", "ignore", "ignore"], detached: true })
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => sftp.exitCode === null && globalThis.process.kill(-sftp.pid!, "SIGKILL"))
        )
        sftp.stdin.end(`put ${local} upload.bin\n`)
        const started = yield* eventually(
          () => fs.existsSync(target) ? fs.statSync(target).size : 0,
          (bytes) => bytes >= 4 * MiB,
          20_000
        )
        assert.isAtLeast(started, 4 * MiB)
        // sftp and its ssh: the TCP connection goes with them
        globalThis.process.kill(-sftp.pid!, "SIGKILL")
        const fdsLeft = yield* eventually(() => fdsOn(target), (n) => n === 0)
        const after = yield* settle(before, { fds: 0 })
        const partial = fs.readFileSync(target)
        const blocks = checkPartial(partial, source)
        yield* report({
          suite: "faults",
          name: "sftp-killed-mid-put",
          sourceMiB: size / MiB,
          partialMiB: Math.round((partial.length / MiB) * 10) / 10,
          ...blocks,
          fdsOnTarget: fdsLeft,
          fds: [before.fds, after.fds],
          children: [before.children, after.children]
        })
        assert.strictEqual(fdsLeft, 0)
        assert.isBelow(partial.length, size)
        assert.strictEqual(blocks.foreign, 0)
        assert.isAtMost(after.fds, before.fds)
        assert.isAtMost(after.children, before.children)
      }),
    timeout(60_000)
  )

  it.scopedLive("an ssh2 client whose socket is destroyed mid-WRITE: same", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint()
      const size = 32 * MiB
      const source = randomBytes(size)
      const target = Path.join(endpoint.sandbox.info.workdir, "ssh2-upload.bin")
      const before = yield* snapshot()
      yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* connectSsh2(endpoint.listener.port, { privateKey: endpoint.key.privateKey })
        const sftp = yield* Effect.async<ssh2.SFTPWrapper, Error>((resume) => {
          client.sftp((error, sftp) => resume(error ? Effect.fail(error) : Effect.succeed(sftp)))
        })
        const handle = yield* Effect.async<Buffer, Error>((resume) => {
          sftp.open("ssh2-upload.bin", "w", (error, handle) =>
            resume(error ? Effect.fail(error) : Effect.succeed(handle)))
        })
        // 16 writes in flight, 32 KiB each; destroy the socket once 8 MiB are acknowledged
        let acknowledged = 0
        let offset = 0
        let failed = 0
        yield* Effect.async<void>((resume) => {
          const chunk = 32 * 1024
          const next = () => {
            if (offset >= size) {
              return
            }
            const at = offset
            offset += chunk
            sftp.write(handle, source, at, chunk, at, (error) => {
              if (error) {
                failed += 1
                return
              }
              acknowledged += chunk
              if (acknowledged >= 8 * MiB && !raw(client).socket.destroyed) {
                raw(client).socket.destroy()
                resume(Effect.void)
              }
              next()
            })
          }
          for (let i = 0; i < 16; i++) {
            next()
          }
        })
        // the writes in flight fail on the client's side once ssh2 sees the socket closed
        yield* eventually(() =>
          failed, (n) =>
          n >= 1)
        assert.isAtLeast(failed, 1)
      }))
      const fdsLeft = yield* eventually(() => fdsOn(target), (n) => n === 0)
      const after = yield* settle(before, { fds: 0 })
      const partial = fs.readFileSync(target)
      const blocks = checkPartial(partial, source)
      yield* report({
        suite: "faults",
        name: "ssh2-destroyed-mid-write",
        partialMiB: Math.round((partial.length / MiB) * 10) / 10,
        ...blocks,
        fdsOnTarget: fdsLeft,
        fds: [before.fds, after.fds]
      })
      assert.strictEqual(fdsLeft, 0)
      assert.isBelow(partial.length, size)
      assert.strictEqual(blocks.foreign, 0)
      assert.isAtMost(after.fds, before.fds)
    }), timeout(60_000))
})

describe("the in-process connection dying", () => {
  /** A library client over a duplex pair of our own, served by the endpoint's `serve`. */
  const clientOverDuplex = (endpoint: Endpoint, key: SshKeys.KeyPair) =>
    Effect.gen(function*() {
      const [serverSide, clientSide] = makeDuplexPair()
      const serving = yield* Effect.fork(endpoint.server.serve(serverSide))
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const ssh2Client = yield* connect({
        sock: clientSide,
        username: "root",
        clientKey: key,
        hostKey: endpoint.server.hostKey.publicBlob
      }).pipe(Scope.extend(scope))
      return { client: makeClient(ssh2Client, scope, { user: "root", term: "xterm" }), serverSide, clientSide, serving }
    })

  it.scopedLive(
    "every pending effect fails typed (exec, spawn, SFTP read/write/stat), nothing hangs",
    () =>
      Effect.gen(function*() {
        const key = yield* SshKeys.make.generateEphemeral
        const endpoint = yield* makeEndpoint({ authorizedKeys: () => `${key.publicKey}\n` })
        fs.writeFileSync(Path.join(endpoint.sandbox.info.workdir, "big"), randomBytes(32 * MiB))
        const outcomes: Record<string, string> = {}
        for (const side of ["client", "server"] as const) {
          const before = yield* snapshot()
          yield* Effect.scoped(Effect.gen(function*() {
            const { client, clientSide, serverSide, serving } = yield* clientOverDuplex(endpoint, key)
            const sftp = yield* client.sftp()
            const spawned = yield* client.spawn("sleep 100")
            const pending = {
              exec: client.exec("sleep 100"),
              spawnExit: spawned.exit,
              spawnStdout: Stream.runDrain(spawned.stdout),
              sftpRead: sftp.read("big"),
              sftpReadStream: Stream.runDrain(sftp.readStream("big")),
              sftpWrite: Stream.run(
                Stream.repeatEffect(Effect.succeed(new Uint8Array(64 * 1024))).pipe(Stream.take(4096)),
                sftp.writeSink("sink")
              ),
              sftpStats: Effect.forever(sftp.stat("big"))
            }
            const fibers = yield* Effect.forEach(
              Object.entries(pending),
              ([name, effect]) =>
                Effect.map(Effect.fork(effect as Effect.Effect<unknown, unknown>), (f) => [name, f] as const)
            )
            yield* Effect.sleep("200 millis")
            ;(side === "client" ? clientSide : serverSide).destroy()
            for (const [name, fiber] of fibers) {
              const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption("5 seconds"))
              const outcome = exit._tag === "None"
                ? "hung"
                : Exit.isSuccess(exit.value)
                ? "succeeded"
                : Cause.isFailType(exit.value.cause)
                ? `failed:${(exit.value.cause.error as { _tag: string })._tag}`
                : Cause.isDie(exit.value.cause)
                ? "died"
                : "interrupted"
              outcomes[`${side}:${name}`] = outcome
              if (exit._tag === "None") yield* Fiber.interrupt(fiber)
            }
            const later = yield* Effect.either(client.exec("true"))
            outcomes[`${side}:execAfter`] = later._tag === "Left" ? `failed:${later.left._tag}` : "succeeded"
            const served = yield* Fiber.await(serving).pipe(Effect.timeoutOption("5 seconds"))
            outcomes[`${side}:serve`] = served._tag === "None"
              ? "hung"
              : Exit.isSuccess(served.value)
              ? "ended"
              : "failed"
          }))
          const after = yield* settle(before, { fds: 0 })
          outcomes[`${side}:fds`] = `${before.fds}->${after.fds}`
          outcomes[`${side}:children`] = `${before.children}->${after.children}`
          assert.isAtMost(after.fds, before.fds)
          assert.isAtMost(after.children, before.children)
        }
        yield* report({ suite: "faults", name: "duplex-destroyed", outcomes })
        const typed = /^failed:(ConnectionError|ChannelError|SftpError)$/
        for (const side of ["client", "server"]) {
          for (
            const name of ["exec", "spawnExit", "sftpRead", "sftpReadStream", "sftpWrite", "sftpStats", "execAfter"]
          ) {
            assert.match(outcomes[`${side}:${name}`]!, typed, `${side}:${name}`)
          }
          assert.notStrictEqual(outcomes[`${side}:spawnStdout`], "hung")
          assert.notStrictEqual(outcomes[`${side}:spawnStdout`], "died")
          assert.strictEqual(outcomes[`${side}:serve`], "ended")
        }
      }),
    timeout(60_000)
  )
})

describe("interruption", () => {
  it.scopedLive("openClient interrupted mid-handshake, again and again: nothing leaks", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "none" })
      const ssh = SandboxSsh.make(sandbox)
      // warm up (module loading, key generation code) before the baseline
      yield* Effect.scoped(ssh.openClient())
      const before = yield* snapshot()
      const rounds = scaled(150, 2000)
      let completed = 0
      for (let i = 0; i < rounds; i++) {
        const fiber = yield* Effect.fork(Effect.scoped(
          ssh.openClient().pipe(
            Effect.tap(() =>
              Effect.sync(() => {
                completed += 1
              })
            ),
            Effect.zipRight(Effect.never)
          )
        ))
        yield* Effect.sleep(`${i % 7} millis`)
        yield* Fiber.interrupt(fiber)
      }
      const after = yield* settle(before, { fds: 0, heapMiB: 8 })
      yield* report({
        suite: "faults",
        name: "interrupted-handshake",
        rounds,
        completedBeforeInterrupt: completed,
        fds: [before.fds, after.fds],
        handles: [before.handles, after.handles],
        heapMiB: [before.heapUsedMiB, after.heapUsedMiB]
      })
      assert.isAtMost(after.fds, before.fds)
      assert.isAtMost(after.heapUsedMiB, before.heapUsedMiB + 8)
      assert.deepStrictEqual(after.handles, before.handles)
    }), timeout(60_000))

  it.scopedLive(
    "an SFTP upload interrupted mid-transfer: the file is closed, the session goes on",
    () =>
      Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation: "none" })
        const client = yield* SandboxSsh.make(sandbox).openClient()
        const sftp = yield* client.sftp()
        const target = Path.join(sandbox.info.workdir, "interrupted.bin")
        const before = yield* snapshot()
        const rounds = scaled(10, 100)
        const nextWriteMs: Array<number> = []
        for (let i = 0; i < rounds; i++) {
          const data = Stream.repeatEffect(Effect.succeed(new Uint8Array(256 * 1024))).pipe(Stream.take(512))
          const result = yield* Effect.either(
            Stream.run(data, sftp.writeSink("interrupted.bin")).pipe(Effect.timeout(`${20 + (i % 10) * 10} millis`))
          )
          assert.strictEqual(result._tag, "Left")
          const started = Date.now()
          const whole = yield* Effect.either(sftp.write("interrupted.bin", "x").pipe(Effect.timeout("10 seconds")))
          nextWriteMs.push(Date.now() - started)
          assert.strictEqual(whole._tag, "Right") // nothing is stuck behind the interrupted upload
        }
        const fdsLeft = yield* eventually(() => fdsOn(target), (n) => n === 0)
        const after = yield* settle(before, { fds: 0 })
        yield* report({
          suite: "faults",
          name: "interrupted-transfer",
          rounds,
          nextWriteMs,
          fdsOnTarget: fdsLeft,
          fds: [before.fds, after.fds]
        })
        assert.strictEqual(fdsLeft, 0)
        assert.isAtMost(after.fds, before.fds)
        assert.strictEqual(new TextDecoder().decode(yield* sftp.read("interrupted.bin")), "x")
      }),
    timeout(60_000)
  )
})
