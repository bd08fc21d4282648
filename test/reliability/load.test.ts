/**
 * Load against one LocalSandbox: many clients with many concurrent execs, open/close cycles,
 * parallel SFTP transfers checked by sha256, a long exec stream, and OpenSSH clients through a TCP
 * listener. After each phase and at the end, the host process's open file descriptors, child
 * processes, libuv handles, TCP listeners and heap (after a full GC) are back to the baseline.
 *
 * Sizes: CI by default; `RELIABILITY_SCALE=soak` (npm run soak) runs the full ones.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { createCipheriv, createHash } from "node:crypto"
import * as fs from "node:fs"
import * as Path from "node:path"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import type { Sandbox } from "../../src/Sandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import { run } from "../support/openssh.js"
import {
  hasBwrap,
  makeEndpoint,
  MiB,
  report,
  scaled,
  settle,
  type Snapshot,
  snapshot,
  throwawayClientOptions,
  timeout,
  withMemoryPeak
} from "./support.js"

const isolation = hasBwrap ? "bubblewrap" : "none"

/** Heap growth tolerated after a phase (after a full GC): caches, JIT, pooled buffers. */
const HEAP_TOLERANCE_MIB = 24

let suiteBaseline: Snapshot | undefined = undefined

/** Checks the resources against `before` (after they settle), reports and asserts. */
const checkBaseline = (phase: string, before: Snapshot, figures: Record<string, unknown>) =>
  Effect.gen(function*() {
    const after = yield* settle(before, { fds: 0, heapMiB: HEAP_TOLERANCE_MIB })
    yield* report({
      suite: "load",
      name: phase,
      ...figures,
      fds: [before.fds, after.fds],
      children: [before.children, after.children],
      tcpListeners: [before.tcpListeners, after.tcpListeners],
      handles: [before.handles, after.handles],
      heapUsedMiB: [before.heapUsedMiB, after.heapUsedMiB],
      rssMiB: [before.rssMiB, after.rssMiB]
    })
    assert.isAtMost(after.fds, before.fds, `${phase}: fds`)
    assert.isAtMost(after.children, before.children, `${phase}: children ${after.childArgs.join(" | ")}`)
    assert.isAtMost(after.tcpListeners, before.tcpListeners, `${phase}: listeners`)
    for (const [type, count] of Object.entries(after.handles)) {
      assert.isAtMost(count, before.handles[type] ?? 0, `${phase}: ${type} handles`)
    }
    assert.isAtMost(after.heapUsedMiB, before.heapUsedMiB + HEAP_TOLERANCE_MIB, `${phase}: heap`)
  })

/** A phase: baseline, work in its own scope (the sandbox included), check. */
const phase = <A extends Record<string, unknown>>(name: string, work: Effect.Effect<A, unknown, never>) =>
  Effect.gen(function*() {
    const before = yield* snapshot()
    suiteBaseline ??= before
    const figures = yield* work
    yield* checkBaseline(name, before, figures)
  })

/** Deterministic pseudo-random bytes for a transfer (an AES-CTR keystream), in chunks: nothing held whole. */
const content = (seed: number, size: number, chunk = 256 * 1024) => {
  const zeros = Buffer.alloc(chunk)
  return Stream.suspend(() => {
    const key = createHash("sha256").update(`transfer-${seed}`).digest().subarray(0, 16)
    const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16))
    return Stream.range(0, Math.ceil(size / chunk) - 1).pipe(
      Stream.rechunk(1), // one buffer at a time, not every index of the range in one chunk
      Stream.map((i) => new Uint8Array(cipher.update(zeros.subarray(0, Math.min(chunk, size - i * chunk)))))
    )
  })
}

const sha256Of = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Stream.runFold(stream, createHash("sha256"), (hash, chunk) => hash.update(chunk)).pipe(
    Effect.map((hash) => hash.digest("hex"))
  )

/** An SFTP-capable sandbox: bubblewrap when its file operations work, else isolation "none". */
const sftpSandbox = Effect.gen(function*() {
  if (hasBwrap) {
    const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
    const probe = yield* Effect.either(sandbox.fs.stat("/"))
    if (probe._tag === "Right") return { sandbox, isolation: "bubblewrap", note: "" }
    if (probe.left.reason !== "Unsupported") return yield* Effect.fail(probe.left)
  }
  const sandbox = yield* LocalSandbox.make({ isolation: "none" })
  return {
    sandbox,
    isolation: "none",
    note: hasBwrap ? "bubblewrap file operations are Unsupported (agent pending): isolation none" : "no bwrap"
  }
})

describe("load", () => {
  it.live("32 clients x 16 concurrent execs against one sandbox", () =>
    phase(
      "concurrent-execs",
      Effect.scoped(Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation })
        const ssh = SandboxSsh.make(sandbox)
        const clients = 32
        const execs = 16
        const rounds = scaled(1, 10)
        const started = Date.now()
        let ok = 0
        for (let round = 0; round < rounds; round++) {
          yield* Effect.forEach(Array.from({ length: clients }, (_, c) => c), (c) =>
            Effect.scoped(Effect.gen(function*() {
              const client = yield* ssh.openClient()
              yield* Effect.forEach(
                Array.from({ length: execs }, (_, e) =>
                  e),
                (e) =>
                  Effect.gen(function*() {
                    const n = c * execs + e
                    const out = yield* client.exec(`echo ${n}; head -c 4096 /dev/urandom | wc -c; echo err${n} >&2`)
                    assert.strictEqual(out.status, 0)
                    assert.strictEqual(out.stdoutText, `${n}\n4096\n`)
                    assert.strictEqual(out.stderrText, `err${n}\n`)
                    ok += 1
                  }),
                { concurrency: "unbounded", discard: true }
              )
            })), { concurrency: "unbounded", discard: true })
        }
        assert.strictEqual(ok, clients * execs * rounds)
        return { isolation, clients, execsPerClient: execs, rounds, execs: ok, ms: Date.now() - started }
      }))
    ), timeout(180_000))

  it.live("open/close cycles of clients", () =>
    phase(
      "open-close-cycles",
      Effect.scoped(Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation })
        const ssh = SandboxSsh.make(sandbox)
        const cycles = scaled(150, 500)
        const started = Date.now()
        for (let i = 0; i < cycles; i++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const client = yield* ssh.openClient()
            if (i % 5 === 0) assert.strictEqual((yield* client.exec("echo $$ >/dev/null; echo ok")).stdoutText, "ok\n")
            if (i % 2 === 0) yield* client.close
          }))
        }
        return { isolation, cycles, msPerCycle: Math.round(((Date.now() - started) / cycles) * 10) / 10 }
      }))
    ), timeout(180_000))

  it.live("8 parallel SFTP transfers up and down, sha256 checked", () =>
    phase(
      "sftp-transfers",
      Effect.scoped(Effect.gen(function*() {
        const { isolation: used, note, sandbox } = yield* sftpSandbox
        const ssh = SandboxSsh.make(sandbox)
        const size = scaled(16, 64) * MiB
        const parallel = 8
        const started = Date.now()
        const { peakGrowthMiB } = yield* withMemoryPeak(
          Effect.forEach(Array.from({ length: parallel }, (_, i) => i), (i) =>
            Effect.scoped(Effect.gen(function*() {
              const client = yield* ssh.openClient()
              const sftp = yield* client.sftp()
              const name = `transfer-${i}.bin`
              const expected = yield* sha256Of(content(1000 + i, size))
              yield* Stream.run(content(1000 + i, size), sftp.writeSink(name))
              assert.strictEqual((yield* sftp.stat(name)).size, size)
              assert.strictEqual(yield* sha256Of(sftp.readStream(name)), expected)
              const onHost = Path.join((sandbox as Sandbox).info.workdir, name)
              if (used === "none") {
                assert.strictEqual(createHash("sha256").update(fs.readFileSync(onHost)).digest("hex"), expected)
              }
              yield* sftp.removeFile(name)
            })), { concurrency: "unbounded", discard: true })
        )
        const seconds = (Date.now() - started) / 1000
        return {
          isolation: used,
          note,
          transfers: parallel,
          sizeMiB: size / MiB,
          mibPerSecond: Math.round((2 * parallel * size) / MiB / seconds),
          peakGrowthMiB
        }
      }))
    ), timeout(180_000))

  it.live("a long exec stream consumed through spawn, counted", () =>
    phase(
      "exec-stream",
      Effect.scoped(Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation })
        const client = yield* SandboxSsh.make(sandbox).openClient()
        const size = scaled(128 * MiB, 1024 * MiB)
        const started = Date.now()
        const { peakGrowthMiB, value } = yield* withMemoryPeak(Effect.scoped(Effect.gen(function*() {
          const process = yield* client.spawn(`head -c ${size} /dev/zero | tr '\\0' 'z'`)
          const [count, exit] = yield* Effect.all([
            Stream.runFold(process.stdout, { bytes: 0, wrong: 0 }, (acc, chunk) => {
              acc.bytes += chunk.length
              if (chunk[0] !== 0x7a || chunk[chunk.length - 1] !== 0x7a) acc.wrong += 1
              return acc
            }),
            process.exitCode
          ], { concurrency: 2 })
          return { count, exit }
        })))
        assert.strictEqual(value.count.bytes, size)
        assert.strictEqual(value.count.wrong, 0)
        assert.strictEqual(value.exit, 0)
        const seconds = (Date.now() - started) / 1000
        return {
          isolation,
          bytes: value.count.bytes,
          mibPerSecond: Math.round(size / MiB / seconds),
          peakGrowthMiB
        }
      }))
    ), timeout(180_000))

  it.live("OpenSSH clients through a TCP listener", () =>
    phase(
      "tcp-listener",
      Effect.scoped(Effect.gen(function*() {
        const endpoint = yield* makeEndpoint({ isolation })
        const identity = Path.join(endpoint.dir, "id_load")
        fs.writeFileSync(identity, endpoint.key.privateKey, { mode: 0o600 })
        const clients = scaled(16, 64)
        const results = yield* Effect.forEach(Array.from({ length: clients }, (_, i) => i), (i) =>
          run("ssh", [
            ...throwawayClientOptions(identity),
            "-o",
            "LogLevel=ERROR",
            "-p",
            String(endpoint.listener.port),
            "root@127.0.0.1",
            `echo ${i}`
          ]), { concurrency: 8 })
        results.forEach((result, i) => {
          assert.strictEqual(result.code, 0, result.stderr)
          assert.strictEqual(result.stdout.toString(), `${i}\n`)
        })
        return { isolation, sshClients: clients }
      }))
    ), timeout(120_000))

  it.live("everything is back to the suite's first baseline", () =>
    Effect.gen(function*() {
      assert.isDefined(suiteBaseline)
      yield* checkBaseline("suite", suiteBaseline!, {})
    }))
})
