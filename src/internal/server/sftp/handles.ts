/**
 * The handles of one SFTP session: a bounded table of open files and directory listings, and the
 * ordering of requests on each handle.
 *
 * Requests are processed concurrently, but requests on one handle keep the order in which they
 * arrived wherever it is observable: a WRITE waits for earlier READs and WRITEs whose byte ranges
 * overlap it (every earlier WRITE when the file is in append mode), a READ for earlier overlapping
 * WRITEs, and everything else on a handle (FSTAT, FSETSTAT, fsync, READDIR, CLOSE) for all earlier
 * requests on it. Non-overlapping READs and WRITEs — a pipelined transfer — run side by side.
 *
 * Replies to the requests on one handle go out in the order the requests came, whatever order
 * they complete in: OpenSSH's `sftp`/`scp` download truncates the local file at the highest
 * contiguous offset when READ replies arrive reordered (`sftp-client.c`, "truncating at").
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { DirectoryEntry, SandboxFile } from "../../../Sandbox.js"

/** What a request does to a handle, for ordering. @internal */
export type Access =
  | { readonly _tag: "Read"; readonly start: number; readonly end: number }
  | { readonly _tag: "Write"; readonly start: number; readonly end: number }
  | { readonly _tag: "Barrier" }

interface Pending {
  readonly access: Access
  readonly done: Effect.Latch
}

const overlaps = (a: Access, b: Access): boolean => {
  if (a._tag === "Barrier" || b._tag === "Barrier") return true
  if (a._tag === "Read" && b._tag === "Read") return false
  return a.start < b.end && b.start < a.end
}

/**
 * A request's place in its handle's reply order: wait for `previous`, reply, then open `done`.
 *
 * @internal
 */
export interface ReplyTurn {
  readonly previous: Effect.Latch | undefined
  readonly done: Effect.Latch
}

/**
 * In-flight requests of one handle.
 *
 * @internal
 */
export class Ordering {
  private readonly pending = new Set<Pending>()
  private lastReply: Effect.Latch | undefined = undefined

  /** Takes the next place in the reply order. Must be called synchronously in arrival order. */
  replyTurn(): ReplyTurn {
    const turn = { previous: this.lastReply, done: Effect.unsafeMakeLatch(false) }
    this.lastReply = turn.done
    return turn
  }

  /**
   * Registers a request now (in arrival order) and returns it wrapped so that it starts once the
   * earlier conflicting requests are done. Must be called synchronously in arrival order.
   */
  enter<A, E, R>(access: Access, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    const waitFor: Array<Effect.Latch> = []
    for (const earlier of this.pending) if (overlaps(earlier.access, access)) waitFor.push(earlier.done)
    const self: Pending = { access, done: Effect.unsafeMakeLatch(false) }
    this.pending.add(self)
    const leave = Effect.sync(() => {
      this.pending.delete(self)
      self.done.unsafeOpen()
    })
    const run = waitFor.length === 0
      ? effect
      : Effect.zipRight(Effect.forEach(waitFor, (latch) => latch.await, { discard: true }), effect)
    return Effect.ensuring(run, leave)
  }
}

/** @internal */
export interface FileHandle {
  readonly _tag: "File"
  readonly path: string
  readonly file: SandboxFile
  readonly append: boolean
  readonly ordering: Ordering
}

/** @internal */
export interface DirectoryHandle {
  readonly _tag: "Directory"
  readonly path: string
  readonly entries: ReadonlyArray<DirectoryEntry>
  /** Index of the next entry READDIR returns. */
  position: number
  readonly ordering: Ordering
}

/** @internal */
export type Handle = FileHandle | DirectoryHandle

const CLOSE_TIMEOUT = Duration.seconds(5)

/**
 * Open handles by number. Numbers are never reused within a session, so a stale handle from a
 * client never reaches a file opened later.
 *
 * @internal
 */
export class HandleTable {
  private readonly handles = new Map<number, Handle>()
  private next = 1

  constructor(readonly max: number) {}

  get size(): number {
    return this.handles.size
  }

  get full(): boolean {
    return this.handles.size >= this.max
  }

  add(handle: Handle): number {
    while (this.handles.has(this.next) || this.next === 0) this.next = (this.next + 1) >>> 0
    const id = this.next
    this.next = (this.next + 1) >>> 0
    this.handles.set(id, handle)
    return id
  }

  get(id: number | undefined): Handle | undefined {
    return id === undefined ? undefined : this.handles.get(id)
  }

  remove(id: number): void {
    this.handles.delete(id)
  }

  /** Closes every open file; bounded and never failing, for the end of the session. */
  readonly closeAll: Effect.Effect<void> = Effect.suspend(() => {
    const files: Array<SandboxFile> = []
    for (const handle of this.handles.values()) if (handle._tag === "File") files.push(handle.file)
    this.handles.clear()
    return Effect.forEach(
      files,
      (file) => file.close.pipe(Effect.timeoutOption(CLOSE_TIMEOUT), Effect.ignore),
      { concurrency: 16, discard: true }
    )
  })
}
