/**
 * The isolated sandbox: one long-lived bubblewrap instance per sandbox, entered by every process
 * with `nsenter`.
 *
 * - `bwrap --die-with-parent --unshare-{ipc,pid,net,uts,cgroup} --cap-drop ALL ... --json-status-fd 3
 *   <init>` is started once (`--unshare-all` when not run by root, see `bwrapArgs`); the `child-pid`
 *   it reports (bwrap's pid 1 inside the new PID namespace) is the target every process joins, once
 *   the init has said it runs (bwrap reports the pid before the mounts exist). The init lives until
 *   its stdin closes: closing it (or the host dying) ends bwrap, and the kernel then kills
 *   everything left in the PID namespace.
 * - The sandbox's `/` is the writable host directory `root`; host `/usr` is bound read-only with the
 *   merged-usr symlinks, plus a curated `/etc` written into `root` on first start. No host secret
 *   (`/etc/shadow`, `/root`, `/home`, `/etc/ssh`) is bound.
 * - The init of `LocalSandbox` is its agent (`agentSource.ts`: file operations, TCP connections),
 *   reached through a Unix socket given as the init's fd 4 (`socket`, see `agentChannel.ts`).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as FsPromises from "node:fs/promises"
import type * as Net from "node:net"
import * as Path from "node:path"
import type { Readable } from "node:stream"
import { SandboxError } from "../../SshError.js"
import { agentFileName } from "./agentSource.js"
import type { PtyHelperSpec } from "./ptyHelper.js"
import { ptyHelperFileName } from "./ptyHelper.js"
import type { PasswdEntry } from "./users.js"

/** @internal */
export const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/** Where the runtime directory is bound inside the sandbox. @internal */
export const runtimeMount = "/run/sandbox-ssh"

const nsenter = "/usr/bin/nsenter"
const setpriv = "/usr/bin/setpriv"
const setsid = "/usr/bin/setsid"
const env = "/usr/bin/env"

/** `bwrap` at `/usr/bin/bwrap`, else on `PATH`. @internal */
export const findBwrap = (): string | undefined => {
  const candidates = [
    "/usr/bin/bwrap",
    ...(process.env.PATH ?? "").split(":").filter((d) => d !== "")
      .map((dir) => Path.join(dir, "bwrap"))
  ]
  return candidates.find((candidate) => {
    try {
      Fs.accessSync(candidate, Fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/** The host tools every exec goes through. @internal */
export const missingTools = (): Array<string> =>
  [nsenter, setpriv, setsid, env].filter((tool) => {
    try {
      Fs.accessSync(tool, Fs.constants.X_OK)
      return false
    } catch {
      return true
    }
  })

/** @internal */
export interface RootOptions {
  readonly root: string
  readonly hostname: string
  readonly shell: string
}

const etcFiles = (options: RootOptions): Record<string, string> => ({
  passwd: `root:x:0:0:root:/root:${options.shell}\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
  group: "root:x:0:\nnogroup:x:65534:\n",
  hostname: `${options.hostname}\n`,
  hosts: `127.0.0.1\tlocalhost\n127.0.1.1\t${options.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
  "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n" +
    "protocols: files\nservices: files\n",
  profile: `PATH="${basePath}"\nexport PATH\n` +
    "if [ \"$(id -u)\" -eq 0 ]; then PS1='# '; else PS1='$ '; fi\n"
})

const directories: ReadonlyArray<readonly [string, number]> = [
  ["etc", 0o755],
  ["tmp", 0o1777],
  ["root", 0o700],
  ["home", 0o755],
  ["var", 0o755],
  ["var/tmp", 0o1777],
  ["run", 0o755],
  ["usr", 0o755]
]

/**
 * Lays out the sandbox directory on first start; leaves whatever is already there. Refuses entries
 * that are not real directories (a symlink left by an earlier run must not redirect host writes).
 *
 * @internal
 */
export const prepareRoot = (options: RootOptions): Effect.Effect<void, SandboxError> =>
  Effect.tryPromise({
    try: async () => {
      for (const [relative, mode] of directories) {
        const path = Path.join(options.root, relative)
        try {
          await FsPromises.mkdir(path, { mode })
          await FsPromises.chmod(path, mode)
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
          const stat = await FsPromises.lstat(path)
          if (!stat.isDirectory()) {
            throw Object.assign(new Error(`${path} exists and is not a directory`), { code: "EINVAL" })
          }
        }
      }
      for (const [name, link] of hostTopLevel()) {
        if (link === undefined) continue
        await FsPromises.symlink(link, Path.join(options.root, name)).catch((error: NodeJS.ErrnoException) => {
          // an existing entry is the sandbox's own business
          if (error.code !== "EEXIST") throw error
        })
      }
      for (const [name, content] of Object.entries(etcFiles(options))) {
        // O_EXCL never follows a symlink, and an existing file is the sandbox's own business
        await FsPromises.writeFile(Path.join(options.root, "etc", name), content, { flag: "wx", mode: 0o644 })
          .catch((error: NodeJS.ErrnoException) => {
            if (error.code !== "EEXIST") throw error
          })
      }
    },
    catch: (cause) =>
      new SandboxError({
        reason: "InvalidArgument",
        operation: "prepare sandbox root",
        path: options.root,
        detail: cause instanceof Error ? cause.message : String(cause),
        cause
      })
  })

/**
 * The default init: says it is running, then waits for its stdin to close.
 *
 * @internal
 */
export const defaultInit: ReadonlyArray<string> = ["/bin/sh", "-c", "echo ready; read _ || true"]

/** @internal */
export interface BubblewrapOptions extends RootOptions {
  readonly bwrap: string
  readonly runtimeDir: string
  readonly nativeDir: string | undefined
  /**
   * The command the sandbox's init runs: it must write to its stdout once running, and exit when
   * its stdin closes.
   */
  readonly init?: ReadonlyArray<string> | undefined
  /** A socket the init gets as its fd 4 (the caller closes its own copy once started). */
  readonly socket?: Net.Socket | undefined
}

const mergedUsrLinks = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]

/** `/bin`, `/lib`... as the host has them: `[name, symlink target]`, or `[name, undefined]` for a directory. */
const hostTopLevel = (): Array<readonly [string, string | undefined]> =>
  mergedUsrLinks.flatMap((name): Array<readonly [string, string | undefined]> => {
    try {
      const stat = Fs.lstatSync(`/${name}`)
      if (stat.isSymbolicLink()) return [[name, Fs.readlinkSync(`/${name}`)] as const]
      if (stat.isDirectory()) return [[name, undefined] as const]
    } catch {
      // not on this host
    }
    return []
  })

/** Where the host's node binary is found inside the sandbox. @internal */
export const nodeInside = (): string =>
  process.execPath.startsWith("/usr/")
    ? process.execPath
    : `${runtimeMount}/node/${Path.basename(process.execPath)}`

/** @internal */
export const bwrapArgs = (options: BubblewrapOptions): Array<string> => {
  const args = [
    "--die-with-parent",
    // `--unshare-all` would add a user namespace, which bwrap run by root maps to uid 0 alone: no
    // other user of the sandbox's /etc/passwd could exist. Run by root, the same set without it
    // keeps host uids (processes still have no capabilities); run by anyone else, bwrap needs the
    // user namespace anyway.
    ...(process.getuid?.() === 0
      ? ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
      : ["--unshare-all"]),
    "--cap-drop",
    "ALL",
    "--hostname",
    options.hostname,
    "--bind",
    options.root,
    "/",
    "--ro-bind",
    "/usr",
    "/usr"
  ]
  for (const [name, link] of hostTopLevel()) {
    // merged-usr symlinks are created in the root by prepareRoot (bwrap's --symlink fails when the
    // link already exists, i.e. on every start after the first)
    if (link === undefined) args.push("--ro-bind", `/${name}`, `/${name}`)
  }
  args.push(
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--ro-bind-try",
    "/etc/ld.so.cache",
    "/etc/ld.so.cache",
    "--ro-bind-try",
    "/etc/alternatives",
    "/etc/alternatives",
    "--ro-bind-try",
    "/etc/localtime",
    "/etc/localtime",
    "--ro-bind",
    options.runtimeDir,
    runtimeMount
  )
  if (options.nativeDir !== undefined) args.push("--ro-bind", options.nativeDir, `${runtimeMount}/native`)
  if (!process.execPath.startsWith("/usr/")) {
    args.push("--ro-bind", Path.dirname(process.execPath), `${runtimeMount}/node`)
  }
  args.push(
    "--chdir",
    "/",
    "--json-status-fd",
    "3",
    "--",
    ...(options.init ?? defaultInit)
  )
  return args
}

/**
 * A running sandbox.
 *
 * @internal
 */
export interface Bubblewrap {
  /** Host pid of bwrap's pid 1 inside the namespaces: the `nsenter` target. */
  readonly target: number
  /** The bwrap process; its stdin is the init's stdin (closing it ends the sandbox). */
  readonly process: ChildProcess.ChildProcess
  readonly isClosed: () => boolean
}

const startError = (detail: string, cause?: unknown) =>
  new SandboxError({ reason: "SpawnFailed", operation: "start sandbox", detail, cause })

const launch = (options: BubblewrapOptions) =>
  Effect.flatMap(
    Deferred.make<void>(),
    (exited) =>
      Effect.async<readonly [ChildProcess.ChildProcess, number, Deferred.Deferred<void>], SandboxError>(
        (resume) => {
          const child = ChildProcess.spawn(options.bwrap, bwrapArgs(options), {
            stdio: options.socket === undefined
              ? ["pipe", "pipe", "pipe", "pipe"]
              : ["pipe", "pipe", "pipe", "pipe", options.socket],
            env: { PATH: basePath },
            cwd: "/",
            // out of the host program's process group: a terminal's Ctrl-C must not kill the sandbox
            // before the program's finalizers run; --die-with-parent still ties it to our life
            detached: true
          })
          let stderr = ""
          let status = ""
          let target: number | undefined
          let ready = false
          let done = false
          const finish = (
            effect: Effect.Effect<readonly [ChildProcess.ChildProcess, number, Deferred.Deferred<void>], SandboxError>
          ) => {
            if (done) return
            done = true
            resume(effect)
          }
          // bwrap reports the pid before it sets up the mounts: the sandbox is ready once the init
          // (started after the pivot into the new root) has spoken too
          const maybeReady = () => {
            if (target !== undefined && ready) finish(Effect.succeed([child, target, exited]))
          }
          child.stderr!.setEncoding("utf8")
          child.stderr!.on("data", (data: string) => {
            if (stderr.length < 8192) stderr += data
          })
          child.stdout!.once("data", () => {
            ready = true
            maybeReady()
          })
          // the init may print more; a full pipe must never block it
          child.stdout!.resume()
          const statusFd = child.stdio[3] as Readable
          statusFd.setEncoding("utf8")
          statusFd.on("data", (data: string) => {
            if (target !== undefined) return
            status += data
            for (const line of status.split("\n")) {
              try {
                const pid = (JSON.parse(line) as { "child-pid"?: unknown })["child-pid"]
                if (typeof pid === "number") target = pid
              } catch {
                // an incomplete line: wait for more
              }
            }
            maybeReady()
          })
          statusFd.on("error", () => {})
          child.stdin!.on("error", () => {})
          child.on("error", (error) => finish(Effect.fail(startError(error.message, error))))
          child.on("exit", (code, signal) => {
            Deferred.unsafeDone(exited, Effect.void)
            finish(Effect.fail(startError(
              `bwrap exited (${signal ?? code}) before the sandbox started: ${stderr.trim() || "no message"}`
            )))
          })
          return Effect.sync(() => {
            // interrupted while starting (e.g. the timeout): nothing of it may stay behind
            try {
              process.kill(-child.pid!, "SIGKILL")
            } catch {
              child.kill("SIGKILL")
            }
            for (const stream of child.stdio) stream?.destroy()
          })
        }
      ).pipe(
        Effect.timeoutFail({
          duration: Duration.seconds(30),
          onTimeout: () => startError("the sandbox did not start within 30 s")
        })
      )
  )

const stop = (child: ChildProcess.ChildProcess, exited: Deferred.Deferred<void>) =>
  Effect.sync(() => child.stdin?.end()).pipe(
    Effect.zipRight(Effect.timeoutOption(Deferred.await(exited), Duration.seconds(2))),
    Effect.flatMap((stopped) =>
      stopped._tag === "Some" ? Effect.void : Effect.sync(() => {
        try {
          process.kill(-child.pid!, "SIGKILL")
        } catch {
          child.kill("SIGKILL")
        }
      }).pipe(Effect.zipRight(Effect.timeoutOption(Deferred.await(exited), Duration.seconds(2))))
    ),
    Effect.ensuring(Effect.sync(() => {
      for (const stream of child.stdio) stream?.destroy()
    })),
    Effect.ignore
  )

/**
 * Waits (bounded) until bwrap's pid 1 inside the namespace is gone: the outer bwrap can exit while
 * the kernel is still tearing the PID namespace down, and "closed" must mean nothing is left.
 */
const namespaceGone = (target: number): Effect.Effect<void> =>
  Effect.suspend(() => {
    const alive = () => {
      try {
        const stat = Fs.readFileSync(`/proc/${target}/stat`, "utf8")
        return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
      } catch {
        return false
      }
    }
    const poll: Effect.Effect<void> = Effect.suspend(() =>
      alive() ? Effect.sleep(Duration.millis(5)).pipe(Effect.zipRight(poll)) : Effect.void
    )
    return poll.pipe(Effect.interruptible, Effect.timeoutOption(Duration.seconds(2)), Effect.asVoid)
  })

/**
 * Starts the sandbox in the current scope; closing the scope ends it and everything inside.
 *
 * @internal
 */
export const start = (options: BubblewrapOptions): Effect.Effect<Bubblewrap, SandboxError, Scope.Scope> =>
  Effect.gen(function*() {
    let closed = false
    const [child, target] = yield* Effect.acquireRelease(
      launch(options),
      ([child, target, exited]) =>
        Effect.suspend(() => {
          closed = true
          return stop(child, exited).pipe(Effect.zipRight(namespaceGone(target)))
        })
    )
    // closed by us, or ended on its own (killed from outside): either way nothing can enter it
    return {
      target,
      process: child,
      isClosed: () => closed || child.exitCode !== null || child.signalCode !== null
    }
  })

/**
 * The argv that runs `argv` inside the sandbox as `user`, in `cwd`, with no capabilities, in a new
 * session (so its process group can be signalled as one).
 *
 * `nsenter --wd=<dir>` is deliberately not used: it opens the directory in the *host's* mount
 * namespace before entering, which hands the process a working directory outside the sandbox.
 * The directory is changed inside, by `env -C`, after the privileges are dropped.
 *
 * @internal
 */
export const enterArgs = (
  target: number,
  user: PasswdEntry,
  cwd: string | undefined,
  argv: ReadonlyArray<string>
): Array<string> => [
  `--target=${target}`,
  "--all",
  "--root",
  "--wd",
  setpriv,
  "--inh-caps=-all",
  "--ambient-caps=-all",
  "--bounding-set=-all",
  "--no-new-privs",
  ...(user.uid === 0 ? [] : [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups"]),
  "--",
  setsid,
  ...(cwd === undefined ? [] : [env, "-C", cwd, "--"]),
  ...argv
]

/** @internal */
export const nsenterPath = nsenter

/** @internal */
export const setsidPath = setsid

/**
 * The agent as the sandbox's init (see `agentSource.ts`). The shell says `ready` at once and becomes
 * the agent (same pid, stdin and fd 4): processes can enter the sandbox without waiting for Node to
 * boot, and requests sent meanwhile wait in the socket.
 *
 * @internal
 */
export const agentInit = (): Array<string> => [
  "/bin/sh",
  "-c",
  "echo ready; exec \"$0\" \"$1\"",
  nodeInside(),
  `${runtimeMount}/${agentFileName}`
]

/** The terminal helper's spec and argv inside the sandbox. @internal */
export const ptyHelperArgv = (spec: Omit<PtyHelperSpec, "native" | "setsid">): Array<string> => [
  nodeInside(),
  `${runtimeMount}/${ptyHelperFileName}`,
  JSON.stringify({ ...spec, native: `${runtimeMount}/native/pty.node`, setsid })
]
