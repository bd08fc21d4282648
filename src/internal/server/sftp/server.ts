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
import * as FileCallbacks from "../../fileCallbacks.js"
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
  type Entry,
  type FileHandle,
  type Handle,
  HandleTable,
  Ordering,
  type Turn
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
  /**
   * Called with each input chunk once the server is done with it: it keeps no view of a chunk
   * after framing it (packets are copied out). Default: nothing.
   */
  readonly releaseInput?: ((chunk: Uint8Array) => void) | undefined
}

/** A reply: one packet, or a DATA header followed by the data as the sandbox returned it. */
type Reply = Buffer | readonly [Buffer, Uint8Array]

/** A request answered with a status other than the one its `SandboxError` maps to. */
class Status {
  constructor(readonly code: StatusCode, readonly message: string = statusMessages[code]) {}
}

type Job = Effect.Effect<Reply, SandboxError | Status>

/** How a file's callback form answers (`fileCallbacks.ts`). */
type Done<A> = (error: SandboxError | undefined, value: A) => void

/**
 * One request, from its arrival until its reply has gone out. It holds one of the session's
 * `maxInFlight` slots and its packet buffer (a WRITE's data is a view of it) until then.
 */
interface Request {
  readonly id: number
  readonly packet: Buffer
  /** Its place in its handle's reply order, for a request on a handle. */
  turn: Turn | undefined
}

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
const statusReply = (id: number, status: Status) => encodeStatus(id, status.code, status.message)
const eof = new Status(FX.EOF)
const unexpected = new Status(FX.FAILURE)
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
 * `whenReady` waits while more than `OUTPUT_LIMIT` bytes of replies are queued or not yet taken by
 * the transport, so a client that does not read its replies stops being read from. The bound is in
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
  /** Waiting for the replies to drop below `OUTPUT_LIMIT`. */
  private readonly waiting: Array<() => void> = []
  private readonly idle = Effect.unsafeMakeLatch(true)

  private readonly onClose = () => {
    this.closed = true
    this.queue = []
    if (this.scheduled !== undefined) clearImmediate(this.scheduled)
    this.scheduled = undefined
    this.buffered = 0
    this.wake()
    this.idle.unsafeOpen()
  }

  private get hasRoom(): boolean {
    return this.closed || this.buffered < OUTPUT_LIMIT
  }

  /** Runs the waiting callbacks while there is room (each may add replies). */
  private wake(): void {
    while (this.waiting.length > 0 && this.hasRoom) this.waiting.shift()!()
  }

  private taken(length: number): void {
    if (this.closed) return
    this.buffered -= length
    if (this.buffered === 0) this.idle.unsafeOpen()
    this.wake()
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
    if (this.scheduled === undefined) this.scheduled = setImmediate(this.flush)
  }

  /** Calls `f` once the replies are below `OUTPUT_LIMIT`: now, if they are. */
  whenReady(f: () => void): void {
    if (this.waiting.length === 0 && this.hasRoom) f()
    else this.waiting.push(f)
  }

  readonly flushed: Effect.Effect<void> = this.idle.await

  private readers = READS_AT_ONCE
  private readonly waitingReaders: Array<(done: () => void) => void> = []
  private readonly readDone = () => {
    this.readers++
    const next = this.waitingReaders.shift()
    if (next !== undefined) this.startRead(next)
  }
  private startRead(read: (done: () => void) => void): void {
    this.readers--
    read(this.readDone)
  }

  /**
   * Starts a read whose bytes become a reply once the output has room, `READS_AT_ONCE` at a time;
   * `read` calls `done` once, when its bytes are in.
   */
  reading(read: (done: () => void) => void): void {
    this.whenReady(() => {
      if (this.readers > 0) this.startRead(read)
      else this.waitingReaders.push(read)
    })
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
    /** Set when the session is torn down: callbacks of file calls still under way do nothing then. */
    let abandoned = false
    // Registered after the fiber set, so it runs before the request fibers are interrupted.
    yield* Effect.addFinalizer(() => Effect.sync(() => (abandoned = true)))
    // Pooled packet buffers: one per request in flight, plus the one being filled.
    const framer = new PacketFramer(MAX_PACKET_LENGTH, maxInFlight + 2)
    let initialized = false

    // --- requests ------------------------------------------------------------------------------

    const fileHandle = (reader: Reader): FileHandle | undefined => {
      const handle = handles.get(handleNumber(reader.bytes()))
      return handle?._tag === "File" ? handle : undefined
    }
    const anyHandle = (reader: Reader): Handle | undefined => handles.get(handleNumber(reader.bytes()))

    /** Registers `request` on `handle` now, in arrival order: its place in the reply order too. */
    const enter = (request: Request, handle: Handle, access: Access): Entry => {
      request.turn = handle.ordering.replyTurn()
      return handle.ordering.enter(access)
    }
    /** `effect` as a request on `handle`: it starts once the earlier conflicting ones are done. */
    const onHandle = <A, E>(request: Request, handle: Handle, access: Access, effect: Effect.Effect<A, E>) => {
      const entry = enter(request, handle, access)
      return Effect.ensuring(
        Effect.zipRight(
          Effect.async<void>((resume) => handle.ordering.whenClear(entry, () => resume(Effect.void))),
          effect
        ),
        Effect.sync(() => handle.ordering.leave(entry))
      )
    }

    const okReply = (id: number, effect: Effect.Effect<unknown, SandboxError | Status>): Job =>
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
                {
                  _tag: "File",
                  path,
                  file,
                  callbacks: FileCallbacks.of(file),
                  append: flags.append === true,
                  ordering: new Ordering()
                },
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

    const close = (request: Request, number: number | undefined): Job => {
      const handle = handles.get(number)
      if (handle === undefined || number === undefined) return invalidHandle
      // Gone from the table at once: later requests on it fail, as after close(2).
      handles.remove(number)
      return okReply(
        request.id,
        onHandle(request, handle, { _tag: "Barrier" }, handle._tag === "File" ? handle.file.close : Effect.void)
      )
    }

    // READ and WRITE on a file are the transfer's hot path: done with callbacks, without a fiber
    // for files that offer them (`fileCallbacks.ts`). An offset is checked before the request takes
    // its place in the handle's order: a request that never runs must not hold back the ones after
    // it. `undefined`: the request is under way.

    const read = (request: Request, handle: FileHandle, offset: number, length: number): Job | undefined => {
      // past any file there can be (as lseek + read past the end: end of file)
      if (!Number.isSafeInteger(offset)) return Effect.fail(eof)
      const wanted = Math.min(length, MAX_DATA_LENGTH)
      const entry = enter(request, handle, { _tag: "Read", start: offset, end: offset + wanted })
      handle.ordering.whenClear(entry, () =>
        out.reading((done) => {
          if (abandoned) return
          readFile(request.id, handle, offset, wanted, (reply) => {
            done()
            handle.ordering.leave(entry)
            settle(request, reply)
          })
        }))
      return undefined
    }

    const write = (request: Request, handle: FileHandle, offset: number, data: Uint8Array): Job | undefined => {
      if (!Number.isSafeInteger(offset)) return badOffset
      const access: Access = handle.append
        ? { _tag: "Write", start: 0, end: Number.POSITIVE_INFINITY }
        : { _tag: "Write", start: offset, end: offset + data.length }
      const entry = enter(request, handle, access)
      handle.ordering.whenClear(entry, () => {
        if (abandoned) return
        writeFile(request.id, handle, offset, data, (reply) => {
          handle.ordering.leave(entry)
          settle(request, reply)
        })
      })
      return undefined
    }

    const dataReply = (id: number, data: Uint8Array): Reply =>
      data.length === 0 ? statusReply(id, eof) : [encodeDataHeader(id, data.length), data]

    /**
     * A READ's or WRITE's call to its file, and the reply it makes (`then`): by callback where the
     * file offers it, else its Effect in a fiber of the session. A callback call that throws before
     * answering is a defect of the sandbox, answered with FAILURE and logged, as a job's defect is.
     */
    const callFile = <A>(
      id: number,
      viaEffect: () => Effect.Effect<A, SandboxError>,
      viaCallback: ((done: Done<A>) => void) | undefined,
      toReply: (value: A) => Reply,
      then: (reply: Reply) => void
    ): void => {
      if (viaCallback === undefined) return runThen(replyOf(id, Effect.map(viaEffect(), toReply)), then)
      let answered = false
      try {
        viaCallback((error, value) => {
          answered = true
          then(error === undefined ? toReply(value) : statusReply(id, statusOf(error)))
        })
      } catch (defect) {
        // thrown by our own reply path, after the file had answered: not the file's defect
        if (answered) {
          throw defect
        }
        runFork(Effect.logWarning("SFTP request failed unexpectedly", Cause.die(defect)))
        answered = true
        then(statusReply(id, unexpected))
      }
    }

    const readFile = (id: number, handle: FileHandle, offset: number, length: number, then: (reply: Reply) => void) => {
      const callbacks = handle.callbacks
      const viaCallback = callbacks === undefined
        ? undefined
        : (done: Done<Uint8Array>) => callbacks.read(offset, length, done)
      callFile(id, () => handle.file.read(offset, length), viaCallback, (data) => dataReply(id, data), then)
    }

    const writeFile = (
      id: number,
      handle: FileHandle,
      offset: number,
      data: Uint8Array,
      then: (reply: Reply) => void
    ) => {
      const callbacks = handle.callbacks
      const viaCallback = callbacks === undefined
        ? undefined
        : (done: Done<void>) => callbacks.write(offset, data, (error) => done(error, undefined))
      callFile(id, () => handle.file.write(offset, data), viaCallback, () => ok(id), then)
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

    const extended = (request: Request, reader: Reader): Job => {
      const id = request.id
      const name = reader.string()
      switch (name) {
        case "posix-rename@openssh.com": {
          const from = reader.string()
          const to = reader.string()
          return okReply(id, fs.rename(from, to, { overwrite: true }))
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
          return okReply(id, fs.link(from, to))
        }
        case "fsync@openssh.com": {
          const handle = fileHandle(reader)
          return handle === undefined ? invalidHandle : okReply(
            id,
            onHandle(request, handle, { _tag: "Barrier" }, handle.file.sync)
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

    /**
     * Decodes one request now (in arrival order) into the job that answers it, or starts it
     * (`undefined`: READ and WRITE on a file).
     */
    const prepare = (type: number, request: Request, reader: Reader): Job | undefined => {
      const id = request.id
      switch (type) {
        case FXP.OPEN: {
          const path = reader.string()
          const pflags = reader.uint32()
          const { permissions } = readAttributes(reader)
          return open(id, path, pflags, permissions)
        }
        case FXP.CLOSE:
          return close(request, handleNumber(reader.bytes()))
        case FXP.READ: {
          const handle = fileHandle(reader)
          const offset = reader.uint64()
          const length = reader.uint32()
          return handle === undefined ? invalidHandle : read(request, handle, offset, length)
        }
        case FXP.WRITE: {
          const handle = fileHandle(reader)
          const offset = reader.uint64()
          const data = reader.bytes()
          return handle === undefined ? invalidHandle : write(request, handle, offset, data)
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
            handle._tag === "File"
              ? onHandle(request, handle, { _tag: "Barrier" }, handle.file.stat)
              : fs.stat(handle.path)
          )
        }
        case FXP.SETSTAT: {
          const path = reader.string()
          const { set } = readAttributes(reader)
          return okReply(id, fs.setStat(path, set))
        }
        case FXP.FSETSTAT: {
          const handle = anyHandle(reader)
          const { set } = readAttributes(reader)
          if (handle === undefined) return invalidHandle
          return okReply(
            id,
            handle._tag === "File"
              ? onHandle(request, handle, { _tag: "Barrier" }, handle.file.setStat(set))
              : fs.setStat(handle.path, set)
          )
        }
        case FXP.OPENDIR:
          return openDirectory(id, reader.string())
        case FXP.READDIR: {
          const handle = anyHandle(reader)
          return handle?._tag === "Directory"
            ? onHandle(request, handle, { _tag: "Barrier" }, readDirectory(id, handle))
            : invalidHandle
        }
        case FXP.REMOVE:
          return okReply(id, fs.remove(reader.string()))
        case FXP.MKDIR: {
          const path = reader.string()
          const { permissions } = readAttributes(reader)
          return okReply(id, fs.makeDirectory(path, permissions === undefined ? 0o777 : permissions & 0o7777))
        }
        case FXP.RMDIR:
          return okReply(id, fs.removeDirectory(reader.string()))
        case FXP.REALPATH: {
          const path = reader.string()
          return nameReply(id, fs.realPath(path === "" ? "." : path))
        }
        case FXP.RENAME: {
          const from = reader.string()
          const to = reader.string()
          return okReply(id, fs.rename(from, to))
        }
        case FXP.READLINK:
          return nameReply(id, fs.readLink(reader.string()))
        case FXP.SYMLINK: {
          // OpenSSH sends the link's target first and the link's path second: the reverse of the
          // draft's order, and what every OpenSSH-compatible client does (OpenSSH PROTOCOL §4.1).
          const target = reader.string()
          const linkPath = reader.string()
          return okReply(id, fs.symlink(target, linkPath))
        }
        case FXP.EXTENDED:
          return extended(request, reader)
        default:
          return Effect.fail(new Status(FX.OP_UNSUPPORTED))
      }
    }

    /** Requests being processed; the input is not read while there are `maxInFlight`. */
    let inFlight = 0
    /** The reader stopped because every slot was taken; a finishing request restarts it. */
    let waitingForSlot = false
    /** Called once no request is in flight (the end of the session waits for that). */
    let onAllAnswered: (() => void) | undefined = undefined

    const malformed = (error: MalformedPacket) =>
      new SftpSessionError({ reason: "Malformed", detail: error.detail, cause: error })

    /** A job's reply: its result, or the status its failure maps to. */
    const replyOf = (id: number, job: Job): Effect.Effect<Reply> =>
      Effect.catchAllCause(job, (cause) => {
        const failure = Cause.failureOption(cause)
        if (failure._tag === "Some") {
          return Effect.succeed(
            statusReply(id, failure.value instanceof Status ? failure.value : statusOf(failure.value))
          )
        }
        if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
        return Effect.as(
          Effect.logWarning("SFTP request failed unexpectedly", cause),
          statusReply(id, unexpected)
        )
      })

    /** Runs `reply` in a fiber of the session, then `then` (not when the session interrupts it). */
    const runThen = (reply: Effect.Effect<Reply>, then: (reply: Reply) => void): void => {
      runFork(Effect.flatMap(reply, (value) => Effect.sync(() => then(value))))
    }

    /** `request`'s reply is ready: it goes out in its handle's reply order. */
    const settle = (request: Request, reply: Reply): void => {
      if (abandoned) return
      const turn = request.turn
      if (turn === undefined) deliver(request, reply)
      else turn.ordering.settle(turn, () => deliver(request, reply))
    }

    /**
     * Sends a reply. The packet's buffer goes back to the pool now that the request is done with it
     * (a session torn down leaves it: the sandbox may still be reading it). The request keeps its
     * slot until the output has room for more replies.
     */
    const deliver = (request: Request, reply: Reply): void => {
      framer.release(request.packet)
      out.send(reply)
      out.whenReady(requestDone)
    }

    const requestDone = (): void => {
      inFlight--
      if (inFlight === 0 && onAllAnswered !== undefined) {
        const f = onAllAnswered
        onAllAnswered = undefined
        f()
      }
      if (waitingForSlot) {
        waitingForSlot = false
        drive()
      }
    }

    // --- packets -------------------------------------------------------------------------------

    const runFork = yield* FiberSet.runtime(fibers)<never>()

    /** Handles one packet synchronously: answers INIT, or starts the request. */
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
      const request: Request = { id: reader.uint32(), packet, turn: undefined }
      inFlight++
      const job = prepare(type, request, reader)
      if (job !== undefined) runThen(replyOf(request.id, job), (reply) => settle(request, reply))
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
    const releaseInput = options.releaseInput
    const onData = (chunk: Uint8Array) => {
      if (stopped) return
      try {
        framer.push(chunk, pending)
      } catch (error) {
        return fail(error)
      }
      releaseInput?.(chunk)
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
    yield* Effect.async<void>((resume) => {
      if (inFlight === 0) resume(Effect.void)
      else onAllAnswered = () => resume(Effect.void)
    })
    yield* out.flushed
  }).pipe(Effect.scoped)
