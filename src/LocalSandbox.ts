/**
 * `LocalSandbox` is the embedded default transport: a sandbox directory on this host, isolated with
 * Linux namespaces through bubblewrap when it is installed, else plain host processes (reported as
 * not isolated). It needs no daemon.
 *
 * In isolated mode a sandbox is one persistent environment: one long-lived bubblewrap instance
 * (own PID, network, IPC, UTS and mount namespaces, no capabilities) that every process joins, so
 * a background process or a server on `127.0.0.1` started by one process is visible to the next.
 * Its `/` is the sandbox directory, with the host's `/usr` read-only and a curated `/etc`; host
 * secrets (`/etc/shadow`, `/root`, `/home`, `/etc/ssh`) are not visible. Everything it started ends
 * when its scope closes, and also when the host process is killed.
 *
 * Streams of a spawned process (`stdout`, `stderr`) are backed by the process's pipes and can each
 * be consumed once. `stdin` stays open until its sink ends: run an empty stream into it to give the
 * process EOF. File operations and TCP connections of an isolated sandbox are served by an agent
 * that is the sandbox's init (Node, no capabilities, `no_new_privs`): every path is resolved by the
 * kernel inside the sandbox's own mount namespace, so `..`, planted symlinks and symlink-swap races
 * cannot reach host files, and connections start from the sandbox's own network (its loopback).
 * File operations act as the sandbox's root (without capabilities: permission bits apply). A
 * non-isolated sandbox uses the host's files and network.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { LocalSandbox } from "sandbox-ssh"
 *
 * const program = Effect.gen(function*() {
 *   const sandbox = yield* LocalSandbox.make({ isolation: "auto" })
 *   const process = yield* sandbox.spawn({ command: sandbox.info.shell, args: ["-c", "echo hi"] })
 *   yield* Stream.run(Stream.empty, process.stdin)
 *   const output = yield* Stream.runCollect(Stream.decodeText(process.stdout))
 *   return { output, exit: yield* process.exit }
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/local/sandbox.js"
import { Sandbox } from "./Sandbox.js"
import type { InvalidOptionError, SandboxError } from "./SshError.js"

/**
 * How to make a local sandbox. Every field is optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface LocalSandboxOptions {
  /**
   * Host directory holding the sandbox; in isolated mode it becomes the sandbox's `/` (files persist
   * there across processes and sandboxes). It must exist and be writable, and should not be reachable
   * by other host users. Default: a fresh temporary directory, removed when the scope closes.
   */
  readonly root?: string | undefined
  /**
   * `"bubblewrap"`: Linux namespaces through `bwrap` (fails when it is not installed). `"none"`: plain
   * host processes in the host's file system, reported as `info.isolated: false`. Default `"auto"`:
   * bubblewrap when `/usr/bin/bwrap` (or `bwrap` on `PATH`) exists, else none.
   */
  readonly isolation?: "auto" | "bubblewrap" | "none" | undefined
  /** The shell that runs command strings (`<shell> -c <command>`). Default `"/bin/sh"`. */
  readonly shell?: string | undefined
  /**
   * Working directory of processes that name none. Default `"/root"` in isolated mode (a path inside
   * the sandbox; users other than root start in their home), the root directory in non-isolated mode
   * (relative paths resolve against it).
   */
  readonly workdir?: string | undefined
  /** Variables added to the environment of every process (a process's own `env` overrides them). */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Host name inside an isolated sandbox. Default `"sandbox"`. */
  readonly hostname?: string | undefined
}

/**
 * Makes a local sandbox that lives as long as the scope. Options are checked before anything starts:
 * an unknown `isolation`, an empty `shell`, a bad `hostname` or `env` fail with `InvalidOptionError`;
 * a `root` that is not an existing writable directory, or `isolation: "bubblewrap"` without bwrap
 * installed, fail with `SandboxError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  options?: LocalSandboxOptions
) => Effect.Effect<Sandbox, SandboxError | InvalidOptionError, Scope.Scope> = internal.make

/**
 * A `Sandbox` layer backed by one local sandbox, ended when the layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: LocalSandboxOptions): Layer.Layer<Sandbox, SandboxError | InvalidOptionError> =>
  Layer.scoped(Sandbox, internal.make(options))
