/**
 * SFTP throughput through the public API: `client.sftp()` then whole-file `write` and `read` of
 * N MiB (default 256), and the streaming pair `writeSink`/`readStream`, each in MiB/s. The bytes
 * read back are compared with those written (sha256 of the whole-file read; `readStream`'s chunks
 * each in place as they come), so a fast but wrong transfer fails.
 *
 * With `localDir`, also a reference that is not ours: the same bytes from a file in that directory
 * through `@effect/platform`'s `FileSystem.stream`, consumed as `readStream`'s chunks are. It is
 * the floor this process sets for a stream whose chunks are the consumer's own memory, with no SSH
 * and no sandbox.
 *
 * Standalone: `npx tsx bench/sftp.ts [MiB] [rounds] [isolation] [localDir]` (LocalSandbox,
 * isolation "none" unless told; the reference only with a `localDir`).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as LocalSandbox from "../src/LocalSandbox.js"
import type { Sandbox } from "../src/Sandbox.js"
import * as SandboxSsh from "../src/SandboxSsh.js"
import { fullGcs } from "./util.js"

export interface SftpBenchOptions {
  /** File size in MiB. Default 256. */
  readonly mib?: number | undefined
  /** Rounds of each measurement; the median is reported. Default 3. */
  readonly rounds?: number | undefined
  /** The sandbox to measure; default a fresh `LocalSandbox` with isolation `"none"`. */
  readonly sandbox?: Sandbox | undefined
  /**
   * The payload (`mib` MiB), made once by a caller that measures several times. Made here by
   * default; a fresh 256 MiB allocation just before the first transfer makes that transfer pay
   * for V8's full GCs of it.
   */
  readonly data?: Uint8Array | undefined
  /** A directory on the host (tmpfs) for the reference stream; no reference without it. */
  readonly localDir?: string | undefined
}

/** What one round measures, in the order it runs them (`localStream` only with a `localDir`). */
export const SFTP_TRANSFERS = ["write", "read", "writeSink", "readStream", "localStream"] as const
export type SftpTransfer = typeof SFTP_TRANSFERS[number]

/** `f` of each transfer, by name. */
export const perSftpTransfer = <A>(f: (transfer: SftpTransfer) => A): { readonly [T in SftpTransfer]: A } =>
  Object.fromEntries(SFTP_TRANSFERS.map((transfer) => [transfer, f(transfer)])) as { readonly [T in SftpTransfer]: A }

/**
 * Median MiB/s of each transfer over the rounds (`localStream`, the reference stream from a local
 * file: NaN without `localDir`), and:
 */
export interface SftpBenchResults extends Readonly<Record<SftpTransfer, number>> {
  readonly mib: number
  /** Every round, MiB/s, in order. */
  readonly rounds: { readonly [T in SftpTransfer]: ReadonlyArray<number> }
  /** Full GCs of this process during each transfer of every round, in order. */
  readonly fullGcs: { readonly [T in SftpTransfer]: ReadonlyArray<number> }
  /** The session's request sizes (from `limits@openssh.com` when the server offers it). */
  readonly maxReadLength: number
  readonly maxWriteLength: number
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

/** MiB/s, the value, and the full GCs during it. */
const timedMiBs = <A, E, R>(mib: number, effect: Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const before = fullGcs()
    return Effect.map(
      Effect.timed(effect),
      ([duration, value]) => [mib / (Duration.toMillis(duration) / 1000), value, fullGcs() - before] as const
    )
  })

/** Measures SFTP write and read of `mib` MiB; returns MiB/s (medians and every round). */
export const measureSftp = (options: SftpBenchOptions = {}): Effect.Effect<SftpBenchResults, unknown> =>
  Effect.gen(function*() {
    const mib = options.mib ?? 256
    const rounds = Math.max(1, options.rounds ?? 3)
    const sandbox = options.sandbox ?? (yield* LocalSandbox.make({ isolation: "none" }))
    const client = yield* SandboxSsh.make(sandbox).openClient()
    const sftp = yield* client.sftp()
    const path = `sftp-bench-${process.pid}.bin`
    yield* Effect.addFinalizer(() => Effect.ignore(sftp.removeFile(path)))

    const data = options.data ?? randomBytes(mib * 1024 * 1024)
    if (data.length !== mib * 1024 * 1024) return yield* Effect.fail(new Error(`data is not ${mib} MiB`))
    const expected = sha256(data)
    const check = (bytes: Uint8Array) =>
      sha256(bytes) === expected ? Effect.void : Effect.fail(new Error("bytes read back differ from those written"))
    // Chunks as a producer would hand them over (64 KiB, like a Node file stream).
    const chunks = Stream.fromIterable(
      Array.from({ length: data.length / 65536 }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536))
    )

    // The reference's file on the host, written before any timing.
    const local = options.localDir === undefined ? undefined : {
      file: Path.join(options.localDir, `sftp-bench-local-${process.pid}.bin`),
      fs: yield* Effect.provide(FileSystem.FileSystem, NodeFileSystem.layer)
    }
    if (local !== undefined) {
      yield* Effect.acquireRelease(
        Effect.try({ try: () => Fs.writeFileSync(local.file, data, { mode: 0o600 }), catch: (e) => e }),
        () => Effect.sync(() => Fs.rmSync(local.file, { force: true }))
      )
    }
    // A streaming consumer, as `sftp get` writing a file is: each chunk is compared in place with
    // the bytes written (memcmp) and let go, instead of keeping all 256 MiB to hash them after,
    // which measured the retention as much as the transfer (`npm run bench` here: 420–482 MiB/s
    // collected, 507 consumed in place).
    const consumeInPlace = <E>(stream: Stream.Stream<Uint8Array, E>) =>
      Effect.flatMap(
        Stream.runFoldEffect(stream, 0, (offset, chunk) =>
          Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).equals(
              data.subarray(offset, offset + chunk.length)
            )
            ? Effect.succeed(offset + chunk.length)
            : Effect.fail(new Error(`bytes read back at ${offset} differ from those written`))),
        (received) =>
          received === data.length
            ? Effect.void
            : Effect.fail(new Error(`read back ${received} of ${data.length} bytes`))
      )

    const results = perSftpTransfer((): Array<number> => [])
    const gcs = perSftpTransfer((): Array<number> => [])
    /** Times `effect` as one `transfer` of this round; its value. */
    const measured = <A, E>(transfer: SftpTransfer, effect: Effect.Effect<A, E>) =>
      Effect.map(timedMiBs(mib, effect), ([rate, value, fullGcsDuring]) => {
        results[transfer].push(rate)
        gcs[transfer].push(fullGcsDuring)
        return value
      })
    // the reference's chunks are of the session's read length, as readStream's requests are
    const localChunkSize = FileSystem.Size(sftp.limits.maxReadLength)
    for (let round = 0; round < rounds; round++) {
      yield* measured("write", sftp.write(path, data))
      yield* check(yield* measured("read", sftp.read(path)))
      yield* measured("writeSink", Stream.run(chunks, sftp.writeSink(path)))
      yield* measured("readStream", consumeInPlace(sftp.readStream(path)))
      if (local !== undefined) {
        yield* measured("localStream", consumeInPlace(local.fs.stream(local.file, { chunkSize: localChunkSize })))
      }
    }
    return {
      mib,
      ...perSftpTransfer((transfer) => median(results[transfer])),
      rounds: results,
      fullGcs: gcs,
      maxReadLength: sftp.limits.maxReadLength,
      maxWriteLength: sftp.limits.maxWriteLength
    }
  }).pipe(Effect.scoped)

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, "/"))) {
  const mib = Number(process.argv[2] ?? 256)
  const rounds = Number(process.argv[3] ?? 3)
  const isolation = (process.argv[4] ?? "none") as "auto" | "bubblewrap" | "none"
  const localDir = process.argv[5]
  Effect.runPromise(Effect.scoped(Effect.flatMap(
    LocalSandbox.make({ isolation }),
    (sandbox) => measureSftp({ mib, rounds, sandbox, localDir })
  ))).then(
    (results) => console.log(JSON.stringify(results, null, 2)),
    (error) => {
      console.error(error)
      process.exitCode = 1
    }
  )
}
