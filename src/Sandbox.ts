/**
 * `Sandbox` is the one interface the SSH layer talks to: start processes, operate on files, and
 * open TCP connections from inside an isolated environment. Transports (the local namespace jail,
 * the in-memory test double, later container engines and microVM agents) implement it.
 *
 * A sandbox is one persistent environment: files, processes and the loopback network are shared by
 * every process, file operation and connection of the same sandbox.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import type { SandboxError } from "./SshError.js"

/**
 * What an isolated sandbox is made of, as reported to users.
 *
 * @since 0.1.0
 * @category models
 */
export interface SandboxInfo {
  /** Transport name, e.g. `"local"`, `"memory"`, `"docker"`. */
  readonly transport: string
  /** `true` when the sandbox's processes cannot see or touch the host outside it. */
  readonly isolated: boolean
  /** How isolation is achieved (`"bubblewrap"`, `"none"`, `"memory"`, ...). */
  readonly isolation: string
  /** The shell that runs command strings: `<shell> -c <command>`. */
  readonly shell: string
  /** The working directory processes and SFTP start in, as seen inside the sandbox. */
  readonly workdir: string
  /** Where the sandbox lives on the host, when it lives in a host directory. */
  readonly root?: string | undefined
}

/**
 * A terminal for a process.
 *
 * @since 0.1.0
 * @category models
 */
export interface PtyOptions {
  readonly term: string
  readonly cols: number
  readonly rows: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface WindowSize {
  readonly cols: number
  readonly rows: number
}

/**
 * What to start inside the sandbox. `command` is an executable looked up through `PATH` inside
 * the sandbox; to run a shell command string use `[info.shell, "-c", string]`.
 *
 * @since 0.1.0
 * @category models
 */
export interface SpawnOptions {
  readonly command: string
  readonly args?: ReadonlyArray<string> | undefined
  /** Variables added to (and overriding) the sandbox's base environment. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Login name inside the sandbox; the transport's default user when absent. */
  readonly user?: string | undefined
  /** Working directory inside the sandbox; `info.workdir` when absent. */
  readonly cwd?: string | undefined
  /** Allocate a pseudo-terminal: stdin/stdout go through it and stderr is merged into stdout. */
  readonly pty?: PtyOptions | undefined
}

/**
 * Signal names without the `SIG` prefix, as SSH sends them (RFC 4254 §6.10).
 *
 * @since 0.1.0
 * @category models
 */
export type SignalName =
  | "ABRT"
  | "ALRM"
  | "FPE"
  | "HUP"
  | "ILL"
  | "INT"
  | "KILL"
  | "PIPE"
  | "QUIT"
  | "SEGV"
  | "TERM"
  | "USR1"
  | "USR2"
  | (string & {})

/**
 * How a process ended: with an exit code, or killed by a signal (its code is `128 + n`, as a shell
 * reports it).
 *
 * @since 0.1.0
 * @category models
 */
export type ProcessExit = Data.TaggedEnum<{
  Exited: { readonly code: number }
  Signaled: { readonly signal: SignalName; readonly code: number; readonly coreDumped: boolean }
}>

/**
 * @since 0.1.0
 * @category constructors
 */
export const ProcessExit = Data.taggedEnum<ProcessExit>()

/**
 * A process running inside the sandbox. Closing the scope it was spawned in kills its whole process
 * tree and waits for it to exit.
 *
 * @since 0.1.0
 * @category models
 */
export interface SandboxProcess {
  /** The process id as the transport knows it (may be a host pid or an in-sandbox pid). */
  readonly pid: number
  /** Bytes to the process's stdin; ending the sink closes stdin (EOF). */
  readonly stdin: Sink.Sink<void, Uint8Array, never, SandboxError>
  readonly stdout: Stream.Stream<Uint8Array, SandboxError>
  /** Empty when the process has a PTY (stderr is merged into the terminal). */
  readonly stderr: Stream.Stream<Uint8Array, SandboxError>
  /** Waits for the process to end. */
  readonly exit: Effect.Effect<ProcessExit, SandboxError>
  readonly signal: (signal: SignalName) => Effect.Effect<void, SandboxError>
  /** Changes the terminal size; fails with `Unsupported` without a PTY. */
  readonly resize: (size: WindowSize) => Effect.Effect<void, SandboxError>
}

/**
 * File type and attributes, in the shape SFTP v3 carries them.
 *
 * @since 0.1.0
 * @category models
 */
export interface FileAttributes {
  readonly type:
    | "File"
    | "Directory"
    | "SymbolicLink"
    | "BlockDevice"
    | "CharacterDevice"
    | "FIFO"
    | "Socket"
    | "Unknown"
  readonly size: number
  readonly uid: number
  readonly gid: number
  /** Permission bits and file type bits (`st_mode`). */
  readonly mode: number
  /** Seconds since the epoch. */
  readonly atime: number
  readonly mtime: number
  readonly nlink?: number | undefined
}

/**
 * Attributes to change; absent fields are left as they are.
 *
 * @since 0.1.0
 * @category models
 */
export interface SetAttributes {
  readonly size?: number | undefined
  readonly uid?: number | undefined
  readonly gid?: number | undefined
  /** Permission bits only. */
  readonly mode?: number | undefined
  readonly atime?: number | undefined
  readonly mtime?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DirectoryEntry {
  readonly name: string
  readonly attributes: FileAttributes
}

/**
 * @since 0.1.0
 * @category models
 */
export interface FileSystemStats {
  readonly blockSize: number
  readonly fragmentSize: number
  readonly blocks: number
  readonly blocksFree: number
  readonly blocksAvailable: number
  readonly files: number
  readonly filesFree: number
  readonly filesAvailable: number
  readonly fsid: number
  readonly flags: number
  readonly nameMax: number
}

/**
 * How to open a file (the SFTP v3 pflags).
 *
 * @since 0.1.0
 * @category models
 */
export interface OpenFlags {
  readonly read?: boolean | undefined
  readonly write?: boolean | undefined
  readonly append?: boolean | undefined
  readonly create?: boolean | undefined
  readonly truncate?: boolean | undefined
  readonly exclusive?: boolean | undefined
}

/**
 * An open file inside the sandbox. It stays open until `close`; the owner (e.g. an SFTP session)
 * closes what it opened when it ends.
 *
 * @since 0.1.0
 * @category models
 */
export interface SandboxFile {
  /** Reads up to `length` bytes at `offset`; an empty array at end of file. */
  readonly read: (offset: number, length: number) => Effect.Effect<Uint8Array, SandboxError>
  /**
   * Writes `data` at `offset`. The bytes are lent for the duration of the effect: callers (the
   * SFTP server) reuse the buffer afterwards, so an implementation that queues them must copy.
   */
  readonly write: (offset: number, data: Uint8Array) => Effect.Effect<void, SandboxError>
  readonly stat: Effect.Effect<FileAttributes, SandboxError>
  readonly setStat: (attributes: SetAttributes) => Effect.Effect<void, SandboxError>
  readonly sync: Effect.Effect<void, SandboxError>
  readonly close: Effect.Effect<void, SandboxError>
}

/**
 * File operations, with paths as seen inside the sandbox. Relative paths are resolved against the
 * sandbox's working directory. A path never reaches outside the sandbox: not through `..`, nor
 * symlinks, nor races.
 *
 * @since 0.1.0
 * @category models
 */
export interface SandboxFileSystem {
  readonly stat: (path: string) => Effect.Effect<FileAttributes, SandboxError>
  readonly lstat: (path: string) => Effect.Effect<FileAttributes, SandboxError>
  readonly open: (path: string, flags: OpenFlags, mode?: number) => Effect.Effect<SandboxFile, SandboxError>
  readonly readDirectory: (path: string) => Effect.Effect<ReadonlyArray<DirectoryEntry>, SandboxError>
  readonly makeDirectory: (path: string, mode?: number) => Effect.Effect<void, SandboxError>
  readonly removeDirectory: (path: string) => Effect.Effect<void, SandboxError>
  readonly remove: (path: string) => Effect.Effect<void, SandboxError>
  /** Fails with `AlreadyExists` when `newPath` exists, unless `overwrite` is set. */
  readonly rename: (
    oldPath: string,
    newPath: string,
    options?: { readonly overwrite?: boolean | undefined }
  ) => Effect.Effect<void, SandboxError>
  /** Canonical absolute path; the last component may be missing. */
  readonly realPath: (path: string) => Effect.Effect<string, SandboxError>
  readonly readLink: (path: string) => Effect.Effect<string, SandboxError>
  readonly symlink: (target: string, linkPath: string) => Effect.Effect<void, SandboxError>
  readonly link: (existingPath: string, newPath: string) => Effect.Effect<void, SandboxError>
  readonly setStat: (path: string, attributes: SetAttributes) => Effect.Effect<void, SandboxError>
  readonly statFileSystem: (path: string) => Effect.Effect<FileSystemStats, SandboxError>
}

/**
 * A byte stream both ways, e.g. a TCP connection opened from inside the sandbox.
 *
 * @since 0.1.0
 * @category models
 */
export interface SandboxConnection {
  readonly input: Sink.Sink<void, Uint8Array, never, SandboxError>
  readonly output: Stream.Stream<Uint8Array, SandboxError>
}

/**
 * The transport service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sandbox {
  readonly info: SandboxInfo
  readonly spawn: (options: SpawnOptions) => Effect.Effect<SandboxProcess, SandboxError, Scope.Scope>
  /** File operations with the transport's default identity (the sandbox's root for the isolated ones). */
  readonly fs: SandboxFileSystem
  /**
   * File operations with the permissions and identity of `user` (a login name, as in
   * `SpawnOptions.user`), as that user's processes have them: what the user cannot read stays
   * unreadable, and what the user creates is owned by the user. The SSH server serves SFTP through
   * it, as OpenSSH runs `sftp-server` as the logged-in user. Released with the scope; for the
   * transport's default user it may be `fs` itself. Fails with `InvalidArgument` for a user the
   * sandbox does not know, and with `Unsupported` where `spawn` would refuse that user too.
   *
   * Absent when the transport has no users of its own (`MemorySandbox`): file operations then run
   * as `fs` whoever the login user is. A sandbox that decorates another's `fs` (to log, count or
   * restrict) decorates what this returns too, or the SSH server's SFTP goes around it.
   *
   * @example
   * ```ts
   * import * as Effect from "effect/Effect"
   * import { Sandbox } from "sandbox-ssh/Sandbox"
   *
   * const readAsAlice = Effect.gen(function*() {
   *   const sandbox = yield* Sandbox
   *   const fs = sandbox.fileSystemFor === undefined ? sandbox.fs : yield* sandbox.fileSystemFor("alice")
   *   return yield* fs.stat("/root/secret") // fails with PermissionDenied for a root-only file
   * }).pipe(Effect.scoped)
   * ```
   */
  readonly fileSystemFor?: ((user: string) => Effect.Effect<SandboxFileSystem, SandboxError, Scope.Scope>) | undefined
  /** Opens a TCP connection from inside the sandbox's network (its loopback included). */
  readonly connect: (host: string, port: number) => Effect.Effect<SandboxConnection, SandboxError, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const Sandbox: Context.Tag<Sandbox, Sandbox> = Context.GenericTag<Sandbox>("sandbox-ssh/Sandbox")
