/**
 * The host reads and writes a file the isolated sandbox's agent opened through the agent's own
 * descriptor (`src/internal/local/directFile.ts`), only when the kernel shows that the agent holds
 * that file with enough access: the checks first (with this process standing in for the agent),
 * then the path through a real bubblewrap sandbox, for root's agent and for a user's.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as DirectFile from "../../src/internal/local/directFile.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import type { Sandbox, SandboxFileSystem } from "../../src/Sandbox.js"
import { encoder, hasBwrap, sh } from "./support.js"

const { O_APPEND, O_CREAT, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY } = Fs.constants
const O_PATH = 0o10000000

/** Runs `f` with a fresh temporary directory, removed afterwards. */
const withDir = <A>(f: (dir: string) => A): A => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "direct-file-"))
  try {
    return f(dir)
  } finally {
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** Host descriptors of this process open on the file `path` (same device and inode). */
const ownDescriptorsOn = (path: string): Array<number> => {
  const target = Fs.statSync(path)
  return Fs.readdirSync("/proc/self/fd").map(Number).filter((fd) => {
    try {
      const stats = Fs.fstatSync(fd)
      return stats.ino === target.ino && stats.dev === target.dev
    } catch {
      return false
    }
  })
}

/** Runs `f` with `path` open as the agent would hold it (`flags`), closed afterwards. */
const heldByAgent = (path: string, flags: number, f: (agentFd: number) => void, mode?: number) => {
  const agentFd = Fs.openSync(path, flags, mode)
  try {
    f(agentFd)
  } finally {
    Fs.closeSync(agentFd)
  }
}

describe("directFile.reopen: this process stands in for the agent", () => {
  it("reopens a regular file the agent holds, for an access mode its descriptor covers", () =>
    withDir((dir) => {
      const path = Path.join(dir, "file")
      heldByAgent(path, O_RDWR | O_CREAT, (agentFd) => {
        const own = DirectFile.reopen(process.pid, agentFd, O_WRONLY)
        assert.isDefined(own)
        assert.notStrictEqual(own, agentFd)
        Fs.writeSync(own!, "through the host", 0, "utf8")
        Fs.closeSync(own!)
        assert.strictEqual(Fs.readFileSync(path, "utf8"), "through the host")
        const reader = DirectFile.reopen(process.pid, agentFd, O_RDONLY)
        assert.isDefined(reader)
        Fs.closeSync(reader!)
      }, 0o600)
    }))

  it("keeps O_APPEND: writes go to the end whatever their offset", () =>
    withDir((dir) => {
      const path = Path.join(dir, "log")
      Fs.writeFileSync(path, "first\n")
      heldByAgent(path, O_WRONLY | O_APPEND, (agentFd) => {
        const own = DirectFile.reopen(process.pid, agentFd, O_WRONLY | O_APPEND)
        assert.isDefined(own)
        Fs.writeSync(own!, "second\n", 0, "utf8")
        Fs.closeSync(own!)
        assert.strictEqual(Fs.readFileSync(path, "utf8"), "first\nsecond\n")
      })
    }))

  it("refuses more access than the agent's descriptor has", () =>
    withDir((dir) => {
      const path = Path.join(dir, "read-only")
      Fs.writeFileSync(path, "x")
      heldByAgent(path, O_RDONLY, (agentFd) => {
        assert.isUndefined(DirectFile.reopen(process.pid, agentFd, O_WRONLY))
        assert.isUndefined(DirectFile.reopen(process.pid, agentFd, O_RDWR))
        assert.deepStrictEqual(ownDescriptorsOn(path), [agentFd], "a refused reopen leaves no descriptor")
      })
      heldByAgent(path, O_WRONLY, (agentFd) => {
        assert.isUndefined(DirectFile.reopen(process.pid, agentFd, O_RDONLY))
      })
    }))

  it("refuses an O_PATH descriptor, which is opened without read or write permission", () =>
    withDir((dir) => {
      const path = Path.join(dir, "secret")
      Fs.writeFileSync(path, "s3cret", { mode: 0o000 })
      heldByAgent(path, O_PATH, (agentFd) => {
        assert.isUndefined(DirectFile.reopen(process.pid, agentFd, O_RDONLY))
        assert.deepStrictEqual(ownDescriptorsOn(path), [agentFd])
      })
    }))

  it("refuses FIFOs, set-user-ID and set-group-ID files, and descriptors the agent does not have", () =>
    withDir((dir) => {
      const fifo = Path.join(dir, "fifo")
      ChildProcess.execFileSync("mkfifo", [fifo])
      heldByAgent(fifo, O_RDWR | O_NONBLOCK, (agentFd) => {
        assert.isUndefined(DirectFile.reopen(process.pid, agentFd, O_RDWR))
      })
      for (const mode of [0o4755, 0o2755]) {
        const path = Path.join(dir, `special-${mode.toString(8)}`)
        Fs.writeFileSync(path, "#!/bin/sh\n")
        Fs.chmodSync(path, mode)
        heldByAgent(path, O_RDWR, (agentFd) => {
          assert.isUndefined(DirectFile.reopen(process.pid, agentFd, O_RDWR))
        })
      }
      const closed = Fs.openSync(Path.join(dir, "gone"), O_RDWR | O_CREAT)
      Fs.closeSync(closed)
      assert.isUndefined(DirectFile.reopen(process.pid, closed, O_RDWR))
      assert.isUndefined(DirectFile.reopen(process.pid, -1, O_RDWR))
    }))

  it.effect("close waits for the writes still in flight, then frees the descriptor", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "direct-file-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const path = Path.join(dir, "data")
      const own = Fs.openSync(path, O_RDWR | O_CREAT, 0o600)
      const file = DirectFile.make(own, path)
      const chunk = Buffer.alloc(1 << 20, 7)
      // 32 writes issued, then close, in one synchronous run: the writes wait in the threadpool when
      // close is called
      const [writes, closing] = yield* Effect.sync(() =>
        [
          Array.from({ length: 32 }, (_, i) => Effect.runFork(file.write(i * chunk.length, chunk))),
          Effect.runFork(file.close)
        ] as const
      )
      yield* Fiber.join(closing)
      // every write had landed when close finished, and succeeded
      assert.strictEqual(Fs.statSync(path).size, 32 * chunk.length)
      yield* Fiber.join(Fiber.all(writes))
      assert.deepStrictEqual(ownDescriptorsOn(path), [])
      const late = yield* Effect.flip(file.write(0, chunk))
      assert.strictEqual(late.reason, "InvalidArgument")
    }).pipe(Effect.scoped))
})

describe("directFile.make: requests issued together", () => {
  /** Runs `effects` started in one synchronous run (so that they queue behind each other). */
  const together = <A>(effects: ReadonlyArray<Effect.Effect<A, unknown>>) =>
    Effect.flatMap(
      Effect.sync(() => effects.map((effect) => Effect.runFork(effect))),
      (fibers) => Fiber.join(Fiber.all(fibers))
    )

  it.effect("adjacent and scattered writes land where each said, whatever they were batched with", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "direct-file-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const path = Path.join(dir, "data")
      const file = DirectFile.make(Fs.openSync(path, O_RDWR | O_CREAT, 0o600), path)
      const piece = 32 * 1024
      const expected = Buffer.alloc(100 * piece)
      const requests: Array<Effect.Effect<void, unknown>> = []
      // 70 adjacent pieces (more than one batch of 64, more than 1 MiB), then one far behind them,
      // then 20 more adjacent ones starting over at the front
      const order = [...Array.from({ length: 70 }, (_, i) => i + 10), 95, ...Array.from({ length: 20 }, (_, i) => i)]
      for (const index of order) {
        const data = Buffer.alloc(piece, index + 1)
        data.copy(expected, index * piece)
        requests.push(file.write(index * piece, data))
      }
      yield* together(requests)
      yield* file.close
      assert.isTrue(Fs.readFileSync(path).equals(expected.subarray(0, 96 * piece)))
    }).pipe(Effect.scoped))

  it.effect("adjacent reads each get their own range, short or empty past the end of the file", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "direct-file-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const path = Path.join(dir, "data")
      const content = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 251))
      Fs.writeFileSync(path, content)
      const file = DirectFile.make(Fs.openSync(path, O_RDONLY), path)
      const piece = 10_000
      // 40 adjacent reads (the file ends inside the 30th), and one that starts elsewhere
      const ranges = [...Array.from({ length: 40 }, (_, i) => i * piece), 123]
      const results = yield* together(ranges.map((offset) => file.read(offset, piece)))
      ranges.forEach((offset, i) => {
        const want = content.subarray(Math.min(offset, content.length), Math.min(offset + piece, content.length))
        assert.isTrue(Buffer.from(results[i]!).equals(want), `read at ${offset}`)
      })
      yield* file.close
    }).pipe(Effect.scoped))
})

/** Writes `text` through `fs`, checking while the file is open that the host holds it itself. */
const writeChecked = (sandbox: Sandbox, fs: SandboxFileSystem, path: string, text: string) =>
  Effect.scoped(Effect.gen(function*() {
    const file = yield* fs.open(path, { write: true, create: true, truncate: true })
    const hostPath = Path.join(sandbox.info.root!, path)
    assert.lengthOf(ownDescriptorsOn(hostPath), 1, "the host holds a descriptor of its own while the file is open")
    yield* file.write(0, encoder.encode(text))
    const back = yield* fs.open(path, { read: true })
    assert.strictEqual(Buffer.from(yield* back.read(0, 1024)).toString(), text)
    yield* back.close
    yield* file.close
    assert.deepStrictEqual(ownDescriptorsOn(hostPath), [], "closing the file closes the host's descriptor")
  }))

describe.skipIf(!hasBwrap)("an isolated LocalSandbox moves file data without the agent's socket", () => {
  it.scopedLive("root's files: the host writes and reads them; processes inside see the same bytes", () =>
    Effect.gen(function*() {
      const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
      yield* writeChecked(sandbox, sandbox.fs, "/tmp/direct.txt", "written by the host\n")
      const cat = yield* sh(sandbox, "cat /tmp/direct.txt")
      assert.strictEqual(cat.stdout.toString(), "written by the host\n")
    }))

  // other uids exist in the sandbox only when bwrap runs as root (see bubblewrap.ts)
  it.scopedLive.skipIf(process.getuid?.() !== 0)(
    "a user's files: the same, through that user's agent, and still only what the user may open",
    () =>
      Effect.gen(function*() {
        const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap" })
        const setup = yield* sh(
          sandbox,
          "echo 'alice:x:1000:1000:Alice:/tmp:/bin/sh' >> /etc/passwd && echo 'alice:x:1000:' >> /etc/group && " +
            "echo s3cret > /tmp/root-only && chmod 600 /tmp/root-only"
        )
        assert.strictEqual(setup.exit.code, 0, setup.stderr.toString())
        const fs = yield* sandbox.fileSystemFor!("alice")
        yield* writeChecked(sandbox, fs, "/tmp/by-alice.txt", "alice's bytes\n")
        assert.strictEqual(Fs.statSync(Path.join(sandbox.info.root!, "tmp/by-alice.txt")).uid, 1000)
        const denied = yield* Effect.flip(fs.open("/tmp/root-only", { read: true }))
        assert.strictEqual(denied.reason, "PermissionDenied")
      })
  )
})
