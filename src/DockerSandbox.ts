/**
 * `DockerSandbox` runs the SSH layer against a Docker container, through the Docker Engine API on
 * the daemon's unix socket. Nothing is installed in the container and no sshd runs there: an image
 * with only BusyBox works.
 *
 * - **Processes** are Engine execs, attached over a hijacked HTTP connection (stdin streamed with
 *   EOF by half-closing it; stdout and stderr demultiplexed; a TTY sized before the command starts
 *   and resized with `/exec/{id}/resize`). Exit codes are the Engine's. Signals are sent from this
 *   host to the exec's host pid, since the Engine API has no exec-kill; a death by a signal we sent
 *   is reported as `Signaled`, any other signal death as `Exited` with `128 + n`, as `docker exec`
 *   reports it.
 * - **Files** (SFTP) go through a shell agent exec'd once in the container, which answers metadata
 *   requests with the container's own tools, and through one `dd` stream per open file for the
 *   contents. It needs a POSIX shell and BusyBox ≥ 1.33 or GNU coreutils in the image.
 * - **Connections** (`-L`, `-D`) are opened from the container's network namespace (its loopback
 *   included) by a helper this host enters it with `nsenter`.
 *
 * Signals, connections, and cleaning up processes need the daemon on this host and the rights to
 * signal its processes and enter their namespaces (root); plain exec and files work with any
 * daemon reachable through the socket.
 *
 * `layer`/`make` attach to a running container and leave it running (processes they started are
 * killed when the scope closes); `create` makes and starts one from an image and removes it when
 * the scope closes — and, with the default command, also when this process dies without closing it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { DockerSandbox, SandboxSsh } from "sandbox-ssh"
 *
 * const program = Effect.gen(function*() {
 *   const sandbox = yield* DockerSandbox.create({ image: "busybox:latest" })
 *   const client = yield* SandboxSsh.make(sandbox).openClient()
 *   const output = yield* client.exec("uname -a")
 *   console.log(output.stdoutText)
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/docker/sandbox.js"
import { Sandbox } from "./Sandbox.js"
import type { InvalidOptionError, SandboxError } from "./SshError.js"

/**
 * Options shared by `make`, `layer` and `create`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DockerSandboxCommonOptions {
  /**
   * The Engine's unix socket. Default: the path of `DOCKER_HOST` when it is `unix://...`, else
   * `/var/run/docker.sock`.
   */
  readonly socketPath?: string | undefined
  /**
   * User for processes that name none, and for file operations (a name or `uid[:gid]` the
   * container knows). Default: the container's configured user.
   */
  readonly user?: string | undefined
  /** Working directory of processes and relative paths. Default: the container's, else `/`. */
  readonly workdir?: string | undefined
  /** The shell that runs command strings and the file agent. Default `"/bin/sh"`. */
  readonly shell?: string | undefined
  /** Variables added to the environment of every process (a process's own `env` overrides them). */
  readonly env?: Readonly<Record<string, string>> | undefined
}

/**
 * Attach to an existing, running container.
 *
 * @since 0.1.0
 * @category models
 */
export interface DockerSandboxOptions extends DockerSandboxCommonOptions {
  /** Container name or id. */
  readonly container: string
}

/**
 * Create a container from an image (which must already be present: nothing is pulled).
 *
 * @since 0.1.0
 * @category models
 */
export interface DockerCreateOptions extends DockerSandboxCommonOptions {
  readonly image: string
  /** Container name. Default: one the Engine picks. */
  readonly name?: string | undefined
  /**
   * The container's main process. Default: a shell waiting on its stdin, which this process holds,
   * so that the container ends with this process.
   */
  readonly command?: ReadonlyArray<string> | undefined
  readonly hostname?: string | undefined
  /** `HostConfig.NetworkMode`, e.g. `"none"`. Default: the Engine's. */
  readonly network?: string | undefined
  /** Run an init (`docker-init`) as pid 1 that reaps orphaned processes. Default `true`. */
  readonly init?: boolean | undefined
}

/**
 * Attaches to a running container for as long as the scope. Fails with `SandboxError`: `NotFound`
 * (no such container), `Closed` (stopped or paused), `PermissionDenied` (the socket), or
 * `TransportFailed` (the daemon is unreachable); with `InvalidOptionError` for bad options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  options: DockerSandboxOptions
) => Effect.Effect<Sandbox, SandboxError | InvalidOptionError, Scope.Scope> = internal.make

/**
 * Creates and starts a container from `image`, and removes it (forcibly) when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const create: (
  options: DockerCreateOptions
) => Effect.Effect<Sandbox, SandboxError | InvalidOptionError, Scope.Scope> = internal.create

/**
 * A `Sandbox` layer attached to a running container.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: DockerSandboxOptions): Layer.Layer<Sandbox, SandboxError | InvalidOptionError> =>
  Layer.scoped(Sandbox, internal.make(options))

/**
 * A `Sandbox` layer backed by a container created from an image, removed when the layer is
 * released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerCreate = (options: DockerCreateOptions): Layer.Layer<Sandbox, SandboxError | InvalidOptionError> =>
  Layer.scoped(Sandbox, internal.create(options))
