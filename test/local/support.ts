import type { TimeoutException } from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import type { Readable } from "node:stream"
import type * as Sandbox from "../../src/Sandbox.js"
import type { SandboxError } from "../../src/SshError.js"

export const encoder = new TextEncoder()

export const collectBytes = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Stream.runCollect(stream).pipe(Effect.map((chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks))))

/** Connects to `host:port` through the sandbox, sends `chunks` then EOF, and returns all it read back. */
export const exchange = (
  sandbox: Sandbox.Sandbox,
  host: string,
  port: number,
  chunks: ReadonlyArray<string>
): Effect.Effect<string, SandboxError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const connection = yield* sandbox.connect(host, port)
      const [, output] = yield* Effect.all([
        Stream.run(Stream.fromIterable(chunks.map((chunk) => encoder.encode(chunk))), connection.input),
        collectBytes(connection.output)
      ], { concurrency: "unbounded" })
      return output.toString()
    })
  )

export interface Output {
  readonly stdout: Buffer
  readonly stderr: Buffer
  readonly exit: Sandbox.ProcessExit
}

/** Runs a process to the end: streams `input` to stdin (then EOF), collects stdout and stderr. */
export const run = (
  sandbox: Sandbox.Sandbox,
  options: Sandbox.SpawnOptions,
  input: Stream.Stream<Uint8Array> = Stream.empty
): Effect.Effect<Output, SandboxError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const process = yield* sandbox.spawn(options)
      const [stdout, stderr, , exit] = yield* Effect.all([
        collectBytes(process.stdout),
        collectBytes(process.stderr),
        Stream.run(input, process.stdin),
        process.exit
      ], { concurrency: "unbounded" })
      return { stdout, stderr, exit }
    })
  )

export const sh = (
  sandbox: Sandbox.Sandbox,
  script: string,
  options: Omit<Sandbox.SpawnOptions, "command" | "args"> = {}
) => run(sandbox, { ...options, command: sandbox.info.shell, args: ["-c", script] })

/** Host pids whose command line contains `marker`. */
export const processesWith = (marker: string): Array<number> =>
  Fs.readdirSync("/proc").flatMap((entry) => {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) return []
    try {
      const cmdline = Fs.readFileSync(`/proc/${entry}/cmdline`, "utf8")
      const state = Fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      const zombie = state.slice(state.lastIndexOf(")") + 2).startsWith("Z")
      return cmdline.includes(marker) && !zombie ? [pid] : []
    } catch {
      return []
    }
  })

/** Polls until `check` holds (or the time is up), returning its last value. */
export const eventually = <A>(check: () => A, ok: (a: A) => boolean, millis = 10_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    let value = check()
    while (!ok(value) && Date.now() < deadline) {
      yield* Effect.sleep("20 millis")
      value = check()
    }
    return value
  })

/** Waits until `predicate` holds, polling; a defect naming `what` when it does not within `timeoutMs`. */
export const waitUntil = (predicate: () => boolean, what: string, timeoutMs = 10_000): Effect.Effect<void> =>
  Effect.suspend(function loop(): Effect.Effect<void> {
    return predicate() ? Effect.void : Effect.zipRight(Effect.sleep(2), Effect.suspend(loop))
  }).pipe(
    Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new Error(`timed out waiting for ${what}`) }),
    Effect.orDie
  )

export const hasBwrap = Fs.existsSync("/usr/bin/bwrap")

/**
 * Starts a "holder" program (`node --import tsx <script> ...args`) that opens a sandbox and prints
 * `ready <runtime directory>`; waits up to 30 s for that line. The scope SIGKILLs the holder and
 * removes the runtime directory (which a killed holder cannot remove itself).
 */
export const startHolder = (
  script: string,
  args: ReadonlyArray<string>
): Effect.Effect<
  { readonly holder: ChildProcess.ChildProcessByStdio<null, Readable, null>; readonly runtimeDir: string },
  TimeoutException,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const holder = ChildProcess.spawn(
      process.execPath,
      ["--import", "tsx", script, ...args],
      { stdio: ["ignore", "pipe", "inherit"] }
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => holder.kill("SIGKILL")))
    const runtimeDir = yield* Effect.async<string>((resume) => {
      let output = ""
      holder.stdout.on("data", (data: Buffer) => {
        output += data.toString()
        const ready = /ready (\S+)\n/.exec(output)
        if (ready !== null) resume(Effect.succeed(ready[1]!))
      })
    }).pipe(Effect.timeout("30 seconds"))
    yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(runtimeDir, { recursive: true, force: true })))
    return { holder, runtimeDir }
  })
