/**
 * `MemorySandbox` is a `Sandbox` for dependency-injected tests: an in-memory POSIX-like file system
 * and scripted command handlers, with no processes, sockets or files on the host. Swap
 * `MemorySandbox.layer(...)` in where a program uses `LocalSandbox.layer(...)`, and the same SSH
 * client, exec and SFTP code runs against scripted behaviour.
 *
 * Commands are matched by their *command string*: the `<command>` of `[shell, "-c", <command>]`
 * (how the SSH layer runs `exec` requests), or the argv joined by spaces otherwise. The first
 * matching handler runs; an unmatched command exits with 127 and `sh: 1: <cmd>: not found`, as a
 * shell would. Nothing is interpreted as shell syntax: `a && b` is one command string to match.
 *
 * The streams of a process and of a connection honour backpressure (a handler writing to an
 * unread stdout waits, as a process does on a full pipe) and each can be consumed once: stopping
 * to read one closes its read end, and a handler or service that writes to it afterwards is
 * interrupted (a process ends `Signaled` with `PIPE`, as on SIGPIPE). Bytes written to a process's
 * stdin or a connection's input after the other side stopped reading are discarded.
 *
 * Limits, on purpose: every user acts as root (no permission checks, uid/gid 0), the file system
 * is mounted `noatime` and takes its times from the Effect `Clock` (0 under a `TestClock`), a PTY
 * has no line discipline (no echo, no CRLF translation, stderr joins stdout), and the network only
 * has the ports scripted in `options.ports`.
 *
 * @example
 * ```ts
 * import * as Effect from "effect/Effect"
 * import * as MemorySandbox from "sandbox-ssh/MemorySandbox"
 *
 * const TestSandbox = MemorySandbox.layer({
 *   files: { "/etc/motd": "hello\n" },
 *   handlers: [
 *     MemorySandbox.handler("uname -s", { stdout: "Linux\n" }),
 *     MemorySandbox.handler(/^deploy /, (ctx) => Effect.succeed({ stdout: `deploying ${ctx.args[0]}\n` })),
 *     ...MemorySandbox.builtins
 *   ],
 *   ports: { 8080: (conn) => conn.write("HTTP/1.0 200 OK\r\n\r\n") }
 * })
 *
 * // program.pipe(Effect.provide(TestSandbox))
 * ```
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import * as internalBuiltins from "./internal/memory/builtins.js"
import * as internal from "./internal/memory/sandbox.js"
import * as Sandbox from "./Sandbox.js"
import type { SandboxError } from "./SshError.js"

/**
 * How a scripted command ends. Absent fields mean no output and exit code 0; `signal` makes the
 * process end as killed by that signal (exit code `128 + n`). Exit codes are taken modulo 256.
 *
 * @since 0.1.0
 * @category models
 */
export interface HandlerResult {
  readonly stdout?: string | Uint8Array | undefined
  readonly stderr?: string | Uint8Array | undefined
  readonly exitCode?: number | undefined
  readonly signal?: Sandbox.SignalName | undefined
}

/**
 * The terminal of a process spawned with a PTY.
 *
 * @since 0.1.0
 * @category models
 */
export interface HandlerPty {
  readonly term: string
  /** The current size; `resize` changes it. */
  readonly size: Effect.Effect<Sandbox.WindowSize>
  /** The current size, then every change. */
  readonly sizes: Stream.Stream<Sandbox.WindowSize>
}

/**
 * What a handler function gets about the process it plays.
 *
 * @since 0.1.0
 * @category models
 */
export interface HandlerContext {
  /** The command string the handler was matched against. */
  readonly command: string
  /**
   * The words after the program name. For a shell command string they are split as a shell would
   * split a simple command (quotes and backslashes honoured, nothing expanded); for an argv spawn
   * they are the argv as given.
   */
  readonly args: ReadonlyArray<string>
  /** The sandbox's base environment with the spawn's `env` on top. */
  readonly env: Readonly<Record<string, string>>
  /** The absolute working directory. */
  readonly cwd: string
  readonly user: string
  /** The process's stdin; ends when the writer ends it. Can be consumed once. */
  readonly stdin: Stream.Stream<Uint8Array>
  /** Writes to stdout now, waiting while the reader is behind (output from the result follows). */
  readonly stdout: (data: string | Uint8Array) => Effect.Effect<void>
  /** Writes to stderr now (to the terminal when the process has a PTY). */
  readonly stderr: (data: string | Uint8Array) => Effect.Effect<void>
  /** The terminal, when the process was spawned with one. */
  readonly pty: HandlerPty | undefined
  /** The sandbox's file system, with relative paths resolved against `cwd`. */
  readonly fs: Sandbox.SandboxFileSystem
}

/**
 * A scripted command. It runs until it returns or the process is signalled (then it is
 * interrupted). A `SandboxError` it fails with is printed on stderr and the process exits with 1,
 * as a program reports a failed system call; a defect makes `exit` die.
 *
 * @since 0.1.0
 * @category models
 */
export type HandlerFn = (context: HandlerContext) => Effect.Effect<HandlerResult | void, SandboxError>

/**
 * Matches a command string: exactly, by regular expression, or by predicate.
 *
 * @since 0.1.0
 * @category models
 */
export type CommandMatcher = string | RegExp | ((command: string) => boolean)

/**
 * @since 0.1.0
 * @category models
 */
export interface Handler {
  readonly match: CommandMatcher
  readonly run: HandlerResult | HandlerFn
}

/**
 * Handlers in the order they are tried, or a record of exact command strings.
 *
 * @since 0.1.0
 * @category models
 */
export type Handlers = ReadonlyArray<Handler> | Readonly<Record<string, HandlerResult | HandlerFn>>

/**
 * The server side of a connection opened with `connect` to a scripted port.
 *
 * @since 0.1.0
 * @category models
 */
export interface PortConnection {
  readonly host: string
  readonly port: number
  /** Bytes from the client; ends when the client ends its input. Can be consumed once. */
  readonly input: Stream.Stream<Uint8Array>
  /**
   * Bytes to the client. Ending this sink does not close the connection; returning does. Writing
   * after the client stopped reading interrupts the service.
   */
  readonly output: Sink.Sink<void, Uint8Array>
  readonly write: (data: string | Uint8Array) => Effect.Effect<void>
}

/**
 * A scripted TCP service. The connection closes when the returned effect completes; a failure
 * reaches the client as a `SandboxError` with reason `"Closed"` (a reset). The scope is the
 * connection's.
 *
 * @since 0.1.0
 * @category models
 */
export type PortHandler = (connection: PortConnection) => Effect.Effect<void, unknown, Scope.Scope>

/**
 * @since 0.1.0
 * @category models
 */
export interface MemorySandboxOptions {
  /**
   * Initial files, by path (relative paths are under `workdir`); parent directories are created.
   * A path ending in `/` creates an empty directory.
   */
  readonly files?: Readonly<Record<string, string | Uint8Array>> | undefined
  readonly handlers?: Handlers | undefined
  /** What runs an unmatched command; `"not-found"` (the default) exits 127 as a shell does. */
  readonly fallback?: "not-found" | HandlerFn | undefined
  /** Defaults to `"/root"`; created when missing. */
  readonly workdir?: string | undefined
  /** Defaults to `"/bin/sh"`. */
  readonly shell?: string | undefined
  /** The login name when a spawn names none; defaults to `"root"`. */
  readonly user?: string | undefined
  /** Added to the base environment (`PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `PWD`). */
  readonly env?: Readonly<Record<string, string>> | undefined
  /**
   * Scripted TCP services reachable through `connect`: a key `"5432"` (or the number) answers on
   * the loopback addresses, a key `"db.internal:5432"` on that host only. Anything else is refused.
   */
  readonly ports?: Readonly<Record<string | number, PortHandler>> | undefined
}

/**
 * Builds a handler.
 *
 * @since 0.1.0
 * @category constructors
 */
export const handler = (match: CommandMatcher, run: HandlerResult | HandlerFn): Handler => ({ match, run })

/**
 * Opt-in handlers for a few simple commands: `true`, `false`, `echo [-n] ...`, `cat [file ...]`
 * (stdin to stdout without files), `exit [n]`, `pwd` and `sleep <seconds>` (on the Effect
 * `Clock`, so a `TestClock` controls it). They match only simple commands (no pipes, redirections,
 * expansions or lists), by program name or `/bin/<name>` and `/usr/bin/<name>`.
 *
 * @since 0.1.0
 * @category handlers
 */
export const builtins: ReadonlyArray<Handler> = internalBuiltins.builtins

/**
 * Creates a memory sandbox. Its scope bounds everything it runs: closing it interrupts every
 * handler and scripted connection still running.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (options?: MemorySandboxOptions) => Effect.Effect<Sandbox.Sandbox, never, Scope.Scope> =
  internal.make

/**
 * A `Sandbox` layer backed by memory.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: MemorySandboxOptions): Layer.Layer<Sandbox.Sandbox> =>
  Layer.scoped(Sandbox.Sandbox, make(options))
