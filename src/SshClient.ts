/**
 * A native SSH client session to a sandbox: run commands (collected or streaming) over one
 * authenticated connection.
 *
 * @since 0.1.0
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
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
  /** PTY size; 80×24 by default. */
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
