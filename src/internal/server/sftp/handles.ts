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
import type { FileCallbacks } from "../../fileCallbacks.js"

/** What a request does to a handle, for ordering. @internal */
export type Access =
  | { readonly _tag: "Read"; readonly start: number; readonly end: number }
  | { readonly _tag: "Write"; readonly start: number; readonly end: number }
  | { readonly _tag: "Barrier" }

const overlaps = (a: Access, b: Access): boolean => {
  if (a._tag === "Barrier" || b._tag === "Barrier") return true
  if (a._tag === "Read" && b._tag === "Read") return false
  return a.start < b.end && b.start < a.end
}

/**
 * A request registered on its handle: it may start once `blockers` (the earlier conflicting
 * requests not yet done) is 0.
 *
 * @internal
 */
export interface Entry {
  readonly access: Access
  blockers: number
  /** Called when `blockers` reaches 0 (set by `whenClear`). */
  onClear: (() => void) | undefined
  /** Later requests waiting for this one. */
  blocking: Array<Entry> | undefined
}

/**
 * A request's place in its handle's reply order. `settle` hands its reply over once every earlier
 * request on the handle has handed over theirs.
 *
 * @internal
 */
export interface Turn {
  /** The ordering it is a place in. */
  readonly ordering: Ordering
  deliver: (() => void) | undefined
  next: Turn | undefined
}

/**
 * In-flight requests of one handle. Plain callbacks rather than Effects: every READ and WRITE of a
 * transfer goes through here (see `fileCallbacks.ts` for what a fiber per request cost).
 *
 * @internal
 */
export class Ordering {
  private readonly pending = new Set<Entry>()
  private head: Turn | undefined = undefined
  private tail: Turn | undefined = undefined

  /** Takes the next place in the reply order. Must be called synchronously in arrival order. */
  replyTurn(): Turn {
    const turn: Turn = { ordering: this, deliver: undefined, next: undefined }
    if (this.tail === undefined) this.head = turn
    else this.tail.next = turn
    this.tail = turn
    return turn
  }

  /**
   * Records that `turn`'s reply is ready (`deliver` sends it), then delivers every reply whose
   * turn has come, in order.
   */
  settle(turn: Turn, deliver: () => void): void {
    turn.deliver = deliver
    while (this.head !== undefined && this.head.deliver !== undefined) {
      const first = this.head
      const send = first.deliver!
      this.head = first.next
      if (this.head === undefined) this.tail = undefined
      // A turn may have been promoted to the old generation while it waited; as garbage there it
      // would keep every later turn (and their replies' buffers) alive until a full GC.
      first.next = undefined
      first.deliver = undefined
      send()
    }
  }

  /**
   * Registers a request now, behind the earlier ones it conflicts with. Must be called
   * synchronously in arrival order; `leave` it once done.
   */
  enter(access: Access): Entry {
    const entry: Entry = { access, blockers: 0, onClear: undefined, blocking: undefined }
    for (const earlier of this.pending) {
      if (overlaps(earlier.access, access)) {
        ;(earlier.blocking ??= []).push(entry)
        entry.blockers++
      }
    }
    this.pending.add(entry)
    return entry
  }

  /** Runs `start` once the earlier conflicting requests are done: now, if they are. */
  whenClear(entry: Entry, start: () => void): void {
    if (entry.blockers === 0) start()
    else entry.onClear = start
  }

  /** The request is done: the ones waiting for it may start. Idempotent. */
  leave(entry: Entry): void {
    if (!this.pending.delete(entry)) return
    const blocking = entry.blocking
    if (blocking === undefined) return
    entry.blocking = undefined
    for (const later of blocking) {
      if (--later.blockers === 0 && later.onClear !== undefined) {
        const start = later.onClear
        later.onClear = undefined
        start()
      }
    }
  }
}

/** @internal */
export interface FileHandle {
  readonly _tag: "File"
  readonly path: string
  readonly file: SandboxFile
  /** The file's callback form of read and write, if it offers one (`fileCallbacks.ts`). */
  readonly callbacks: FileCallbacks | undefined
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
