/**
 * Host-side assets of the terminal helper (see `ptyHelper.ts`): where node-pty's native module is,
 * and the per-sandbox runtime directory holding the helper script (and the isolated sandbox's agent,
 * see `agentSource.ts`).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as FsPromises from "node:fs/promises"
import { createRequire } from "node:module"
import * as Os from "node:os"
import * as Path from "node:path"
import { SandboxError } from "../../SshError.js"
import * as Procfs from "../procfs.js"
import { agentFileName, agentSource } from "./agentSource.js"
import { ptyHelperFileName, ptyHelperSource, type PtyHelperSpec } from "./ptyHelper.js"

/**
 * The directory holding node-pty's prebuilt `pty.node` for this platform.
 *
 * @internal
 */
export const nativeDirectory = (): string | undefined => {
  try {
    const require = createRequire(import.meta.url)
    return Path.dirname(require.resolve(`@lydell/node-pty-${process.platform}-${process.arch}/pty.node`))
  } catch {
    return undefined
  }
}

const runtimePrefix = "sandbox-ssh-run-"

/** The inode of this process's PID namespace (`0` when it cannot be read). */
const pidNamespace = (): string => {
  try {
    return /\[(\d+)\]/.exec(Fs.readlinkSync("/proc/self/ns/pid"))?.[1] ?? "0"
  } catch {
    return "0"
  }
}

/**
 * Removes the runtime directories of processes that are gone: a host program killed with SIGKILL
 * cannot remove its own. A directory is named after its owner (`sandbox-ssh-run-<pid namespace>.
 * <pid>.<start time>-<random>`; the name is not visible inside the sandbox), and only directories
 * of this uid whose owner, in this PID namespace (a `/tmp` shared with a container must not lose
 * the container's directories), no longer exists or whose pid now belongs to a later process are
 * removed; nothing is followed through a symlink. Best effort: whatever fails is left for the next
 * sweep.
 *
 * @internal
 */
export const sweepRuntimeDirectories = (): void => {
  const tmp = Os.tmpdir()
  let entries: Array<string>
  try {
    entries = Fs.readdirSync(tmp)
  } catch {
    return
  }
  const uid = process.getuid?.()
  const namespace = pidNamespace()
  for (const name of entries) {
    const owner = /^sandbox-ssh-run-(\d+)\.(\d+)\.(\d+)-/.exec(name)
    if (owner === null || owner[1] !== namespace) continue
    const pid = Number(owner[2])
    // a zombie counts as gone: its parent may be slow to reap it (or be gone itself)
    if (pid === process.pid || (Procfs.isAlive(pid) && Procfs.startTime(pid) === Number(owner[3]))) continue
    const dir = Path.join(tmp, name)
    try {
      const stats = Fs.lstatSync(dir)
      if (stats.isDirectory() && stats.uid === uid) Fs.rmSync(dir, { recursive: true, force: true })
    } catch {
      // raced with another sweep: leave it
    }
  }
}

/**
 * A host directory for files the sandbox's helpers need (bound read-only at `/run/sandbox-ssh` in
 * isolated mode). Removed when the scope closes; one left by a process killed with SIGKILL is
 * removed when a later one is created (`sweepRuntimeDirectories`).
 *
 * @internal
 */
export const runtimeDirectory: Effect.Effect<string, SandboxError, Scope.Scope> = Effect
  .acquireRelease(
    Effect.tryPromise({
      try: async () => {
        sweepRuntimeDirectories()
        const owner = `${pidNamespace()}.${process.pid}.${Procfs.startTime(process.pid) ?? 0}-`
        const dir = await FsPromises.mkdtemp(Path.join(Os.tmpdir(), runtimePrefix + owner))
        // readable by the sandbox's non-root users; it holds nothing secret
        await FsPromises.chmod(dir, 0o755)
        await FsPromises.mkdir(Path.join(dir, "native"))
        await FsPromises.mkdir(Path.join(dir, "node"))
        await FsPromises.writeFile(Path.join(dir, ptyHelperFileName), ptyHelperSource, { mode: 0o644 })
        await FsPromises.writeFile(Path.join(dir, agentFileName), agentSource, { mode: 0o644 })
        return dir
      },
      catch: (cause) =>
        new SandboxError({
          reason: "TransportFailed",
          operation: "create runtime directory",
          detail: cause instanceof Error ? cause.message : String(cause),
          cause
        })
    }),
    (dir) =>
      Effect.promise(() => FsPromises.rm(dir, { recursive: true, force: true }).catch(() => undefined)).pipe(
        Effect.timeoutOption("10 seconds")
      )
  )

/**
 * The argv of the terminal helper run on the host (non-isolated mode).
 *
 * @internal
 */
export const hostHelperArgv = (
  runtimeDir: string,
  nativeDir: string,
  spec: Omit<PtyHelperSpec, "native" | "setsid">
): Array<string> => [
  Path.join(runtimeDir, ptyHelperFileName),
  JSON.stringify({ ...spec, native: Path.join(nativeDir, "pty.node"), setsid: "/usr/bin/setsid" })
]
