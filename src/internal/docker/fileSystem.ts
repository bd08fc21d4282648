/**
 * `SandboxFileSystem` of a container, with nothing installed in it: metadata through the file
 * agent (`agent.ts`), file contents through `dd` exec'd per open file and streamed over the exec's
 * hijacked connection (`dd if=F skip=N iflag=skip_bytes` to read, `dd of=F seek=N
 * oflag=seek_bytes conv=notrunc` to write). Sequential reads and writes, which is what SFTP
 * clients do, are one stream per handle at the speed of the Engine's exec stream; a read or write
 * at another offset restarts the stream there (~40 ms), and writes that arrive a little out of
 * order are parked until the gap is filled. A writer queues up to 4 MiB ahead of `dd` (copies of
 * the caller's buffers) and a reader buffers up to 8 MiB ahead of the reads.
 *
 * Limits: an open file is addressed by its path, not a descriptor — renaming or removing it while
 * it is open affects later reads and writes (a writer recreates a removed file). Writes are
 * acknowledged once handed to the stream; a failure of the write itself (disk full, a file made
 * read-only meanwhile) is reported by the next `sync`, `stat`, `setStat` or `close` of the handle.
 * A reader that reached the end of the file stays there (a file that grows is not followed).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Path from "node:path"
import type { PassThrough } from "node:stream"
import type {
  DirectoryEntry,
  FileAttributes,
  FileSystemStats,
  OpenFlags,
  SandboxFile,
  SandboxFileSystem,
  SetAttributes
} from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import { fileTypeOf } from "../fileMode.js"
import { type Agent, toolError } from "./agent.js"
import * as Exec from "./exec.js"
import * as Streams from "./streams.js"

const BLOCK = 65536
/** How far ahead of the stream a read may be served by skipping instead of restarting. */
const SKIP_LIMIT = 4 * 1024 * 1024
/** How much already-read data is kept for reads that arrive a little late. */
const HISTORY_LIMIT = 4 * 1024 * 1024
/** Bytes a reader buffers ahead of the reads. */
const READ_AHEAD = 8 * 1024 * 1024
/** Bytes queued on a writer's socket before a write waits. */
const WRITE_AHEAD = 4 * 1024 * 1024
/** Out-of-order writes parked until the gap before them is written. */
const PARKED_LIMIT = 16 * 1024 * 1024

/** Parses the 7 fields of `STAT_FORMAT`. @internal */
export const parseStat = (text: string): FileAttributes | undefined => {
  const fields = text.trim().split(" ")
  if (fields.length < 7) return undefined
  const mode = parseInt(fields[0]!, 16)
  const [size, uid, gid, atime, mtime, nlink] = fields.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number
  ]
  if (!Number.isFinite(mode) || [size, uid, gid, atime, mtime, nlink].some((n) => !Number.isFinite(n))) {
    return undefined
  }
  return { type: fileTypeOf(mode), size, uid, gid, mode, atime, mtime, nlink }
}

/**
 * The stat lines of a directory listing (`<7 fields> <path>\n` per entry, in argument order, an
 * entry that vanished meanwhile missing) matched against the paths we asked for: a name may hold
 * spaces or newlines, but we know which one to expect next.
 */
const parseListing = (
  names: ReadonlyArray<Buffer>,
  base: Buffer,
  blob: Buffer
): Array<DirectoryEntry> => {
  const entries: Array<DirectoryEntry> = []
  let position = 0
  for (const name of names) {
    let cursor = position
    let ok = true
    for (let i = 0; i < 7 && ok; i++) {
      const space = blob.indexOf(0x20, cursor)
      if (space < 0) ok = false
      else cursor = space + 1
    }
    if (!ok) break
    const expected = Buffer.concat([base, name, Buffer.from("\n")])
    if (blob.subarray(cursor, cursor + expected.length).equals(expected)) {
      const attributes = parseStat(blob.subarray(position, cursor - 1).toString("latin1"))
      if (attributes !== undefined) entries.push({ name: name.toString("utf8"), attributes })
      position = cursor + expected.length
    }
    // else: the entry vanished between listing and stat; its line is not there
  }
  return entries
}

const octal = (n: number) => (n & 0o7777).toString(8)

/** @internal */
export interface Context {
  readonly target: Exec.Target
  readonly agent: Agent
  readonly workdir: string
  readonly user?: string | undefined
  /** The sandbox's scope: every stream of an open file ends with it. */
  readonly scope: Scope.Scope
}

interface Stream {
  readonly started: Exec.Started
  readonly scope: Scope.CloseableScope
  /** Offset of the first byte of the stream. */
  readonly start: number
  /** Offset of the next byte read from / written to the stream. */
  position: number
}

const closeStream = (stream: Stream) => Scope.close(stream.scope, Exit.void)

/** Reads up to `length` bytes, fewer only at the end of the stream; `undefined` once it ended. */
const readFrom = (readable: PassThrough, length: number) =>
  Effect.async<Buffer | undefined>((resume) => {
    let finished = false
    const attempt = () => {
      if (finished) return
      const data = readable.read(length) as Buffer | null
      if (data !== null) return finish(data)
      if (readable.readableEnded || readable.destroyed) return finish(undefined)
    }
    const onEnd = () => finish(readable.read() as Buffer | null ?? undefined)
    const finish = (data: Buffer | undefined) => {
      finished = true
      readable.removeListener("readable", attempt)
      readable.removeListener("end", onEnd)
      readable.removeListener("close", onEnd)
      resume(Effect.succeed(data))
    }
    readable.on("readable", attempt)
    readable.once("end", onEnd)
    readable.once("close", onEnd)
    attempt()
    return Effect.sync(() => {
      finished = true
      readable.removeListener("readable", attempt)
      readable.removeListener("end", onEnd)
      readable.removeListener("close", onEnd)
    })
  })

/**
 * Hands data to the writer's socket; waits only when more than `WRITE_AHEAD` bytes are queued, so
 * the daemon, the container's pipe and `dd` keep working while the next chunks arrive.
 */
const write = (stream: Stream, data: Uint8Array) =>
  Effect.async<void>((resume) => {
    const socket = stream.started.socket
    if (socket.destroyed || !socket.writable) return resume(Effect.void)
    // a copy: the caller may reuse its buffer once we return (the SFTP server pools them)
    socket.write(Buffer.from(data))
    if (socket.writableLength <= WRITE_AHEAD) return resume(Effect.void)
    const done = () => {
      socket.removeListener("drain", done)
      socket.removeListener("close", done)
      resume(Effect.void)
    }
    socket.once("drain", done)
    socket.once("close", done)
    return Effect.sync(() => {
      socket.removeListener("drain", done)
      socket.removeListener("close", done)
    })
  })

/** The error of a `dd` that ended badly, from its stderr; `undefined` when it exited 0. */
const streamFailure = (stream: Stream, operation: string, path: string) =>
  Effect.flatMap(stream.started.exit, (exit) =>
    exit.code === 0 ? Effect.succeed(undefined) : Effect.map(
      Streams.readAll(stream.started.stderr),
      (stderr) => {
        const lines = stderr.toString("utf8").split("\n").filter((line) =>
          !/records (in|out)|bytes .* copied/.test(line)
        )
        return toolError(operation, path, lines.join("\n").trim() || `dd exited with ${exit.code}`)
      }
    ))

const makeFile = (context: Context, path: string, flags: OpenFlags): SandboxFile => {
  const { target } = context
  const lock = Effect.unsafeMakeSemaphore(1)
  let closed = false
  let reader: Stream | undefined = undefined
  /** Data already read from the reader, ending at `reader.position` (chunks, oldest first). */
  let history: Array<Buffer> = []
  let historyBytes = 0
  let eof: number | undefined = undefined
  let writer: Stream | undefined = undefined
  const parked = new Map<number, Uint8Array>()
  let parkedBytes = 0

  const startStream = (argv: ReadonlyArray<string>, position: number, operation: string) =>
    Effect.gen(function*() {
      const scope = yield* Scope.fork(context.scope, ExecutionStrategy.sequential)
      const started = yield* Exec.start(target, {
        argv,
        env: ["LC_ALL=C"],
        user: context.user,
        cwd: "/",
        command: "dd",
        outputBuffer: READ_AHEAD
      })
        .pipe(Scope.extend(scope), Effect.onError(() => Scope.close(scope, Exit.void)))
      if (started._tag === "NotStarted") {
        yield* Scope.close(scope, Exit.void)
        return yield* Effect.fail(
          new SandboxError({
            reason: "Unsupported",
            operation,
            path,
            detail: `file contents are moved with dd in the container: ${started.message.trim()}`
          })
        )
      }
      return { started, scope, start: position, position } satisfies Stream
    })

  const stopReader = Effect.suspend(() => {
    const current = reader
    reader = undefined
    history = []
    historyBytes = 0
    return current === undefined ? Effect.void : closeStream(current)
  })

  const startReader = (offset: number) =>
    Effect.flatMap(
      startStream(
        offset === 0
          ? ["dd", `if=${path}`, `bs=${BLOCK}`]
          : ["dd", `if=${path}`, `bs=${BLOCK}`, `skip=${offset}`, "iflag=skip_bytes"],
        offset,
        "read"
      ),
      (stream) =>
        Effect.sync(() => {
          reader = stream
          history = []
          historyBytes = 0
          eof = undefined
        })
    )

  /** Ends the writer: stdin EOF, wait for dd, report its failure. */
  const finishWriter = Effect.suspend(() => {
    const current = writer
    if (current === undefined) return Effect.void
    writer = undefined
    return Streams.halfClose(current.started.socket).pipe(
      Effect.zipRight(streamFailure(current, "write", path)),
      Effect.ensuring(closeStream(current)),
      Effect.flatMap((failure) => (failure === undefined ? Effect.void : Effect.fail(failure)))
    )
  })

  const startWriter = (offset: number) =>
    Effect.flatMap(
      startStream(
        flags.append === true
          ? ["dd", `of=${path}`, `bs=${BLOCK}`, "oflag=append", "conv=notrunc"]
          : offset === 0
          ? ["dd", `of=${path}`, `bs=${BLOCK}`, "conv=notrunc"]
          : ["dd", `of=${path}`, `bs=${BLOCK}`, `seek=${offset}`, "oflag=seek_bytes", "conv=notrunc"],
        offset,
        "write"
      ),
      (stream) => Effect.sync(() => (writer = stream))
    )

  /**
   * A write that arrived after later data was streamed, and does not overlap what the writer
   * streamed since it started: a short-lived writer of its own, so the main one keeps going.
   */
  const sideWrite = (offset: number, data: Uint8Array) =>
    Effect.flatMap(
      startStream(
        ["dd", `of=${path}`, `bs=${BLOCK}`, `seek=${offset}`, "oflag=seek_bytes", "conv=notrunc"],
        offset,
        "write"
      ),
      (stream) =>
        write(stream, data).pipe(
          Effect.zipRight(Streams.halfClose(stream.started.socket)),
          Effect.zipRight(streamFailure(stream, "write", path)),
          Effect.ensuring(closeStream(stream)),
          Effect.flatMap((failure) => (failure === undefined ? Effect.void : Effect.fail(failure)))
        )
    )

  /** Writes at the writer's position, then whatever parked data now follows. */
  const writeAt = (offset: number, data: Uint8Array): Effect.Effect<void, SandboxError> =>
    Effect.gen(function*() {
      if (
        writer !== undefined && flags.append !== true && offset < writer.position &&
        offset + data.length <= writer.start
      ) {
        return yield* sideWrite(offset, data)
      }
      if (writer === undefined || (flags.append !== true && writer.position !== offset)) {
        yield* finishWriter
        yield* startWriter(offset)
      }
      const stream = writer!
      if (yield* Deferred.isDone(stream.started.ended)) {
        // dd is gone before its input ended: report why
        yield* finishWriter
        return yield* Effect.fail(
          new SandboxError({ reason: "TransportFailed", operation: "write", path, detail: "the writer ended early" })
        )
      }
      yield* write(stream, data)
      stream.position = offset + data.length
      let next = parked.get(stream.position)
      while (next !== undefined) {
        parked.delete(stream.position)
        parkedBytes -= next.length
        yield* write(stream, next)
        stream.position += next.length
        next = parked.get(stream.position)
      }
    })

  /** Everything written so far is in the file (or its failure reported). */
  const flush = Effect.gen(function*() {
    while (parked.size > 0) {
      const offset = Math.min(...parked.keys())
      const data = parked.get(offset)!
      parked.delete(offset)
      parkedBytes -= data.length
      yield* writeAt(offset, data)
    }
    yield* finishWriter
    // what we read before may have changed
    yield* stopReader
  })

  const use = <A>(operation: string, effect: Effect.Effect<A, SandboxError>) =>
    lock.withPermits(1)(Effect.suspend(() =>
      closed
        ? Effect.fail(new SandboxError({ reason: "Closed", operation, path, detail: "the file is closed" }))
        : effect
    ))

  const read = (offset: number, length: number): Effect.Effect<Uint8Array, SandboxError> =>
    Effect.gen(function*() {
      if (flags.read !== true) {
        return yield* Effect.fail(
          new SandboxError({ reason: "PermissionDenied", operation: "read", path, detail: "not open for reading" })
        )
      }
      if (writer !== undefined || parked.size > 0) yield* flush
      if (length <= 0) return new Uint8Array(0)
      if (eof !== undefined && offset >= eof) return new Uint8Array(0)
      if (reader !== undefined) {
        const historyStart = reader.position - historyBytes
        if (offset >= historyStart && offset < reader.position) {
          // a read that arrived late: serve what we still have, then continue from the stream
          const early = fromHistory(offset - historyStart, length)
          if (early.length === length || eof !== undefined) return new Uint8Array(early)
          const rest = yield* read(reader.position, length - early.length)
          return Buffer.concat([early, rest])
        }
        if (offset < historyStart || offset > reader.position + SKIP_LIMIT) yield* stopReader
      }
      if (reader === undefined) yield* startReader(offset)
      const stream = reader!
      while (stream.position < offset) {
        const skipped = yield* readFrom(stream.started.stdout, Math.min(offset - stream.position, BLOCK * 4))
        if (skipped === undefined) break
        stream.position += skipped.length
        remember(skipped)
      }
      const data = stream.position === offset ? yield* readFrom(stream.started.stdout, length) : undefined
      if (data === undefined || data.length < length) {
        const failure = yield* streamFailure(stream, "read", path)
        if (failure !== undefined) {
          yield* stopReader
          return yield* Effect.fail(failure)
        }
        eof = stream.position + (data?.length ?? 0)
      }
      if (data === undefined) return new Uint8Array(0)
      stream.position += data.length
      remember(data)
      return new Uint8Array(data.buffer, data.byteOffset, data.length)
    })

  /** `length` bytes (or fewer, at its end) of the history from `start`, copying only those. */
  const fromHistory = (start: number, length: number): Buffer => {
    const parts: Array<Buffer> = []
    let skip = start
    let wanted = length
    for (const chunk of history) {
      if (wanted <= 0) break
      if (skip >= chunk.length) {
        skip -= chunk.length
        continue
      }
      const part = chunk.subarray(skip, skip + wanted)
      parts.push(part)
      wanted -= part.length
      skip = 0
    }
    return Buffer.concat(parts)
  }

  const remember = (data: Buffer) => {
    history.push(data)
    historyBytes += data.length
    while (history.length > 1 && historyBytes - history[0]!.length >= HISTORY_LIMIT) {
      historyBytes -= history.shift()!.length
    }
  }

  const agentPath = (operation: string) => (args: ReadonlyArray<string>, op: string) =>
    context.agent.call(operation, path, op, [path, ...args])

  return {
    read: (offset, length) => use("read", read(offset, length)),
    write: (offset, data) =>
      use(
        "write",
        Effect.suspend(() => {
          if (flags.write !== true && flags.append !== true) {
            return Effect.fail(
              new SandboxError({ reason: "PermissionDenied", operation: "write", path, detail: "not open for writing" })
            )
          }
          if (data.length === 0) return Effect.void
          eof = undefined
          if (
            flags.append !== true && writer !== undefined && offset > writer.position &&
            parkedBytes + data.length <= PARKED_LIMIT
          ) {
            // a write that arrived early: keep it until the gap before it is written
            parked.set(offset, new Uint8Array(data))
            parkedBytes += data.length
            return Effect.void
          }
          if (reader !== undefined) return Effect.zipRight(stopReader, writeAt(offset, data))
          return writeAt(offset, data)
        })
      ),
    stat: use(
      "fstat",
      Effect.zipRight(
        flush,
        Effect.flatMap(agentPath("fstat")([], "st"), (fields) => statResult("fstat", path, fields))
      )
    ),
    setStat: (attributes) =>
      use("fsetstat", Effect.zipRight(flush, setStatCall(context.agent, "fsetstat", path, attributes))),
    sync: use("fsync", Effect.zipRight(flush, Effect.asVoid(agentPath("fsync")([], "sy")))),
    close: lock.withPermits(1)(Effect.suspend(() => {
      if (closed) return Effect.void
      closed = true
      return flush.pipe(
        Effect.ensuring(Effect.suspend(() => {
          parked.clear()
          return stopReader
        })),
        Effect.timeout(Duration.minutes(5)),
        Effect.catchTag("TimeoutException", () =>
          Effect.fail(
            new SandboxError({ reason: "TransportFailed", operation: "close", path, detail: "closing took too long" })
          ))
      )
    }))
  }
}

const statResult = (operation: string, path: string, fields: ReadonlyArray<Buffer>) => {
  const attributes = fields[0] === undefined ? undefined : parseStat(fields[0].toString("latin1"))
  return attributes === undefined
    ? Effect.fail(
      new SandboxError({ reason: "TransportFailed", operation, path, detail: "unexpected stat output" })
    )
    : Effect.succeed(attributes)
}

const setStatCall = (agent: Agent, operation: string, path: string, attributes: SetAttributes) => {
  const number = (value: number | undefined) => value === undefined ? "-" : String(Math.max(0, Math.floor(value)))
  return Effect.asVoid(agent.call(operation, path, "ss", [
    path,
    number(attributes.size),
    number(attributes.uid),
    number(attributes.gid),
    attributes.mode === undefined ? "-" : octal(attributes.mode),
    number(attributes.atime),
    number(attributes.mtime)
  ]))
}

const flagLetters = (flags: OpenFlags): string => {
  let letters = ""
  if (flags.read === true) letters += "r"
  if (flags.write === true) letters += "w"
  if (flags.append === true) letters += "a"
  if (flags.create === true) letters += "c"
  if (flags.truncate === true) letters += "t"
  if (flags.exclusive === true) letters += "x"
  return letters === "" ? "r" : letters
}

/** @internal */
export const make = (context: Context): SandboxFileSystem => {
  const { agent } = context
  const resolve = (path: string) => Path.posix.resolve(context.workdir, path)
  const call = (operation: string, path: string, op: string, args: ReadonlyArray<string>) =>
    agent.call(operation, path, op, args)
  const stat = (operation: string, op: "st" | "ls") => (path: string) =>
    Effect.flatMap(call(operation, path, op, [resolve(path)]), (fields) => statResult(operation, path, fields))

  return {
    stat: stat("stat", "st"),
    lstat: stat("lstat", "ls"),
    open: (path, flags, mode) =>
      Effect.suspend(() => {
        const absolute = resolve(path)
        const umask = octal((~(mode ?? 0o666) & 0o777) | 0o022)
        return Effect.flatMap(call("open", path, "op", [absolute, flagLetters(flags), umask]), (fields) =>
          Effect.map(
            statResult("open", path, fields),
            () => makeFile(context, absolute, flags)
          ))
      }),
    readDirectory: (path) =>
      Effect.suspend(() => {
        const absolute = resolve(path)
        return Effect.flatMap(call("readdir", path, "rd", [absolute]), (fields) => {
          const count = Number(fields[0]?.toString("utf8"))
          const names = fields.slice(1, 1 + count)
          const blob = fields[1 + count]
          if (!Number.isInteger(count) || names.length !== count || blob === undefined || blob[0] !== 0x73) {
            return Effect.fail(
              new SandboxError({ reason: "TransportFailed", operation: "readdir", path, detail: "unexpected listing" })
            )
          }
          const base = Buffer.from(absolute.endsWith("/") ? absolute : `${absolute}/`)
          return Effect.succeed(parseListing(names, base, blob.subarray(1)))
        })
      }),
    makeDirectory: (path, mode) =>
      Effect.asVoid(call("mkdir", path, "mk", [resolve(path), octal((mode ?? 0o777) & ~0o022)])),
    removeDirectory: (path) => Effect.asVoid(call("rmdir", path, "rmd", [resolve(path)])),
    remove: (path) => Effect.asVoid(call("remove", path, "rm", [resolve(path)])),
    rename: (oldPath, newPath, options) =>
      Effect.asVoid(
        call("rename", oldPath, options?.overwrite === true ? "mvo" : "mv", [resolve(oldPath), resolve(newPath)])
      ),
    realPath: (path) =>
      Effect.map(call("realpath", path, "rp", [resolve(path)]), (fields) => fields[0]!.toString("utf8")),
    readLink: (path) =>
      Effect.map(call("readlink", path, "rl", [resolve(path)]), (fields) => fields[0]?.toString("utf8") ?? ""),
    symlink: (target, linkPath) => Effect.asVoid(call("symlink", linkPath, "sl", [target, resolve(linkPath)])),
    link: (existingPath, newPath) =>
      Effect.asVoid(call("link", newPath, "hl", [resolve(existingPath), resolve(newPath)])),
    setStat: (path, attributes) => setStatCall(agent, "setstat", resolve(path), attributes),
    statFileSystem: (path) =>
      Effect.flatMap(
        call("statvfs", path, "sv", [resolve(path)]),
        (fields): Effect.Effect<FileSystemStats, SandboxError> => {
          const [blockSize, fragmentSize, blocks, blocksFree, blocksAvailable, files, filesFree, nameMax] =
            (fields[0]?.toString("latin1") ?? "").trim().split(" ").map(Number)
          if (nameMax === undefined || [blockSize, blocks].some((n) => !Number.isFinite(n))) {
            return Effect.fail(
              new SandboxError({ reason: "TransportFailed", operation: "statvfs", path, detail: "unexpected output" })
            )
          }
          return Effect.succeed({
            blockSize: blockSize!,
            fragmentSize: fragmentSize!,
            blocks: blocks!,
            blocksFree: blocksFree!,
            blocksAvailable: blocksAvailable!,
            files: files!,
            filesFree: filesFree!,
            filesAvailable: filesFree!,
            fsid: 0,
            flags: 0,
            nameMax
          })
        }
      )
  }
}
