/**
 * Host side of the in-sandbox agent (`agentSource.ts`, wire format in `agentProtocol.ts`): the
 * `SandboxFileSystem` and `connect` of an isolated sandbox.
 *
 * - Requests are pipelined: each gets an id and an `Effect.async` waiting in `pending`; replies are
 *   demultiplexed by id as the socket's reads complete (`agentChannel.ts`: each frame is read into
 *   its own buffer, synchronously dispatched; a reply costs no fiber hop beyond resuming its
 *   waiter). Replies arrive in any order.
 * - Writes of one tick are corked into one `writev`; a request waits for `drain` first when the
 *   socket's buffer is full (backpressure on callers rather than an unbounded queue).
 * - Streams (`connect`) are windowed both ways ({@link streamWindow} unacknowledged bytes): the
 *   agent pauses its socket until the host's consumer has taken the data, and the host's sink waits
 *   for the agent's acknowledgements before sending more. Neither side buffers without bound.
 * - When the agent's socket closes, every pending request and open stream fails with
 *   `TransportFailed`; after the sandbox's scope closed, with `Closed`.
 * - The agent shares a uid with the sandbox's root, so its frames are untrusted input: lengths are
 *   bounded, payloads are decoded defensively, and a malformed frame ends the client.
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type {
  DirectoryEntry,
  FileAttributes,
  FileSystemStats,
  SandboxConnection,
  SandboxFile,
  SandboxFileSystem,
  SetAttributes
} from "../../Sandbox.js"
import { SandboxError, type SandboxErrorReason } from "../../SshError.js"
import * as FileCallbacks from "../fileCallbacks.js"
import { fileTypeOf } from "../fileMode.js"
import { invalidPort } from "../sandboxConnection.js"
import type { AgentChannel } from "./agentChannel.js"
import {
  attrsLength,
  frameHeader,
  headerLength,
  maxRead,
  Op,
  setAttrsLength,
  SetMask,
  Status,
  streamChunk,
  streamWindow
} from "./agentProtocol.js"
import * as DirectFile from "./directFile.js"
import { fromNodeError } from "./errors.js"
import { openFlags } from "./hostfs.js"

/** The largest write sent as one request; longer writes are split and pipelined. */
const maxWrite = 1024 * 1024

/** Larger requests (a path of megabytes) are refused here rather than sent. */
const maxRequest = maxWrite + 4096

/** @internal */
export interface Agent {
  readonly fs: SandboxFileSystem
  readonly connect: (host: string, port: number) => Effect.Effect<SandboxConnection, SandboxError, Scope.Scope>
}

/** @internal */
export interface AgentOptions {
  /** The host end of the agent's protocol socket. */
  readonly channel: AgentChannel
  /** Relative paths resolve against it (a path inside the sandbox). */
  readonly workdir: string
  /**
   * The agent's host pid, once known: regular files are then read and written by the host through
   * the agent's descriptor (`directFile.ts`). Without it, every byte crosses the agent's socket.
   */
  readonly agentPid?: (() => number | undefined) | undefined
}

type Build = (id: number) => ReadonlyArray<Uint8Array>

interface Pending {
  readonly reply: (status: number, payload: Buffer) => void
  readonly lost: (reason: SandboxErrorReason, detail: string) => void
}

class Malformed extends Error {}

const malformed = (what: string) => new Malformed(`the agent sent a malformed ${what}`)

const decodeAttributes = (payload: Buffer, offset: number): FileAttributes => {
  if (payload.length < offset + attrsLength) throw malformed("attributes reply")
  const mode = payload.readUInt32LE(offset)
  return {
    type: fileTypeOf(mode),
    size: payload.readDoubleLE(offset + 16),
    uid: payload.readUInt32LE(offset + 4),
    gid: payload.readUInt32LE(offset + 8),
    mode,
    atime: Math.floor(payload.readDoubleLE(offset + 24) / 1000),
    mtime: Math.floor(payload.readDoubleLE(offset + 32) / 1000),
    nlink: payload.readUInt32LE(offset + 12)
  }
}

const decodeEntries = (payload: Buffer): Array<DirectoryEntry> => {
  const count = payload.readUInt32LE(0)
  const entries: Array<DirectoryEntry> = []
  let offset = 4
  for (let i = 0; i < count; i++) {
    const length = payload.readUInt32LE(offset)
    const end = offset + 4 + length
    if (end + attrsLength > payload.length) throw malformed("directory listing")
    entries.push({ name: payload.toString("utf8", offset + 4, end), attributes: decodeAttributes(payload, end) })
    offset = end + attrsLength
  }
  return entries
}

const decodeStatfs = (payload: Buffer): FileSystemStats => {
  if (payload.length < 7 * 8) throw malformed("statfs reply")
  const at = (i: number) => payload.readDoubleLE(i * 8)
  return {
    blockSize: at(1),
    fragmentSize: at(1),
    blocks: at(2),
    blocksFree: at(3),
    blocksAvailable: at(4),
    files: at(5),
    filesFree: at(6),
    filesAvailable: at(6),
    fsid: 0,
    flags: 0,
    nameMax: 255
  }
}

const decodeOpen = (payload: Buffer): { readonly handle: number; readonly fd: number } => {
  if (payload.length < 8) throw malformed("open reply")
  return { handle: payload.readUInt32LE(0), fd: payload.readInt32LE(4) }
}

/** The agent's error reply as the Node error it was, for the one errno mapping in `errors.ts`. */
const agentErrno = (payload: Buffer): Error => {
  if (payload.length < 4) return new Error("the agent sent a malformed error")
  const length = payload.readUInt32LE(0)
  const code = payload.toString("utf8", 4, 4 + length)
  return Object.assign(new Error(payload.toString("utf8", 4 + length)), { code })
}

const connectError = (destination: string) => (cause: unknown) => {
  const error = fromNodeError("connect", destination)(cause)
  return error.reason === "TransportFailed" ? new SandboxError({ ...error, reason: "ConnectFailed" }) : error
}

const invalidArgument = (operation: string, path: string | undefined, detail: string) =>
  new SandboxError({ reason: "InvalidArgument", operation, path, detail })

const invalid = (operation: string, path: string | undefined, detail: string) =>
  Effect.fail(invalidArgument(operation, path, detail))

/** A path frame: `[header][prefix][utf-8 path]`. */
const pathFrame = (
  op: number,
  path: string,
  prefixLength = 0,
  prefix?: (buffer: Buffer, offset: number) => void
): Build =>
(id) => {
  const length = Buffer.byteLength(path)
  const buffer = frameHeader(id, op, prefixLength + length, prefixLength + length)
  prefix?.(buffer, headerLength)
  buffer.write(path, headerLength + prefixLength, "utf8")
  return [buffer]
}

/** `[header][u32 flags?][u32 first length][first][second]`. */
const twoPathFrame = (op: number, first: string, second: string, flags?: number): Build => (id) => {
  const firstLength = Buffer.byteLength(first)
  const fixed = (flags === undefined ? 0 : 4) + 4
  const length = fixed + firstLength + Buffer.byteLength(second)
  const buffer = frameHeader(id, op, length, length)
  let offset = headerLength
  if (flags !== undefined) {
    buffer.writeUInt32LE(flags, offset)
    offset += 4
  }
  buffer.writeUInt32LE(firstLength, offset)
  buffer.write(first, offset + 4, "utf8")
  buffer.write(second, offset + 4 + firstLength, "utf8")
  return [buffer]
}

const handleFrame =
  (op: number, handle: number, extra = 0, fill?: (buffer: Buffer, offset: number) => void): Build => (id) => {
    const buffer = frameHeader(id, op, 4 + extra, 4 + extra)
    buffer.writeUInt32LE(handle, headerLength)
    fill?.(buffer, headerLength + 4)
    return [buffer]
  }

const isOwnerId = (value: number | undefined) =>
  value === undefined || (Number.isInteger(value) && value >= 0 && value < 0xffffffff)

const checkAttributes = (attributes: SetAttributes): string | undefined => {
  if (attributes.size !== undefined && (!Number.isSafeInteger(attributes.size) || attributes.size < 0)) {
    return `bad size ${attributes.size}`
  }
  if (!isOwnerId(attributes.uid) || !isOwnerId(attributes.gid)) return "bad owner"
  if (attributes.mode !== undefined && !Number.isInteger(attributes.mode)) return `bad mode ${attributes.mode}`
  for (const time of [attributes.atime, attributes.mtime]) {
    if (time !== undefined && !Number.isFinite(time)) return `bad time ${time}`
  }
  return undefined
}

const writeAttributes = (attributes: SetAttributes) => (buffer: Buffer, offset: number) => {
  const mask = (attributes.size === undefined ? 0 : SetMask.size) |
    (attributes.uid === undefined && attributes.gid === undefined ? 0 : SetMask.owner) |
    (attributes.mode === undefined ? 0 : SetMask.mode) |
    (attributes.atime === undefined ? 0 : SetMask.atime) |
    (attributes.mtime === undefined ? 0 : SetMask.mtime)
  buffer.writeUInt32LE(mask, offset)
  buffer.writeDoubleLE(attributes.size ?? 0, offset + 4)
  buffer.writeUInt32LE(attributes.uid ?? 0xffffffff, offset + 12)
  buffer.writeUInt32LE(attributes.gid ?? 0xffffffff, offset + 16)
  buffer.writeUInt32LE((attributes.mode ?? 0) & 0o7777, offset + 20)
  buffer.writeDoubleLE(attributes.atime ?? 0, offset + 24)
  buffer.writeDoubleLE(attributes.mtime ?? 0, offset + 32)
}

/** One TCP stream multiplexed over the agent's socket. */
class Connection {
  queue: Array<Buffer> = []
  queued = 0
  /** Bytes received and not yet acknowledged (the agent may not exceed its window). */
  unacked = 0
  ended = false
  closed = false
  error: SandboxError | undefined = undefined
  credit = streamWindow
  endSent = false
  reader: (() => void) | undefined = undefined
  writer: (() => void) | undefined = undefined

  constructor(readonly id: number, readonly destination: string) {}

  wake(): void {
    this.reader?.()
    this.writer?.()
  }
}

class Client {
  private readonly pending = new Map<number, Pending>()
  private readonly streams = new Map<number, Connection>()
  /** Files read and written by the host itself: their descriptors close with the client. */
  private readonly directFiles = new Set<DirectFile.DirectFile>()
  private readonly socket: AgentChannel["socket"]
  private nextId = 0
  private corked = false
  private failure: { readonly reason: "Closed" | "TransportFailed"; readonly detail: string } | undefined = undefined
  private drainWaiters = new Set<() => void>()

  constructor(channel: AgentChannel) {
    const socket = channel.socket
    this.socket = socket
    channel.receive(this.onFrame, this.onCorrupt)
    socket.on("drain", this.onDrain)
    socket.on("error", this.onError)
    socket.on("close", this.onClose)
  }

  // ---- socket events

  private readonly onCorrupt = (error: Error) => {
    this.shutdown("TransportFailed", error.message)
    this.socket.destroy()
  }

  private readonly onDrain = () => {
    const waiters = this.drainWaiters
    this.drainWaiters = new Set()
    for (const waiter of waiters) waiter()
  }

  private readonly onError = (error: Error) =>
    this.shutdown("TransportFailed", `the agent's socket failed: ${error.message}`)

  private readonly onClose = () => this.shutdown("TransportFailed", "the sandbox's agent exited")

  private readonly onFrame = (id: number, code: number, payload: Buffer) => {
    if (code === Status.Ok || code === Status.Error) {
      const pending = this.pending.get(id)
      if (pending === undefined) return // an abandoned request's id was never reused: stale, ignore
      this.pending.delete(id)
      pending.reply(code, payload)
      return
    }
    const connection = this.streams.get(id)
    if (connection === undefined) return // closed by us meanwhile
    switch (code) {
      case Status.StreamData: {
        connection.unacked += payload.length
        if (connection.unacked > streamWindow + 2 * streamChunk) throw malformed("stream (window exceeded)")
        connection.queue.push(payload)
        connection.queued += payload.length
        connection.reader?.()
        return
      }
      case Status.StreamEnd:
        connection.ended = true
        connection.reader?.()
        return
      case Status.StreamClose: {
        this.streams.delete(id)
        connection.closed = true
        if (payload.length > 0) connection.error = connectError(connection.destination)(agentErrno(payload))
        connection.wake()
        return
      }
      case Status.StreamAck: {
        if (payload.length < 4) throw malformed("stream acknowledgement")
        connection.credit += payload.readUInt32LE(0)
        connection.writer?.()
        return
      }
      default:
        throw malformed(`frame (status ${code})`)
    }
  }

  /** Fails everything in flight and refuses what comes next. Idempotent. */
  shutdown(reason: "Closed" | "TransportFailed", detail: string): void {
    if (this.failure !== undefined) return
    this.failure = { reason, detail }
    this.socket.removeListener("drain", this.onDrain)
    this.socket.removeListener("close", this.onClose)
    this.socket.removeListener("error", this.onError)
    // late errors of a socket nobody reads any more must not become uncaught exceptions
    this.socket.on("error", () => {})
    const pending = [...this.pending.values()]
    this.pending.clear()
    for (const entry of pending) entry.lost(reason, detail)
    const streams = [...this.streams.values()]
    this.streams.clear()
    for (const connection of streams) {
      connection.closed = true
      connection.error ??= new SandboxError({
        reason,
        operation: "connection",
        path: connection.destination,
        detail
      })
      connection.wake()
    }
    this.onDrain()
    for (const file of this.directFiles) file.dispose()
    this.directFiles.clear()
  }

  // ---- output

  private readonly uncork = () => {
    this.corked = false
    this.socket.uncork()
  }

  private write(chunks: ReadonlyArray<Uint8Array>): void {
    if (this.failure !== undefined || this.socket.destroyed) return
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      process.nextTick(this.uncork)
    }
    for (const chunk of chunks) this.socket.write(chunk)
  }

  private allocateId(): number {
    do {
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1
    } while (this.pending.has(this.nextId) || this.streams.has(this.nextId))
    return this.nextId
  }

  /** Waits while the socket's buffer is over its high-water mark. */
  private readonly writable: Effect.Effect<void> = Effect.suspend(() =>
    this.failure === undefined && this.socket.writableNeedDrain
      ? Effect.async<void>((resume) => {
        const waiter = () => resume(Effect.void)
        this.drainWaiters.add(waiter)
        return Effect.sync(() => this.drainWaiters.delete(waiter))
      })
      : Effect.void
  )

  lostError(operation: string, path: string | undefined): SandboxError | undefined {
    return this.failure === undefined ? undefined : new SandboxError({
      reason: this.failure.reason,
      operation,
      path,
      detail: this.failure.detail
    })
  }

  /**
   * Sends a request and waits for its reply. `onOk` decodes the payload (it runs synchronously in
   * the socket's data event, before the next frame). When the caller is interrupted, `orphan` gets
   * a later success, to release what it created (an open file, a connection).
   */
  request<A>(
    build: Build,
    operation: string,
    path: string | undefined,
    onOk: (payload: Buffer, id: number) => A,
    onError: (cause: unknown) => SandboxError = fromNodeError(operation, path),
    orphan?: (payload: Buffer, id: number) => void
  ): Effect.Effect<A, SandboxError> {
    return Effect.zipRight(
      this.writable,
      Effect.async<A, SandboxError>((resume) => {
        const lost = this.lostError(operation, path)
        if (lost !== undefined) return resume(Effect.fail(lost))
        const id = this.allocateId()
        const frames = build(id)
        let size = 0
        for (const frame of frames) size += frame.length
        if (size > maxRequest) {
          return resume(Effect.fail(
            new SandboxError({
              reason: "InvalidArgument",
              operation,
              path: path === undefined || path.length <= 256 ? path : `${path.slice(0, 256)}...`,
              detail: `the request is too large (${size} bytes)`
            })
          ))
        }
        this.pending.set(id, {
          reply: (status, payload) => {
            if (status === Status.Error) return resume(Effect.fail(onError(agentErrno(payload))))
            try {
              resume(Effect.succeed(onOk(payload, id)))
            } catch (cause) {
              resume(Effect.fail(
                new SandboxError({
                  reason: "TransportFailed",
                  operation,
                  path,
                  detail: cause instanceof Error ? cause.message : String(cause),
                  cause
                })
              ))
            }
          },
          lost: (reason, detail) => resume(Effect.fail(new SandboxError({ reason, operation, path, detail })))
        })
        this.write(frames)
        return Effect.sync(() => {
          if (!this.pending.has(id)) return
          // the reply may still come: keep the id reserved until it does
          this.pending.set(id, {
            reply: (status, payload) => {
              if (status === Status.Ok && orphan !== undefined) orphan(payload, id)
            },
            lost: () => {}
          })
        })
      })
    )
  }

  // ---- files the host reads and writes itself (directFile.ts)

  adoptDirect(file: DirectFile.DirectFile): void {
    this.directFiles.add(file)
  }

  releaseDirect(file: DirectFile.DirectFile): Effect.Effect<void> {
    this.directFiles.delete(file)
    return file.close
  }

  /** `effect` on a direct file, unless the agent is gone (whose files are closed then). */
  whileConnected<A>(operation: string, path: string, effect: Effect.Effect<A, SandboxError>) {
    return Effect.suspend(() => {
      const lost = this.lostError(operation, path)
      return lost === undefined ? effect : Effect.fail(lost)
    })
  }

  /** A request nobody waits for (releasing an orphan). */
  post(build: Build): void {
    if (this.failure !== undefined) return
    const id = this.allocateId()
    this.pending.set(id, { reply: () => {}, lost: () => {} })
    this.write(build(id))
  }

  // ---- streams

  openStream(id: number, destination: string): Connection {
    const connection = new Connection(id, destination)
    this.streams.set(id, connection)
    return connection
  }

  closeStream(connection: Connection): void {
    if (connection.closed) return
    connection.closed = true
    this.streams.delete(connection.id)
    this.write([frameHeader(connection.id, Op.StreamClose, 0)])
    connection.wake()
  }

  abandonStream(id: number): void {
    this.write([frameHeader(id, Op.StreamClose, 0)])
  }

  acknowledge(connection: Connection, bytes: number): void {
    connection.unacked -= bytes
    if (connection.closed || bytes === 0) return
    const frame = frameHeader(connection.id, Op.StreamAck, 4, 4)
    frame.writeUInt32LE(bytes, headerLength)
    this.write([frame])
  }

  private closedError(connection: Connection): SandboxError {
    return connection.error ?? new SandboxError({
      reason: "Closed",
      operation: "connection write",
      path: connection.destination,
      detail: "the connection is closed"
    })
  }

  private awaitCredit(connection: Connection): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      connection.writer = () => {
        connection.writer = undefined
        resume(Effect.void)
      }
      return Effect.sync(() => {
        connection.writer = undefined
      })
    })
  }

  streamWrite(connection: Connection, data: Uint8Array): Effect.Effect<void, SandboxError> {
    let offset = 0
    const loop: Effect.Effect<void, SandboxError> = Effect.suspend(() => {
      while (offset < data.length) {
        if (connection.closed || connection.endSent) return Effect.fail(this.closedError(connection))
        if (connection.credit <= 0) return Effect.zipRight(this.awaitCredit(connection), loop)
        if (this.socket.writableNeedDrain) return Effect.zipRight(this.writable, loop)
        const length = Math.min(streamChunk, connection.credit, data.length - offset)
        this.write([
          frameHeader(connection.id, Op.StreamData, length),
          data.subarray(offset, offset + length)
        ])
        connection.credit -= length
        offset += length
      }
      return Effect.void
    })
    return loop
  }

  streamEnd(connection: Connection): void {
    if (connection.closed || connection.endSent) return
    connection.endSent = true
    this.write([frameHeader(connection.id, Op.StreamEnd, 0)])
  }
}

const makeFile = (
  client: Client,
  handle: number,
  path: string,
  direct: DirectFile.DirectFile | undefined
): SandboxFile => {
  let closed = false
  const closedError = (operation: string) =>
    new SandboxError({ reason: "Closed", operation, path, detail: "the file is closed" })
  const writePiece = (offset: number, data: Uint8Array) =>
    client.request(
      (id) => {
        const header = frameHeader(id, Op.Write, 12 + data.length, 12)
        header.writeUInt32LE(handle, headerLength)
        header.writeDoubleLE(offset, headerLength + 4)
        return [header, data]
      },
      "write",
      path,
      () => undefined
    )
  /** Why a read or write is refused before it goes anywhere, if it is (both forms below). */
  const refusal = (operation: string, offset: number, length = 0): SandboxError | undefined => {
    if (closed) return closedError(operation)
    if (!Number.isSafeInteger(offset) || offset < 0) return invalidArgument(operation, path, `bad offset ${offset}`)
    if (!Number.isSafeInteger(length) || length < 0) return invalidArgument(operation, path, `bad length ${length}`)
    return undefined
  }
  const file: SandboxFile = {
    read: (offset, length) => {
      const refused = refusal("read", offset, length)
      if (refused !== undefined) return Effect.fail(refused)
      if (direct !== undefined) {
        return client.whileConnected("read", path, direct.read(offset, Math.min(length, maxRead)))
      }
      return client.request(
        handleFrame(Op.Read, handle, 12, (buffer, at) => {
          buffer.writeDoubleLE(offset, at)
          buffer.writeUInt32LE(Math.min(length, maxRead), at + 8)
        }),
        "read",
        path,
        (payload): Uint8Array => payload
      )
    },
    write: (offset, data) => {
      const refused = refusal("write", offset)
      if (refused !== undefined) return Effect.fail(refused)
      if (data.length === 0) return Effect.void
      if (direct !== undefined) return client.whileConnected("write", path, direct.write(offset, data))
      if (data.length <= maxWrite) return writePiece(offset, data)
      const pieces: Array<Effect.Effect<void, SandboxError>> = []
      for (let at = 0; at < data.length; at += maxWrite) {
        pieces.push(writePiece(offset + at, data.subarray(at, Math.min(data.length, at + maxWrite))))
      }
      return Effect.all(pieces, { concurrency: "unbounded", discard: true })
    },
    stat: Effect.suspend(() =>
      closed
        ? Effect.fail(closedError("fstat"))
        : client.request(handleFrame(Op.Fstat, handle), "fstat", path, (payload) => decodeAttributes(payload, 0))
    ),
    setStat: (attributes) => {
      if (closed) return Effect.fail(closedError("fsetstat"))
      const bad = checkAttributes(attributes)
      if (bad !== undefined) return invalid("fsetstat", path, bad)
      return client.request(
        handleFrame(Op.Fsetstat, handle, setAttrsLength, writeAttributes(attributes)),
        "fsetstat",
        path,
        () => undefined
      )
    },
    sync: Effect.suspend(() =>
      closed
        ? Effect.fail(closedError("fsync"))
        : client.request(handleFrame(Op.Fsync, handle), "fsync", path, () => undefined)
    ),
    close: Effect.suspend(() => {
      if (closed) return Effect.void
      closed = true
      const agentClose = client.request(handleFrame(Op.Close, handle), "close", path, () => undefined)
      return direct === undefined ? agentClose : Effect.zipRight(client.releaseDirect(direct), agentClose)
    })
  }
  if (direct === undefined) return file
  // the same checks, then the direct file's own callbacks (`whileConnected`'s check too)
  return FileCallbacks.attach(file, {
    read: (offset, length, done) => {
      const refused = refusal("read", offset, length) ?? client.lostError("read", path)
      if (refused !== undefined) return done(refused, new Uint8Array(0))
      direct.callbacks.read(offset, Math.min(length, maxRead), done)
    },
    write: (offset, data, done) => {
      const refused = refusal("write", offset) ?? client.lostError("write", path)
      if (refused !== undefined) return done(refused)
      direct.callbacks.write(offset, data, done)
    }
  })
}

/**
 * A client of the agent on `options.socket`, for the current scope: when the scope closes, what is
 * in flight fails with `Closed` (the sandbox, closed after it, ends the agent).
 *
 * @internal
 */
export const make = (options: AgentOptions): Effect.Effect<Agent, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = new Client(options.channel)
    yield* Effect.addFinalizer(() => Effect.sync(() => client.shutdown("Closed", "the sandbox is closed")))
    const { workdir } = options
    const resolve = (path: string) =>
      path.startsWith("/")
        ? path
        : path === ""
        ? workdir
        : workdir.endsWith("/")
        ? workdir + path
        : `${workdir}/${path}`

    const ok = () => undefined
    const simple = (op: number, operation: string) => (path: string) =>
      client.request(pathFrame(op, resolve(path)), operation, path, ok)

    const fs: SandboxFileSystem = {
      stat: (path) =>
        client.request(pathFrame(Op.Stat, resolve(path)), "stat", path, (payload) => decodeAttributes(payload, 0)),
      lstat: (path) =>
        client.request(pathFrame(Op.Lstat, resolve(path)), "lstat", path, (payload) => decodeAttributes(payload, 0)),
      open: (path, flags, mode) =>
        client.request(
          pathFrame(Op.Open, resolve(path), 8, (buffer, offset) => {
            buffer.writeUInt32LE(openFlags(flags), offset)
            buffer.writeUInt32LE((mode ?? 0o666) & 0o7777, offset + 4)
          }),
          "open",
          path,
          (payload) => {
            const { fd, handle } = decodeOpen(payload)
            const pid = fd >= 0 ? options.agentPid?.() : undefined
            const own = pid === undefined ? undefined : DirectFile.reopen(pid, fd, openFlags(flags))
            if (own === undefined) return makeFile(client, handle, path, undefined)
            const direct = DirectFile.make(own, path)
            client.adoptDirect(direct)
            return makeFile(client, handle, path, direct)
          },
          undefined,
          (payload) => {
            if (payload.length >= 4) client.post(handleFrame(Op.Close, payload.readUInt32LE(0)))
          }
        ),
      readDirectory: (path) => client.request(pathFrame(Op.Readdir, resolve(path)), "readdir", path, decodeEntries),
      makeDirectory: (path, mode) =>
        client.request(
          pathFrame(
            Op.Mkdir,
            resolve(path),
            4,
            (buffer, offset) => buffer.writeUInt32LE((mode ?? 0o777) & 0o7777, offset)
          ),
          "mkdir",
          path,
          ok
        ),
      removeDirectory: simple(Op.Rmdir, "rmdir"),
      remove: simple(Op.Unlink, "remove"),
      rename: (oldPath, newPath, options) =>
        client.request(
          twoPathFrame(Op.Rename, resolve(oldPath), resolve(newPath), options?.overwrite === true ? 1 : 0),
          "rename",
          oldPath,
          ok
        ),
      realPath: (path) => client.request(pathFrame(Op.Realpath, resolve(path)), "realpath", path, (p) => p.toString()),
      readLink: (path) => client.request(pathFrame(Op.Readlink, resolve(path)), "readlink", path, (p) => p.toString()),
      symlink: (target, linkPath) =>
        client.request(twoPathFrame(Op.Symlink, target, resolve(linkPath)), "symlink", linkPath, ok),
      link: (existingPath, newPath) =>
        client.request(twoPathFrame(Op.Link, resolve(existingPath), resolve(newPath)), "link", newPath, ok),
      setStat: (path, attributes) => {
        const bad = checkAttributes(attributes)
        if (bad !== undefined) return invalid("setstat", path, bad)
        return client.request(
          pathFrame(Op.Setstat, resolve(path), setAttrsLength, writeAttributes(attributes)),
          "setstat",
          path,
          ok
        )
      },
      statFileSystem: (path) => client.request(pathFrame(Op.Statfs, resolve(path)), "statvfs", path, decodeStatfs)
    }

    const connect = (host: string, port: number): Effect.Effect<SandboxConnection, SandboxError, Scope.Scope> => {
      const destination = `${host}:${port}`
      const badPort = invalidPort(host, port)
      if (badPort !== undefined) return Effect.fail(badPort)
      return Effect.acquireRelease(
        client.request(
          pathFrame(Op.Connect, host, 4, (buffer, offset) => buffer.writeUInt32LE(port, offset)),
          "connect",
          destination,
          (_, id) => client.openStream(id, destination),
          connectError(destination),
          (_, id) => client.abandonStream(id)
        ),
        (connection) => Effect.sync(() => client.closeStream(connection))
      ).pipe(Effect.map((connection): SandboxConnection => ({
        input: Sink.forEachChunk((chunk: Chunk.Chunk<Uint8Array>) =>
          Effect.forEach(chunk, (bytes) => client.streamWrite(connection, bytes), { discard: true })
        ).pipe(Sink.mapEffect(() => Effect.sync(() => client.streamEnd(connection)))),
        output: Stream.repeatEffectChunkOption(
          Effect.async<Chunk.Chunk<Uint8Array>, Option.Option<SandboxError>>((resume) => {
            const attempt = (): boolean => {
              if (connection.queue.length > 0) {
                const chunks = connection.queue
                const bytes = connection.queued
                connection.queue = []
                connection.queued = 0
                client.acknowledge(connection, bytes)
                resume(Effect.succeed(Chunk.unsafeFromArray(chunks)))
                return true
              }
              if (connection.error !== undefined) {
                resume(Effect.fail(Option.some(connection.error)))
                return true
              }
              if (connection.ended || connection.closed) {
                resume(Effect.fail(Option.none()))
                return true
              }
              return false
            }
            if (attempt()) return
            connection.reader = () => {
              if (attempt()) connection.reader = undefined
            }
            return Effect.sync(() => {
              connection.reader = undefined
            })
          })
        )
      })))
    }

    return { fs, connect }
  })
