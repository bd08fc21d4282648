/**
 * A native SSH client session to a sandbox: run commands (collected or streaming) and attach the
 * local terminal to a shell over one authenticated connection.
 *
 * @since 0.1.0
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import type { Readable, Writable } from "node:stream"
import { layerCommandExecutor } from "./internal/client/commandExecutor.js"
import type { ProcessExit, SignalName, WindowSize } from "./Sandbox.js"
import type { SftpClient } from "./SftpClient.js"
import type { SshError } from "./SshError.js"
import type { SshOutput } from "./SshOutput.js"

/**
 * Options of a streaming process.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProcessOptions {
  /** Request a PTY: stdout and stderr are merged into the terminal. Default `false`. */
  readonly tty?: boolean | undefined
  /** Terminal type for the PTY; the client's `term` by default. */
  readonly term?: string | undefined
  /** PTY size; by default the local terminal's when stdout is one, else 80×24. */
  readonly size?: WindowSize | undefined
  /** Environment variables for this command (sent as SSH `env` requests). */
  readonly env?: Readonly<Record<string, string>> | undefined
}

/**
 * Options of `exec`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExecOptions extends ProcessOptions {
  /** Bytes for the command's stdin, followed by EOF. Without it stdin is at EOF from the start. */
  readonly stdin?: string | Uint8Array | undefined
}

/**
 * A remote command running on its own channel, shaped like `@effect/platform`'s
 * `CommandExecutor.Process`. Each of `stdout` and `stderr` can be consumed once; leaving one
 * unconsumed eventually stalls the other (flow control applies to the whole channel).
 *
 * @since 0.1.0
 * @category models
 */
export interface SshProcess {
  /** Ending the sink sends EOF. */
  readonly stdin: Sink.Sink<void, Uint8Array, never, SshError>
  readonly stdout: Stream.Stream<Uint8Array, SshError>
  readonly stderr: Stream.Stream<Uint8Array, SshError>
  /** How the command ended. Fails with `ChannelError("NoExitStatus")` if the server never said. */
  readonly exit: Effect.Effect<ProcessExit, SshError>
  /** The exit code, `128 + n` for a signal death. */
  readonly exitCode: Effect.Effect<number, SshError>
  readonly isRunning: Effect.Effect<boolean>
  /** Sends an SSH `signal` request (e.g. `"INT"`, `"TERM"`). */
  readonly signal: (signal: SignalName) => Effect.Effect<void, SshError>
  /** Sends a `window-change` request (PTY only). */
  readonly resize: (size: WindowSize) => Effect.Effect<void, SshError>
}

/**
 * The local end of an attach: something readable that can be put in raw mode, such as
 * `process.stdin` (a `tty.ReadStream`).
 *
 * @since 0.1.0
 * @category models
 */
export interface AttachInput extends Readable {
  readonly isTTY?: boolean | undefined
  readonly isRaw?: boolean | undefined
  readonly setRawMode?: ((mode: boolean) => unknown) | undefined
}

/**
 * The local end of an attach that output goes to, such as `process.stdout` (a `tty.WriteStream`):
 * its `columns`/`rows` size the PTY and its `"resize"` events become SSH `window-change` requests.
 *
 * @since 0.1.0
 * @category models
 */
export interface AttachOutput extends Writable {
  readonly isTTY?: boolean | undefined
  readonly columns?: number | undefined
  readonly rows?: number | undefined
}

/**
 * Options of `attach` (the reference's `WithSSHAttachTerm`, `WithSSHDetachKeys`).
 *
 * @since 0.1.0
 * @category models
 */
export interface AttachOptions {
  /** Terminal type for the PTY; the client's `term` by default. */
  readonly term?: string | undefined
  /**
   * The detach sequence, in Docker's syntax: keys separated by commas, each one ASCII character
   * (`a`, `%`), `ctrl-a`..`ctrl-z`, `ctrl-@`, `ctrl-[`, `ctrl-\`, `ctrl-]`, `ctrl-^`, `ctrl-_` or
   * `DEL` — e.g. `"ctrl-p,ctrl-q"`. Default `"ctrl-]"`. Anything else fails with
   * `InvalidOptionError` before the shell starts.
   */
  readonly detachKeys?: string | undefined
  /** The terminal's input; `process.stdin` by default. Must be a TTY (`isTTY`) with `setRawMode`. */
  readonly input?: AttachInput | undefined
  /** The terminal's output; `process.stdout` by default. Must be a TTY (`isTTY`). */
  readonly output?: AttachOutput | undefined
}

/**
 * How an attach ended: the shell exited (`code` is `128 + n` when it died by signal `n`, named in
 * `signal`), or the detach sequence was typed and the shell is still running.
 *
 * @since 0.1.0
 * @category models
 */
export type AttachResult = Data.TaggedEnum<{
  Exited: { readonly code: number; readonly signal?: SignalName | undefined }
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- Data.TaggedEnum's idiom for a case without fields
  Detached: {}
}>

/**
 * Constructors and matchers of `AttachResult`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const AttachResult = Data.taggedEnum<AttachResult>()

/**
 * What `attach` returns when the session was detached rather than ended: `-1`, which no exit
 * status can be (statuses are 0–255), as Go's `ProcessState.ExitCode()` reports a process that
 * has not exited. Use `attachResult` to get a tagged result instead.
 *
 * @since 0.1.0
 * @category constants
 */
export const DETACHED_CODE = -1

/**
 * @since 0.1.0
 * @category models
 */
export interface SshClient {
  /** The login user of this session. */
  readonly user: string
  /** The terminal type used for PTYs. */
  readonly term: string
  /**
   * Runs `command` through the sandbox's shell and collects its output. Interrupting the effect
   * ends the remote process and frees its channel.
   */
  readonly exec: (command: string, options?: ExecOptions) => Effect.Effect<SshOutput, SshError>
  /** Starts `command` with streaming stdin/stdout/stderr; closing the scope ends it. */
  readonly spawn: (command: string, options?: ProcessOptions) => Effect.Effect<SshProcess, SshError, Scope.Scope>
  /**
   * Bridges the local terminal to the sandbox's login shell: a PTY sized to the terminal, raw mode
   * on the input (restored on every way out: exit, detach, failure, interruption, and SIGTERM,
   * SIGHUP or SIGINT to this program while attached), keystrokes forwarded, resizes relayed.
   * Returns the shell's exit code (`128 + n` when killed by signal `n`), or `DETACHED_CODE` (`-1`)
   * when the detach sequence was typed.
   *
   * Detaching leaves the shell running — a later `exec` on this client sees it — on a channel that
   * stays open until the client closes (closing the channel would end the shell); its further
   * output is discarded. Interrupting the effect ends the shell. Fails with `NotATerminalError` when
   * the input or output is not a terminal and with `InvalidOptionError` for bad detach keys or
   * term, both before anything starts.
   */
  readonly attach: (options?: AttachOptions) => Effect.Effect<number, SshError>
  /** `attach`, telling an exit (`Exited { code }`) from a detach (`Detached`). */
  readonly attachResult: (options?: AttachOptions) => Effect.Effect<AttachResult, SshError>
  /**
   * Opens an SFTP session on this connection; closing the scope closes it. Fails with
   * `SftpError("Unsupported")` when the server refuses the subsystem (a client opened with
   * `sftp: false`).
   */
  readonly sftp: () => Effect.Effect<SftpClient, SshError, Scope.Scope>
  /**
   * Closes the connection, ending every process it started. Idempotent; later calls on the client
   * fail with `ConnectionError("Closed")`.
   */
  readonly close: Effect.Effect<void>
}

/**
 * A `CommandExecutor` that runs `@effect/platform` commands inside the sandbox over this client:
 * `Command.make("uname", "-a").pipe(Command.string)` works unchanged. Arguments are quoted for the
 * sandbox's shell; `Command.workingDirectory`, `Command.env` and piped commands are supported.
 *
 * @since 0.1.0
 * @category layers
 */
export const commandExecutor: (client: SshClient) => Layer.Layer<CommandExecutor.CommandExecutor> = layerCommandExecutor
