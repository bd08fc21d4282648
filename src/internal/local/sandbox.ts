/**
 * Assembles a `Sandbox` from the local parts: an isolated one (bubblewrap + nsenter) or a
 * non-isolated one (plain host processes and files).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as FsPromises from "node:fs/promises"
import type * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import type { Sandbox, SandboxFileSystem, SandboxProcess, SpawnOptions } from "../../Sandbox.js"
import { type InvalidOptionError, SandboxError } from "../../SshError.js"
import * as Procfs from "../procfs.js"
import { isValidSize } from "../sandboxProcess.js"
import * as Agent from "./agent.js"
import * as AgentChannel from "./agentChannel.js"
import { agentFileName } from "./agentSource.js"
import * as Bubblewrap from "./bubblewrap.js"
import * as HostFs from "./hostfs.js"
import * as HostNet from "./hostnet.js"
import * as Options from "./options.js"
import * as LocalProcess from "./process.js"
import * as Pty from "./pty.js"
import * as Users from "./users.js"
import type { PasswdEntry } from "./users.js"

/**
 * What other local parts (and tests) need to reach a sandbox.
 *
 * @internal
 */
export interface LocalSandboxInternals {
  readonly isolation: "bubblewrap" | "none"
  /** The sandbox directory on the host. */
  readonly root: string
  /** Host directory bound read-only at `/run/sandbox-ssh` inside (helper scripts live here). */
  readonly runtimeDir: string
  /** Isolated mode: host pid of bwrap's pid 1 in the sandbox's namespaces, the `nsenter` target. */
  readonly nsenterTarget?: number | undefined
  /** Isolated mode: the bwrap process; its stdin is the init's stdin. */
  readonly bwrap?: ChildProcess.ChildProcess | undefined
  /** Isolated mode: host pid of the init, the agent serving file operations and connections. */
  readonly agentPid?: number | undefined
}

const registry = new WeakMap<Sandbox, LocalSandboxInternals>()

/**
 * The internals of a sandbox made by `LocalSandbox.make`, or `undefined` for any other sandbox.
 *
 * @internal
 */
export const internals = (sandbox: Sandbox): LocalSandboxInternals | undefined => registry.get(sandbox)

/**
 * A fresh sandbox directory `<tmp>/sandbox-ssh-XXXXXX/root`: the root itself is 0755 so that the
 * sandbox's non-root users can traverse `/`, while its 0700 parent keeps host users out (the
 * sandbox's root may create set-uid files in it).
 */
const temporaryRoot = Effect.acquireRelease(
  Effect.tryPromise({
    try: async () => {
      const parent = await FsPromises.mkdtemp(Path.join(Os.tmpdir(), "sandbox-ssh-"))
      await FsPromises.mkdir(Path.join(parent, "root"), { mode: 0o755 })
      return parent
    },
    catch: (cause) =>
      new SandboxError({
        reason: "TransportFailed",
        operation: "create sandbox",
        detail: `cannot create a temporary directory: ${cause instanceof Error ? cause.message : String(cause)}`,
        cause
      })
  }),
  (dir) =>
    Effect.promise(() => FsPromises.rm(dir, { recursive: true, force: true }).catch(() => undefined)).pipe(
      Effect.timeoutOption("30 seconds")
    )
)

const nativeMissing = () =>
  new SandboxError({
    reason: "Unsupported",
    operation: "spawn",
    detail: "terminals need @lydell/node-pty's prebuilt binary for this platform, which is not installed"
  })

const checkPty = (options: SpawnOptions) =>
  options.pty === undefined || isValidSize(options.pty)
    ? Effect.void
    : Effect.fail(
      new SandboxError({
        reason: "InvalidArgument",
        operation: "spawn",
        detail: `terminal size must be positive integers, got ${options.pty.cols}x${options.pty.rows}`
      })
    )

/** The command group of an nsenter'd process: nsenter's forked child once `setsid` made it a leader. */
const enteredGroup = (nsenterPid: number): number | undefined => {
  const child = Procfs.children(nsenterPid)[0]
  if (child === undefined) return undefined
  return Procfs.groupOf(child)?.[0] === child ? child : undefined
}

const fileSystemError = (error: SandboxError) =>
  new SandboxError({ reason: error.reason, operation: "open file system", detail: error.detail, cause: error.cause })

/** A user's file agent that did not come up, with what it said on stderr. */
const userAgentFailed = (user: string, detail: string, cause?: unknown) =>
  new SandboxError({
    reason: "SpawnFailed",
    operation: "open file system",
    detail: `the file agent of ${JSON.stringify(user)} did not start: ${detail}`,
    cause
  })

interface EnteredAgent {
  readonly child: ChildProcess.ChildProcess
  readonly exited: Deferred.Deferred<void>
  readonly stderr: () => string
}

/**
 * Starts the agent program inside the sandbox as `user`, through the same entry path as that user's
 * processes (nsenter + setpriv: the user's uid, gid and groups, no capabilities, no_new_privs), with
 * `socket` as its fd 4 and a stdin pipe the host keeps open: the agent exits when it closes.
 */
const launchUserAgent = (target: number, user: PasswdEntry, socket: Net.Socket) =>
  Effect.flatMap(Deferred.make<void>(), (exited) =>
    Effect.async<EnteredAgent, SandboxError>((resume) => {
      const child = ChildProcess.spawn(
        Bubblewrap.nsenterPath,
        Bubblewrap.enterArgs(target, user, undefined, [
          Bubblewrap.nodeInside(),
          `${Bubblewrap.runtimeMount}/${agentFileName}`,
          // for `ps` (and tests): whose agent this is
          `--user=${user.name}`
        ]),
        {
          stdio: ["pipe", "ignore", "pipe", "ignore", socket],
          env: { PATH: Bubblewrap.basePath },
          cwd: "/",
          // its own process group, as every process of the sandbox: a terminal's Ctrl-C aimed at the
          // host program does not reach it, and the group can be killed as one
          detached: true
        }
      )
      let stderr = ""
      child.stderr!.setEncoding("utf8")
      child.stderr!.on("data", (data: string) => {
        if (stderr.length < 8192) stderr += data
      })
      child.stderr!.on("error", () => {})
      child.stdin!.on("error", () => {})
      child.on("exit", () => Deferred.unsafeDone(exited, Effect.void))
      const onError = (error: Error) => {
        child.removeListener("spawn", onSpawn)
        for (const stream of child.stdio) stream?.destroy()
        resume(Effect.fail(userAgentFailed(user.name, error.message, error)))
      }
      const onSpawn = () => {
        child.removeListener("error", onError)
        child.on("error", () => {})
        resume(Effect.succeed({ child, exited, stderr: () => stderr.trim() }))
      }
      child.once("error", onError)
      child.once("spawn", onSpawn)
    }))

/** Waits (bounded) until none of `pids` is alive. */
const allGone = (pids: ReadonlyArray<number>): Effect.Effect<void> => {
  const poll: Effect.Effect<void> = Effect.suspend(() =>
    pids.some(Procfs.isAlive) ? Effect.sleep(Duration.millis(2)).pipe(Effect.zipRight(poll)) : Effect.void
  )
  return poll.pipe(Effect.interruptible, Effect.timeoutOption(Duration.seconds(2)), Effect.asVoid)
}

/**
 * Ends a user's agent: its stdin closes (the agent exits, then nsenter, which waits for it); if it
 * has not within 2 s, the whole tree is killed. Either way nothing of it is left. Never fails.
 */
const stopUserAgent = ({ child, exited }: EnteredAgent) =>
  Effect.sync(() => child.stdin!.end()).pipe(
    Effect.zipRight(Effect.timeoutOption(Deferred.await(exited), Duration.seconds(2))),
    Effect.flatMap((stopped) =>
      stopped._tag === "Some" ? Effect.void : Effect.suspend(() => {
        const tree = Procfs.descendants(child.pid!)
        Procfs.signalTree(child.pid!, "SIGKILL")
        return Effect.timeoutOption(Deferred.await(exited), Duration.seconds(2)).pipe(
          Effect.zipRight(allGone(tree))
        )
      })
    ),
    Effect.ensuring(Effect.sync(() => {
      for (const stream of child.stdio) stream?.destroy()
    })),
    Effect.ignore
  )

/**
 * The file operations of `user`: a second agent, run as that user, for the current scope. Ready once
 * it answered a first request, so that a failure to start is reported here rather than by the
 * first file operation.
 */
const userFileSystem = (target: number, user: PasswdEntry, workdir: string) =>
  Effect.gen(function*() {
    // acquired first, so that it is destroyed after the agent has ended
    const channel = yield* AgentChannel.make
    const entered = yield* Effect.acquireRelease(launchUserAgent(target, user, channel.peer), stopUserAgent)
    // the agent holds its end now: the host's copy would hide the agent's exit
    channel.peer.destroy()
    // nsenter's forked child, which became the agent: asked at the first open, which comes after
    // the agent has answered below
    let agentPid: number | undefined
    const agent = yield* Agent.make({
      channel,
      workdir,
      agentPid: () => agentPid ??= Procfs.children(entered.child.pid!)[0]
    })
    yield* agent.fs.realPath("/").pipe(
      Effect.mapError((error) => userAgentFailed(user.name, entered.stderr() || error.message, error)),
      Effect.timeoutFail({
        duration: Duration.seconds(10),
        onTimeout: () => userAgentFailed(user.name, "no answer within 10 s")
      })
    )
    return agent.fs
  })

const makeIsolated = (resolved: Options.Resolved, root: string) =>
  Effect.gen(function*() {
    const workdir = resolved.workdir ?? "/root"
    yield* Bubblewrap.prepareRoot({ root, hostname: resolved.hostname, shell: resolved.shell })
    const runtimeDir = yield* Pty.runtimeDirectory
    const nativeDir = Pty.nativeDirectory()
    // acquired first, so that it is destroyed after the sandbox has ended
    const channel = yield* AgentChannel.make
    const box = yield* Bubblewrap.start({
      bwrap: resolved.bwrap!,
      root,
      hostname: resolved.hostname,
      shell: resolved.shell,
      runtimeDir,
      nativeDir,
      init: Bubblewrap.agentInit(),
      socket: channel.peer
    })
    // the agent holds its end now: the host's copy would hide the agent's exit
    channel.peer.destroy()
    // bwrap's pid 1 has one child yet, the agent (orphans of later processes are reparented to it)
    const agentPid = Procfs.children(box.target)[0]
    // its finalizer runs before the sandbox's: what is in flight then fails with Closed
    const agent = yield* Agent.make({ channel, workdir, agentPid: () => agentPid })
    // As sshd, a user starts in their home (root's is the default workdir), unless a workdir was
    // configured for everyone: /root is not even searchable by anyone else.
    const startDirectory = (user: PasswdEntry) => resolved.workdir !== undefined || user.uid === 0 ? workdir : user.home

    const spawn = (options: SpawnOptions) =>
      Effect.gen(function*() {
        if (box.isClosed()) {
          return yield* Effect.fail(
            new SandboxError({ reason: "Closed", operation: "spawn", detail: "the sandbox is closed" })
          )
        }
        yield* checkPty(options)
        if (options.pty !== undefined && nativeDir === undefined) return yield* Effect.fail(nativeMissing())
        const user = yield* Users.lookup(root, options.user ?? "root")
        const env: Record<string, string> = {
          PATH: Bubblewrap.basePath,
          HOME: user.home,
          USER: user.name,
          LOGNAME: user.name,
          SHELL: user.shell === "" ? resolved.shell : user.shell,
          ...(options.pty === undefined ? {} : { TERM: options.pty.term }),
          ...resolved.env,
          ...options.env
        }
        const cwd = options.cwd ?? startDirectory(user)
        const args = options.args ?? []
        return yield* LocalProcess.spawn(
          options.pty === undefined
            ? {
              file: Bubblewrap.nsenterPath,
              args: Bubblewrap.enterArgs(box.target, user, cwd, [options.command, ...args]),
              env,
              pty: false,
              commandGroup: enteredGroup,
              onStartFailure: "fail",
              command: options.command
            }
            : {
              file: Bubblewrap.nsenterPath,
              args: Bubblewrap.enterArgs(
                box.target,
                user,
                undefined,
                Bubblewrap.ptyHelperArgv({
                  file: options.command,
                  args,
                  cwd,
                  env,
                  cols: options.pty.cols,
                  rows: options.pty.rows
                })
              ),
              env: { PATH: Bubblewrap.basePath },
              pty: true,
              commandGroup: enteredGroup,
              onStartFailure: "fail",
              command: options.command
            }
        )
      })

    const fileSystemFor = (name: string): Effect.Effect<SandboxFileSystem, SandboxError, Scope.Scope> =>
      Effect.gen(function*() {
        if (box.isClosed()) {
          return yield* Effect.fail(
            new SandboxError({ reason: "Closed", operation: "open file system", detail: "the sandbox is closed" })
          )
        }
        const user = yield* Effect.mapError(Users.lookup(root, name), fileSystemError)
        // uid 0 enters with root's own credentials (see enterArgs), which are the main agent's
        if (user.uid === 0) return agent.fs
        return yield* userFileSystem(box.target, user, startDirectory(user))
      })

    const sandbox: Sandbox = {
      info: { transport: "local", isolated: true, isolation: "bubblewrap", shell: resolved.shell, workdir, root },
      spawn,
      fs: agent.fs,
      fileSystemFor,
      connect: agent.connect
    }
    registry.set(sandbox, {
      isolation: "bubblewrap",
      root,
      runtimeDir,
      nsenterTarget: box.target,
      bwrap: box.process,
      agentPid
    })
    return sandbox
  })

const makeHost = (resolved: Options.Resolved, root: string) =>
  Effect.gen(function*() {
    const workdir = resolved.workdir === undefined ? root : Path.resolve(root, resolved.workdir)
    const runtimeDir = yield* Pty.runtimeDirectory
    const nativeDir = Pty.nativeDirectory()
    const hostUser = Os.userInfo().username
    let closed = false
    // process groups started here (pgid → leader start time): background jobs left by a process
    // die with the sandbox, as they do in an isolated one
    const groups = new Map<number, number>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        Procfs.killGroups(groups)
      })
    )
    const track = (process: SandboxProcess) =>
      process.pid <= 0 ? Effect.succeed(process) : Effect.acquireRelease(
        Effect.sync(() => {
          groups.set(process.pid, Procfs.startTime(process.pid) ?? 0)
          return process
        }),
        () =>
          Effect.sync(() => {
            if (!Procfs.groupHasMembers(process.pid)) groups.delete(process.pid)
          })
      )

    const spawn = (options: SpawnOptions) =>
      Effect.gen(function*() {
        if (closed) {
          return yield* Effect.fail(
            new SandboxError({ reason: "Closed", operation: "spawn", detail: "the sandbox is closed" })
          )
        }
        yield* checkPty(options)
        if (options.user !== undefined && options.user !== hostUser) {
          return yield* Effect.fail(
            new SandboxError({
              reason: "Unsupported",
              operation: "spawn",
              detail: `a non-isolated sandbox runs every process as the host user ${hostUser}, ` +
                `not ${JSON.stringify(options.user)}`
            })
          )
        }
        const env: Record<string, string> = {
          ...(process.env as Record<string, string>),
          ...(options.pty === undefined ? {} : { TERM: options.pty.term }),
          ...resolved.env,
          ...options.env
        }
        const cwd = options.cwd === undefined ? workdir : Path.resolve(workdir, options.cwd)
        const args = options.args ?? []
        if (options.pty === undefined) {
          return yield* Effect.flatMap(
            LocalProcess.spawn({
              file: options.command,
              args,
              env,
              cwd,
              pty: false,
              commandGroup: (pid) => pid,
              onStartFailure: "exit",
              command: options.command
            }),
            track
          )
        }
        if (nativeDir === undefined) return yield* Effect.fail(nativeMissing())
        return yield* Effect.flatMap(
          LocalProcess.spawn({
            file: process.execPath,
            args: Pty.hostHelperArgv(runtimeDir, nativeDir, {
              file: options.command,
              args,
              cwd,
              env,
              cols: options.pty.cols,
              rows: options.pty.rows
            }),
            env: { PATH: process.env.PATH ?? Bubblewrap.basePath },
            cwd: "/",
            pty: true,
            commandGroup: (pid) => pid,
            onStartFailure: "fail",
            command: options.command
          }),
          track
        )
      })

    const fs = HostFs.make(workdir)
    const sandbox: Sandbox = {
      info: { transport: "local", isolated: false, isolation: "none", shell: resolved.shell, workdir, root },
      spawn,
      fs,
      // as spawn: the host user only, since the host program cannot take on another identity
      fileSystemFor: (user) =>
        user === hostUser ? Effect.succeed(fs) : Effect.fail(
          new SandboxError({
            reason: "Unsupported",
            operation: "open file system",
            detail: `a non-isolated sandbox operates on files as the host user ${hostUser}, ` +
              `not ${JSON.stringify(user)}`
          })
        ),
      connect: HostNet.connect
    }
    registry.set(sandbox, { isolation: "none", root, runtimeDir })
    return sandbox
  })

/** @internal */
export const make = (
  options: Options.Options = {}
): Effect.Effect<Sandbox, SandboxError | InvalidOptionError, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* Options.resolve(options)
    // acquired before the sandbox so that it is removed after the sandbox ended
    const root = resolved.root ?? Path.join(yield* temporaryRoot, "root")
    return resolved.isolation === "bubblewrap" ? yield* makeIsolated(resolved, root) : yield* makeHost(resolved, root)
  })
