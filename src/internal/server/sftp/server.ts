/**
 * An SFTP version 3 server over a byte stream, serving a `SandboxFileSystem`.
 *
 * Requests are read as packets and processed concurrently; replies go out as requests complete
 * (SFTP lets replies come in any order), except that requests on one handle keep their order
 * where it matters and are answered in the order they came (see `handles.ts`). Replies of one turn
 * of the event loop are written together. At most `maxInFlight` requests are processed at once:
 * past that the input is not read, so the transport's flow control (the SSH channel window, a
 * pipe) holds the client back. A request also keeps its place until its reply has been taken by
 * the output, so a client that does not read replies stops being read from too.
 *
 * The session ends when the input ends (after the outstanding replies are written) or when a
 * packet is malformed; every file the session opened is closed when it ends, however it ends.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import type { Readable, Writable } from "node:stream"
import type { DirectoryEntry, FileAttributes, OpenFlags, SandboxFileSystem } from "../../../Sandbox.js"
import type { SandboxError } from "../../../SshError.js"
import * as ReadBuffers from "../../readBuffers.js"
import {
  DEFAULT_MAX_HANDLES,
  DEFAULT_MAX_IN_FLIGHT,
  EXTENSIONS,
  FX,
  FXF,
  FXP,
  MAX_DATA_LENGTH,
  MAX_PACKET_LENGTH,
  READDIR_BATCH,
  READDIR_MAX_BYTES,
  type StatusCode,
  statusMessages
} from "../../sftpProtocol.js"
import {
  encodeAttrs,
  encodeDataHeader,
  encodeExtendedUint64s,
  encodeHandle,
  encodeName,
  encodeStatus,
  encodeVersion,
  handleBytes,
  handleNumber,
  MalformedPacket,
  type NameEntry,
  PacketFramer,
  readAttributes,
  Reader
} from "./codec.js"
import {
  type Access,
  type DirectoryHandle,
  type FileHandle,
  type Handle,
  HandleTable,
  Ordering,
  type ReplyTurn
} from "./handles.js"
import { longname } from "./longname.js"

/**
 * Why a session ended early: the peer broke the protocol, or the input failed.
 *
 * @internal
 */
export class SftpSessionError extends Data.TaggedError("SftpSessionError")<{
  readonly reason: "Malformed" | "InputFailed"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `SFTP session ended (${this.reason}): ${this.detail}`
  }
}

/** @internal */
export interface SftpServerOptions {
  readonly fs: SandboxFileSystem
  /** Default `DEFAULT_MAX_IN_FLIGHT`. */
  readonly maxInFlight?: number | undefined
  /** Default 1024. */
  readonly maxHandles?: number | undefined
  /**
   * The output has no use for a chunk's bytes once it called back for it (an ssh2 channel copies
   * them into its packets): file bytes lent for DATA replies are then reused. Default false.
   */
  readonly outputCopiesWrites?: boolean | undefined
}

/** A reply: one packet, or a DATA header followed by the data as the sandbox returned it. */
type Reply = Buffer | readonly [Buffer, Uint8Array]

/** A request answered with a status other than the one its `SandboxError` maps to. */
class Status {
  constructor(readonly code: StatusCode, readonly message: string = statusMessages[code]) {}
}

type Job = Effect.Effect<Reply, SandboxError | Status>

/**
 * The one place where sandbox errors become SFTP status codes.
 *
 * @internal
 */
export const statusOf = (error: SandboxError): Status => {
  switch (error.reason) {
    case "NotFound":
      return new Status(FX.NO_SUCH_FILE)
    case "PermissionDenied":
      return new Status(FX.PERMISSION_DENIED)
    case "Unsupported":
      return new Status(FX.OP_UNSUPPORTED)
    default:
      return new Status(FX.FAILURE, error.reason)
  }
}

const ok = (id: number) => encodeStatus(id, FX.OK, statusMessages[FX.OK])
const invalidHandle = Effect.fail(new Status(FX.FAILURE, "Invalid handle"))
const tooManyHandles = new Status(FX.FAILURE, "Too many open handles")

const openFlags = (pflags: number): OpenFlags => ({
  read: (pflags & FXF.READ) !== 0,
  write: (pflags & FXF.WRITE) !== 0,
  append: (pflags & FXF.APPEND) !== 0,
  create: (pflags & FXF.CREAT) !== 0,
  truncate: (pflags & FXF.TRUNC) !== 0,
  exclusive: (pflags & FXF.EXCL) !== 0
})

const badOffset = Effect.fail(new Status(FX.FAILURE, "Offset out of range"))

/** Replies smaller than this are merged into one write with their neighbours. */
const SMALL_REPLY = 16 * 1024

/** Reply bytes the output may hold before requests wait (and the input stops being read). */
const OUTPUT_LIMIT = 4 * 1024 * 1024

/**
 * File reads under way at once, for DATA replies. A read starts only while the output is below
 * its limit, so a session holds at most `OUTPUT_LIMIT` plus this many reads of file bytes (~6 MiB),
 * whatever the client keeps outstanding: OpenSSH's `sftp get` keeps 64 requests of 255 KiB out,
 * which had the server hold 16–20 MiB per session. Adjacent reads of a file are still done as one
 * (`directFile.ts`).
 */
const READS_AT_ONCE = 8

/**
 * Replies on their way out. Replies produced in the same turn of the event loop go out together
 * (small ones merged into one buffer), as OpenSSH's output queue does: one write to the channel
 * or pipe instead of one per reply.
 *
 * `ready` waits while more than `OUTPUT_LIMIT` bytes of replies are queued or not yet taken by the
 * transport, so a client that does not read its replies stops being read from. The bound is in
 * bytes rather than the stream's `drain` (which waits for an empty buffer): the sandbox keeps
 * working while the transport drains, instead of the two taking turns. `flushed` waits until every
 * reply has been taken. A closed or failed output counts as flushed: nobody is listening any more.
 * `reading` holds back the file reads that would add to the replies while there is no room.
 */
class Output {
  private queue: Array<Uint8Array> = []
  private scheduled: ReturnType<typeof setImmediate> | undefined = undefined
  /** Bytes queued or written but not yet taken by the transport. */
  private buffered = 0
  private closed = false
  private readonly belowLimit = Effect.unsafeMakeLatch(true)
  private readonly idle = Effect.unsafeMakeLatch(true)

  private readonly onClose = () => {
    this.closed = true
    this.queue = []
    if (this.scheduled !== undefined) clearImmediate(this.scheduled)
    this.scheduled = undefined
    this.buffered = 0
    this.belowLimit.unsafeOpen()
    this.idle.unsafeOpen()
  }

  private taken(length: number): void {
    if (this.closed) return
    this.buffered -= length
    if (this.buffered < OUTPUT_LIMIT) this.belowLimit.unsafeOpen()
    if (this.buffered === 0) this.idle.unsafeOpen()
  }

  private write(bytes: Uint8Array): void {
    const length = bytes.length
    this.output.write(bytes, () => {
      this.taken(length)
      if (this.copiesWrites) ReadBuffers.giveBack(bytes)
    })
  }

  /** Merges small replies into one write; their own buffers are free once copied. */
  private writeMerged(small: ReadonlyArray<Uint8Array>, bytes: number): void {
    if (small.length === 1) return this.write(small[0]!)
    this.write(Buffer.concat(small, bytes))
    for (const reply of small) ReadBuffers.giveBack(reply)
  }

  private readonly flush = () => {
    this.scheduled = undefined
    const queue = this.queue
    this.queue = []
    if (this.closed || this.output.destroyed || this.output.writableEnded) return this.onClose()
    let small: Array<Uint8Array> = []
    let smallBytes = 0
    // one writev for the whole turn where the stream supports it (sockets, pipes)
    this.output.cork()
    for (const bytes of queue) {
      if (bytes.length >= SMALL_REPLY) {
        if (small.length > 0) this.writeMerged(small, smallBytes)
        small = []
        smallBytes = 0
        this.write(bytes)
      } else {
        small.push(bytes)
        smallBytes += bytes.length
      }
    }
    if (small.length > 0) this.writeMerged(small, smallBytes)
    this.output.uncork()
  }

  /**
   * `copiesWrites`: the output is done with a chunk's bytes when it calls back (an ssh2 channel,
   * which copies them into its packets), so file bytes lent by `ReadBuffers` go back to the pool
   * then. Not for streams that may keep a chunk after that (a `PassThrough` pushes it on).
   */
  constructor(private readonly output: Writable, private readonly copiesWrites: boolean) {
    output.on("close", this.onClose)
    output.on("error", this.onClose)
  }

  send(reply: Reply): void {
    if (this.closed) return
    if (Buffer.isBuffer(reply)) {
      this.queue.push(reply)
      this.buffered += reply.length
    } else {
      this.queue.push(reply[0], reply[1])
      this.buffered += reply[0].length + reply[1].length
    }
    this.idle.unsafeClose()
    if (this.buffered >= OUTPUT_LIMIT) this.belowLimit.unsafeClose()
    if (this.scheduled === undefined) this.scheduled = setImmediate(this.flush)
  }

  readonly ready: Effect.Effect<void> = this.belowLimit.await
  readonly flushed: Effect.Effect<void> = this.idle.await

  private readonly readers = Effect.unsafeMakeSemaphore(READS_AT_ONCE)

  /** Runs a read whose bytes become a reply once the output has room, `READS_AT_ONCE` at a time. */
  reading<A, E>(read: Effect.Effect<A, E>): Effect.Effect<A, E> {
    return Effect.zipRight(this.ready, this.readers.withPermits(1)(read))
  }

  dispose(): void {
    this.output.removeListener("close", this.onClose)
    this.output.removeListener("error", this.onClose)
    this.onClose()
  }
}

/**
 * Serves one SFTP session: reads requests from `input` and writes replies to `output` until
 * `input` ends. Succeeds once every request has been answered and the replies are flushed (the
 * caller then ends the transport); fails when the peer sends a malformed packet or the input
 * fails. `output` is not ended.
 *
 * @internal
 */
export const serve = (
  input: Readable,
  output: Writable,
  options: SftpServerOptions
): Effect.Effect<void, SftpSessionError> =>
  Effect.gen(function*() {
    const fs = options.fs
    const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT
    const handles = new HandleTable(options.maxHandles ?? DEFAULT_MAX_HANDLES)
    // Registered first, so it runs after the request fibers below have been interrupted.
    yield* Effect.addFinalizer(() => handles.closeAll)
    const out = yield* Effect.acquireRelease(
      Effect.sync(() => new Output(output, options.outputCopiesWrites === true)),
      (o) => Effect.sync(() => o.dispose())
    )
    const fibers = yield* FiberSet.make<void>()
    // Pooled packet buffers: one per request in flight, plus the one being filled.
    const framer = new PacketFramer(MAX_PACKET_LENGTH, maxInFlight + 2)
    let initialized = false

    // --- requests ------------------------------------------------------------------------------

    const fileHandle = (reader: Reader): FileHandle | undefined => {
      const handle = handles.get(handleNumber(reader.bytes()))
      return handle?._tag === "File" ? handle : undefined
    }
    const anyHandle = (reader: Reader): Handle | undefined => handles.get(handleNumber(reader.bytes()))
    /** The reply-order place taken by the request being prepared, if it is on a handle. */
    let turn: ReplyTurn | undefined = undefined
    const onHandle = <A, E>(handle: Handle, access: Access, effect: Effect.Effect<A, E>) => {
      turn = handle.ordering.replyTurn()
      return handle.ordering.enter(access, effect)
    }

    const statusReply = (id: number, effect: Effect.Effect<unknown, SandboxError | Status>): Job =>
      Effect.as(effect, ok(id))

    const registerHandle = (handle: Handle, id: number): Effect.Effect<Buffer, Status> =>
      Effect.suspend(() => {
        if (handles.full) return Effect.fail(tooManyHandles)
        return Effect.succeed(encodeHandle(id, handleBytes(handles.add(handle))))
      })

    const open = (id: number, path: string, pflags: number, permissions: number | undefined): Job =>
      Effect.suspend(() => {
        if (handles.full) return Effect.fail(tooManyHandles)
        const flags = openFlags(pflags)
        // The open itself stays interruptible (opening a FIFO can block until a writer comes), but
        // once the sandbox hands a file over it reaches the handle table (or is closed) atomically,
        // so no opened file escapes the session.
        return Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(
            restore(fs.open(path, flags, permissions === undefined ? 0o666 : permissions & 0o7777)),
            (file) =>
              registerHandle(
                { _tag: "File", path, file, append: flags.append === true, ordering: new Ordering() },
                id
              ).pipe(Effect.tapError(() => Effect.ignore(file.close)))
          )
        )
      })

    const openDirectory = (id: number, path: string): Job =>
      Effect.gen(function*() {
        if (handles.full) return yield* Effect.fail(tooManyHandles)
        const [entries, self, parent] = yield* Effect.all([
          fs.readDirectory(path),
          Effect.option(fs.stat(path)),
          Effect.option(fs.stat(path.endsWith("/") ? `${path}..` : `${path}/..`))
        ], { concurrency: 3 })
        const dots: Array<DirectoryEntry> = []
        if (self._tag === "Some") dots.push({ name: ".", attributes: self.value })
        if (parent._tag === "Some") dots.push({ name: "..", attributes: parent.value })
        const handle: DirectoryHandle = {
          _tag: "Directory",
          path,
          entries: dots.length === 0 ? entries : [...dots, ...entries],
          position: 0,
          ordering: new Ordering()
        }
        return yield* registerHandle(handle, id)
      })

    const readDirectory = (id: number, handle: DirectoryHandle): Job =>
      Effect.suspend(() => {
        if (handle.position >= handle.entries.length) return Effect.fail(new Status(FX.EOF))
        const now = Math.floor(Date.now() / 1000)
        const batch: Array<NameEntry> = []
        let bytes = 0
        while (handle.position < handle.entries.length && batch.length < READDIR_BATCH && bytes < READDIR_MAX_BYTES) {
          const entry = handle.entries[handle.position++]!
          const line = longname(entry.name, entry.attributes, now)
          bytes += entry.name.length * 3 + line.length * 3 + 48
          batch.push({ filename: entry.name, longname: line, attributes: entry.attributes })
        }
        return Effect.succeed(encodeName(id, batch))
      })

    const attrsReply = (id: number, effect: Effect.Effect<FileAttributes, SandboxError>): Job =>
      Effect.map(effect, (attributes) => encodeAttrs(id, attributes))

    const close = (id: number, number: number | undefined): Job => {
      const handle = handles.get(number)
      if (handle === undefined || number === undefined) return invalidHandle
      // Gone from the table at once: later requests on it fail, as after close(2).
      handles.remove(number)
      return statusReply(
        id,
        onHandle(handle, { _tag: "Barrier" }, handle._tag === "File" ? handle.file.close : Effect.void)
      )
    }

    // An offset is checked before the request takes its place in the handle's order: a request
    // that never runs must not hold back the ones after it.
    const read = (id: number, handle: FileHandle, offset: number, length: number): Job => {
      // past any file there can be (as lseek + read past the end: end of file)
      if (!Number.isSafeInteger(offset)) return Effect.fail(new Status(FX.EOF))
      const wanted = Math.min(length, MAX_DATA_LENGTH)
      const access = { _tag: "Read", start: offset, end: offset + wanted } as const
      return onHandle(handle, access, out.reading(handle.file.read(offset, wanted)))
        .pipe(
          Effect.flatMap((data): Job =>
            data.length === 0
              ? Effect.fail(new Status(FX.EOF))
              : Effect.succeed([encodeDataHeader(id, data.length), data] as const)
          )
        )
    }

    const write = (id: number, handle: FileHandle, offset: number, data: Uint8Array): Job => {
      if (!Number.isSafeInteger(offset)) return badOffset
      const access: Access = handle.append
        ? { _tag: "Write", start: 0, end: Number.POSITIVE_INFINITY }
        : { _tag: "Write", start: offset, end: offset + data.length }
      return statusReply(id, onHandle(handle, access, handle.file.write(offset, data)))
    }

    const statvfsReply = (id: number, path: string): Job =>
      Effect.map(fs.statFileSystem(path), (s) =>
        encodeExtendedUint64s(id, [
          s.blockSize,
          s.fragmentSize,
          s.blocks,
          s.blocksFree,
          s.blocksAvailable,
          s.files,
          s.filesFree,
          s.filesAvailable,
          s.fsid,
          s.flags,
          s.nameMax
        ]))

    const nameReply = (id: number, effect: Effect.Effect<string, SandboxError>): Job =>
      Effect.map(effect, (name) => encodeName(id, [{ filename: name, longname: name }]))

    const extended = (id: number, reader: Reader): Job => {
      const name = reader.string()
      switch (name) {
        case "posix-rename@openssh.com": {
          const from = reader.string()
          const to = reader.string()
          return statusReply(id, fs.rename(from, to, { overwrite: true }))
        }
        case "statvfs@openssh.com":
          return statvfsReply(id, reader.string())
        case "fstatvfs@openssh.com": {
          const handle = anyHandle(reader)
          return handle === undefined ? invalidHandle : statvfsReply(id, handle.path)
        }
        case "hardlink@openssh.com": {
          const from = reader.string()
          const to = reader.string()
          return statusReply(id, fs.link(from, to))
        }
        case "fsync@openssh.com": {
          const handle = fileHandle(reader)
          return handle === undefined ? invalidHandle : statusReply(
            id,
            onHandle(handle, { _tag: "Barrier" }, handle.file.sync)
          )
        }
        case "limits@openssh.com":
          return Effect.succeed(
            encodeExtendedUint64s(id, [MAX_PACKET_LENGTH, MAX_DATA_LENGTH, MAX_DATA_LENGTH, handles.max])
          )
        default:
          return Effect.fail(new Status(FX.OP_UNSUPPORTED))
      }
    }

    /** Decodes one request now (in arrival order) into the job that answers it. */
    const prepare = (type: number, id: number, reader: Reader): Job => {
      switch (type) {
        case FXP.OPEN: {
          const path = reader.string()
          const pflags = reader.uint32()
          const { permissions } = readAttributes(reader)
          return open(id, path, pflags, permissions)
        }
        case FXP.CLOSE:
          return close(id, handleNumber(reader.bytes()))
        case FXP.READ: {
          const handle = fileHandle(reader)
          const offset = reader.uint64()
          const length = reader.uint32()
          return handle === undefined ? invalidHandle : read(id, handle, offset, length)
        }
        case FXP.WRITE: {
          const handle = fileHandle(reader)
          const offset = reader.uint64()
          const data = reader.bytes()
          return handle === undefined ? invalidHandle : write(id, handle, offset, data)
        }
        case FXP.LSTAT:
          return attrsReply(id, fs.lstat(reader.string()))
        case FXP.STAT:
          return attrsReply(id, fs.stat(reader.string()))
        case FXP.FSTAT: {
          const handle = anyHandle(reader)
          if (handle === undefined) return invalidHandle
          return attrsReply(
            id,
            handle._tag === "File" ? onHandle(handle, { _tag: "Barrier" }, handle.file.stat) : fs.stat(handle.path)
          )
        }
        case FXP.SETSTAT: {
          const path = reader.string()
          const { set } = readAttributes(reader)
          return statusReply(id, fs.setStat(path, set))
        }
        case FXP.FSETSTAT: {
          const handle = anyHandle(reader)
          const { set } = readAttributes(reader)
          if (handle === undefined) return invalidHandle
          return statusReply(
            id,
            handle._tag === "File"
              ? onHandle(handle, { _tag: "Barrier" }, handle.file.setStat(set))
              : fs.setStat(handle.path, set)
          )
        }
        case FXP.OPENDIR:
          return openDirectory(id, reader.string())
        case FXP.READDIR: {
          const handle = anyHandle(reader)
          return handle?._tag === "Directory"
            ? onHandle(handle, { _tag: "Barrier" }, readDirectory(id, handle))
            : invalidHandle
        }
        case FXP.REMOVE:
          return statusReply(id, fs.remove(reader.string()))
        case FXP.MKDIR: {
          const path = reader.string()
          const { permissions } = readAttributes(reader)
          return statusReply(id, fs.makeDirectory(path, permissions === undefined ? 0o777 : permissions & 0o7777))
        }
        case FXP.RMDIR:
          return statusReply(id, fs.removeDirectory(reader.string()))
        case FXP.REALPATH: {
          const path = reader.string()
          return nameReply(id, fs.realPath(path === "" ? "." : path))
        }
        case FXP.RENAME: {
          const from = reader.string()
          const to = reader.string()
          return statusReply(id, fs.rename(from, to))
        }
        case FXP.READLINK:
          return nameReply(id, fs.readLink(reader.string()))
        case FXP.SYMLINK: {
          // OpenSSH sends the link's target first and the link's path second: the reverse of the
          // draft's order, and what every OpenSSH-compatible client does (OpenSSH PROTOCOL §4.1).
          const target = reader.string()
          const linkPath = reader.string()
          return statusReply(id, fs.symlink(target, linkPath))
        }
        case FXP.EXTENDED:
          return extended(id, reader)
        default:
          return Effect.fail(new Status(FX.OP_UNSUPPORTED))
      }
    }

    /** Requests being processed; the input is not read while there are `maxInFlight`. */
    let inFlight = 0
    /** The reader stopped because every slot was taken; a finishing request restarts it. */
    let waitingForSlot = false

    const malformed = (error: MalformedPacket) =>
      new SftpSessionError({ reason: "Malformed", detail: error.detail, cause: error })

    /**
     * Runs a job and sends its reply, in its handle's reply order. The packet's buffer goes back to
     * the pool once the job is done with it — not when interrupted: the sandbox may still be
     * reading it then. The request keeps its slot until the output has room for more replies.
     */
    const answer = (id: number, job: Job, packet: Buffer, turn: ReplyTurn | undefined): Effect.Effect<void> => {
      const deliver = (reply: Reply): Effect.Effect<void> => {
        const send = Effect.sync(() => {
          framer.release(packet)
          out.send(reply)
          turn?.done.unsafeOpen()
        })
        return Effect.zipRight(
          turn?.previous === undefined ? send : Effect.zipRight(turn.previous.await, send),
          out.ready
        )
      }
      return Effect.matchCauseEffect(job, {
        onSuccess: deliver,
        onFailure: (cause) => {
          const failure = Cause.failureOption(cause)
          if (failure._tag === "Some") {
            const status = failure.value instanceof Status ? failure.value : statusOf(failure.value)
            return deliver(encodeStatus(id, status.code, status.message))
          }
          if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
          return Effect.zipRight(
            Effect.logWarning("SFTP request failed unexpectedly", cause),
            deliver(encodeStatus(id, FX.FAILURE, statusMessages[FX.FAILURE]))
          )
        }
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          turn?.done.unsafeOpen()
          inFlight--
          if (waitingForSlot) {
            waitingForSlot = false
            drive()
          }
        }))
      )
    }

    // --- packets -------------------------------------------------------------------------------

    const runFork = yield* FiberSet.runtime(fibers)<never>()

    /** Handles one packet synchronously: answers INIT, or starts the request's fiber. */
    const dispatch = (packet: Buffer): void => {
      const reader = new Reader(packet)
      const type = reader.uint8()
      if (!initialized) {
        if (type !== FXP.INIT) throw new MalformedPacket(`request type ${type} before INIT`)
        reader.uint32() // the client's version; we speak 3 whatever it is, as OpenSSH does
        initialized = true
        out.send(encodeVersion(EXTENSIONS))
        return
      }
      if (type === FXP.INIT) throw new MalformedPacket("INIT after initialization")
      const id = reader.uint32()
      turn = undefined
      const job = prepare(type, id, reader)
      inFlight++
      runFork(answer(id, job, packet, turn))
    }

    // The input is taken by hand, chunk by chunk from its "data" events, rather than through
    // `NodeStream.fromReadable`: that drains whatever the stream has buffered into one chunk per
    // pull, and its per-chunk Stream machinery (plus a fiber wake-up per chunk) cost more than the
    // rest of the server on uploads. Nor with `read()`, which concatenates every buffered chunk
    // into a new buffer first: one more copy of every byte uploaded. The input is paused while
    // `maxInFlight` requests are running, so the transport's flow control (channel window, pipe)
    // holds the client back.
    const finished = yield* Deferred.make<void, SftpSessionError>()
    let ended = false
    let inputError: unknown = undefined
    /** Set once the session's outcome is known (or it is being torn down): nothing more is read. */
    let stopped = false
    const finish = (exit: Exit.Exit<void, SftpSessionError>) => {
      stopped = true
      Deferred.unsafeDone(finished, exit)
    }
    const fail = (error: unknown) =>
      finish(error instanceof MalformedPacket ? Exit.fail(malformed(error)) : Exit.die(error))
    let driving = false
    let again = false
    const pending: Array<Buffer> = []
    let next = 0

    /** Dispatches the packets framed so far until every slot is taken. Synchronous. */
    function drive(): void {
      if (stopped) return
      if (driving) {
        again = true
        return
      }
      driving = true
      try {
        do {
          again = false
          dispatchPending()
        } while (again)
      } catch (error) {
        fail(error)
      } finally {
        driving = false
      }
    }
    const dispatchPending = (): void => {
      while (next < pending.length) {
        if (inFlight >= maxInFlight) {
          waitingForSlot = true
          input.pause()
          return
        }
        const packet = pending[next]!
        pending[next++] = undefined as unknown as Buffer
        dispatch(packet)
      }
      pending.length = 0
      next = 0
      if (stopped) return
      if (inputError !== undefined) {
        const detail = String(inputError)
        finish(Exit.fail(new SftpSessionError({ reason: "InputFailed", detail, cause: inputError })))
      } else if (ended) {
        finish(Exit.void)
      } else if (input.isPaused()) {
        input.resume()
      }
    }
    const onData = (chunk: Uint8Array) => {
      if (stopped) return
      try {
        framer.push(chunk, pending)
      } catch (error) {
        return fail(error)
      }
      drive()
    }
    const onEnd = () => {
      ended = true
      drive()
    }
    const onError = (error: unknown) => {
      inputError = error
      onEnd()
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        input.on("data", onData)
        input.on("end", onEnd)
        input.on("close", onEnd)
        input.on("error", onError)
      }),
      () =>
        Effect.sync(() => {
          stopped = true
          input.removeListener("data", onData)
          input.removeListener("end", onEnd)
          input.removeListener("close", onEnd)
          input.removeListener("error", onError)
        })
    )
    yield* Effect.sync(() => {
      if (input.readableEnded || input.destroyed) ended = true
      drive()
    })
    yield* Deferred.await(finished)
    // The client has ended its side: answer what it asked, then hand the replies on.
    yield* FiberSet.awaitEmpty(fibers)
    yield* out.flushed
  }).pipe(Effect.scoped)
