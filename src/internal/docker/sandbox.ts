/**
 * Assembles a `Sandbox` from a running container: processes through exec (`exec.ts`), files
 * through the in-container agent and `dd` streams (`agent.ts`, `fileSystem.ts`), connections
 * through a helper in the container's network namespace (`network.ts`). `create` makes the
 * container first and removes it when the scope closes.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Path from "node:path"
import type * as DockerSandbox from "../../DockerSandbox.js"
import type { Sandbox, SandboxFileSystem, SpawnOptions } from "../../Sandbox.js"
import { InvalidOptionError, SandboxError } from "../../SshError.js"
import { isValidSize } from "../sandboxProcess.js"
import * as Agent from "./agent.js"
import * as Engine from "./engine.js"
import * as Exec from "./exec.js"
import * as FileSystem from "./fileSystem.js"
import * as Host from "./host.js"
import * as Network from "./network.js"

interface ContainerInspect {
  readonly Id: string
  readonly Name: string
  readonly State: { readonly Running: boolean; readonly Paused: boolean; readonly Status: string; readonly Pid: number }
  readonly Config: { readonly WorkingDir?: string; readonly User?: string }
}

const ENV_NAME = /^[^=\0]+$/

const checkCommon = (options: DockerSandbox.DockerSandboxCommonOptions) =>
  Effect.gen(function*() {
    if (options.shell !== undefined && !options.shell.startsWith("/")) {
      return yield* Effect.fail(new InvalidOptionError({ option: "shell", detail: "must be an absolute path" }))
    }
    if (options.workdir !== undefined && !options.workdir.startsWith("/")) {
      return yield* Effect.fail(new InvalidOptionError({ option: "workdir", detail: "must be an absolute path" }))
    }
    if (options.user === "") {
      return yield* Effect.fail(new InvalidOptionError({ option: "user", detail: "must not be empty" }))
    }
    for (const name of Object.keys(options.env ?? {})) {
      if (!ENV_NAME.test(name)) {
        return yield* Effect.fail(
          new InvalidOptionError({ option: "env", detail: `invalid variable name ${JSON.stringify(name)}` })
        )
      }
    }
  })

/** `"1.41"` → 1.41 as a comparable number (minor versions are two digits since 1.12). */
const apiNumber = (version: string): number => {
  const [major, minor] = version.split(".").map(Number)
  return (major ?? 1) + (minor ?? 0) / 100
}

const connectEngine = (socketPath: string) =>
  Effect.gen(function*() {
    const engine = yield* Engine.make(socketPath)
    const version = yield* engine.json<{ readonly ApiVersion: string }>({
      method: "GET",
      path: "/version",
      operation: "connect to Docker"
    })
    return { engine, apiVersion: apiNumber(version.ApiVersion) }
  })

const inspectContainer = (engine: Engine.Engine, container: string, operation: string) =>
  engine.json<ContainerInspect>({
    method: "GET",
    path: `/containers/${encodeURIComponent(container)}/json`,
    operation,
    subject: container
  }).pipe(
    Effect.mapError((error) =>
      error.reason === "NotFound"
        ? new SandboxError({ ...error, detail: `no container named ${JSON.stringify(container)}: ${error.detail}` })
        : error
    )
  )

const notRunning = (container: string, info: ContainerInspect, operation: string) =>
  new SandboxError({
    reason: "Closed",
    operation,
    path: container,
    detail: `the container is not running (status: ${info.State.Status}${info.State.Paused ? ", paused" : ""})`
  })

const attach = (
  options: DockerSandbox.DockerSandboxOptions,
  connection: { readonly engine: Engine.Engine; readonly apiVersion: number }
): Effect.Effect<Sandbox, SandboxError, Scope.Scope> =>
  Effect.gen(function*() {
    const { apiVersion, engine } = connection
    const scope = yield* Effect.scope
    const inspected = yield* inspectContainer(engine, options.container, "attach")
    if (!inspected.State.Running || inspected.State.Paused) {
      return yield* Effect.fail(notRunning(options.container, inspected, "attach"))
    }
    const id = inspected.Id
    const shell = options.shell ?? "/bin/sh"
    const workdir = options.workdir ?? (inspected.Config.WorkingDir || "/")
    const user = options.user
    const baseEnv = Object.entries(options.env ?? {}).map(([key, value]) => `${key}=${value}`)

    let closed = false
    // process groups we started (pgid → start time of its leader): they end with the sandbox
    const groups = new Map<number, number>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        Host.killGroups(groups)
      })
    )
    const target: Exec.Target = {
      engine,
      container: id,
      name: options.container,
      apiVersion,
      local: Host.visible(inspected.State.Pid),
      started: (pid, startTime) => groups.set(pid, startTime),
      ended: (pid) => groups.delete(pid)
    }

    const spawn = (spawnOptions: SpawnOptions) =>
      Effect.gen(function*() {
        if (closed) {
          return yield* Effect.fail(
            new SandboxError({ reason: "Closed", operation: "spawn", detail: "the sandbox is closed" })
          )
        }
        const pty = spawnOptions.pty
        if (pty !== undefined && !isValidSize(pty)) {
          return yield* Effect.fail(
            new SandboxError({
              reason: "InvalidArgument",
              operation: "spawn",
              detail: `terminal size must be positive integers, got ${pty.cols}x${pty.rows}`
            })
          )
        }
        const args = spawnOptions.args ?? []
        // Engines before API 1.42 cannot size the terminal before the command starts; a resize
        // after the start races with the command reading its size. Size it from inside instead.
        const argv = pty !== undefined && apiVersion < 1.42
          ? [
            shell,
            "-c",
            `stty cols ${pty.cols} rows ${pty.rows} 2>/dev/null; exec "$0" "$@"`,
            spawnOptions.command,
            ...args
          ]
          : [spawnOptions.command, ...args]
        const env = [
          ...baseEnv,
          ...Object.entries(spawnOptions.env ?? {}).map(([key, value]) => `${key}=${value}`),
          ...(pty === undefined ? [] : [`TERM=${pty.term}`])
        ]
        return yield* Exec.spawn(target, {
          argv,
          env,
          user: spawnOptions.user ?? user,
          cwd: spawnOptions.cwd === undefined ? workdir : Path.posix.resolve(workdir, spawnOptions.cwd),
          pty,
          command: spawnOptions.command
        })
      })

    const agent = yield* Agent.make(target, { shell, user, size: 2 }, scope)
    const fs = FileSystem.make({ target, agent, workdir, user, scope })
    const containerPid = Effect.flatMap(inspectContainer(engine, id, "connect"), (info) =>
      info.State.Running && info.State.Pid > 0
        ? Effect.succeed(info.State.Pid)
        : Effect.fail(notRunning(options.container, info, "connect")))
    const network = yield* Network.make(containerPid, id, scope)

    // the Engine's default for an exec without a user
    const defaultUser = user ?? (inspected.Config.User || "root")
    const fileSystemFor = (name: string): Effect.Effect<SandboxFileSystem, SandboxError, Scope.Scope> =>
      Effect.gen(function*() {
        if (closed) {
          return yield* Effect.fail(
            new SandboxError({ reason: "Closed", operation: "open file system", detail: "the sandbox is closed" })
          )
        }
        if (name === defaultUser) {
          return fs
        }
        // the same file agent and `dd` execs, exec'd as `name`; they end with the caller's scope
        const userScope = yield* Effect.scope
        const userAgent = yield* Agent.make(target, { shell, user: name, size: 2 }, userScope)
        const userFs = FileSystem.make({ target, agent: userAgent, workdir, user: name, scope: userScope })
        // the Engine resolves the user when the first exec starts: an unknown one is reported here
        yield* userFs.realPath("/").pipe(Effect.mapError((error) =>
          new SandboxError({
            reason: /unable to find user|no matching entries/i.test(error.message) ? "InvalidArgument" : error.reason,
            operation: "open file system",
            detail: `cannot operate on files as ${JSON.stringify(name)}: ${error.detail ?? error.message}`,
            cause: error
          })
        ))
        return userFs
      })

    return {
      info: { transport: "docker", isolated: true, isolation: "docker", shell, workdir },
      spawn,
      fs,
      fileSystemFor,
      connect: network.connect
    } satisfies Sandbox
  })

/** @internal */
export const make = (
  options: DockerSandbox.DockerSandboxOptions
): Effect.Effect<Sandbox, SandboxError | InvalidOptionError, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.container === "") {
      return yield* Effect.fail(new InvalidOptionError({ option: "container", detail: "must not be empty" }))
    }
    yield* checkCommon(options)
    const connection = yield* connectEngine(options.socketPath ?? Engine.defaultSocketPath())
    return yield* attach(options, connection)
  })

/** @internal */
export const create = (
  options: DockerSandbox.DockerCreateOptions
): Effect.Effect<Sandbox, SandboxError | InvalidOptionError, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.image === "") {
      return yield* Effect.fail(new InvalidOptionError({ option: "image", detail: "must not be empty" }))
    }
    yield* checkCommon(options)
    const connection = yield* connectEngine(options.socketPath ?? Engine.defaultSocketPath())
    const { engine } = connection
    const shell = options.shell ?? "/bin/sh"
    // Without a command of the caller's, the container's main process waits on its stdin, which
    // stays attached to this process: if this process dies, stdin ends, the container stops and
    // the engine removes it (AutoRemove), even though no finalizer ran.
    const holdsStdin = options.command === undefined
    const created = yield* Effect.acquireRelease(
      engine.json<{ readonly Id: string }>({
        method: "POST",
        path: "/containers/create",
        query: { name: options.name },
        operation: "create container",
        subject: options.name ?? options.image,
        body: {
          Image: options.image,
          Cmd: options.command ?? [shell, "-c", "read -r _; exit 0"],
          Env: Object.entries(options.env ?? {}).map(([key, value]) => `${key}=${value}`),
          ...(options.hostname === undefined ? {} : { Hostname: options.hostname }),
          ...(options.workdir === undefined ? {} : { WorkingDir: options.workdir }),
          ...(options.user === undefined ? {} : { User: options.user }),
          OpenStdin: holdsStdin,
          StdinOnce: holdsStdin,
          AttachStdin: holdsStdin,
          Labels: { "sandbox-ssh": "1" },
          HostConfig: {
            AutoRemove: true,
            Init: options.init ?? true,
            ...(options.network === undefined ? {} : { NetworkMode: options.network })
          }
        }
      }),
      (created) =>
        engine.request({
          method: "DELETE",
          path: `/containers/${created.Id}`,
          query: { force: true, v: true },
          operation: "remove container"
        }).pipe(
          Effect.ignore,
          // with AutoRemove the engine may already be removing it: wait until it is gone
          Effect.zipRight(
            engine.request({ method: "GET", path: `/containers/${created.Id}/json`, operation: "remove container" })
              .pipe(
                Effect.flatMap(() => Effect.fail("present" as const)),
                Effect.catchTag(
                  "SandboxError",
                  (error) => error.reason === "NotFound" ? Effect.void : Effect.fail("present" as const)
                ),
                Effect.retry(Schedule.spaced(Duration.millis(50)))
              )
          ),
          Effect.timeoutOption(Duration.seconds(30)),
          Effect.ignore
        )
    )
    if (holdsStdin) {
      yield* engine.hijack({
        method: "POST",
        path: `/containers/${created.Id}/attach`,
        query: { stream: true, stdin: true, stdout: false, stderr: false },
        operation: "create container",
        subject: options.name ?? options.image
      })
    }
    yield* engine.request({
      method: "POST",
      path: `/containers/${created.Id}/start`,
      operation: "start container",
      subject: options.name ?? options.image
    })
    return yield* attach({ ...options, container: created.Id }, connection)
  })
