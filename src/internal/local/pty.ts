/**
 * Host-side assets of the terminal helper (see `ptyHelper.ts`): where node-pty's native module is,
 * and the per-sandbox runtime directory holding the helper script (and the isolated sandbox's agent,
 * see `agentSource.ts`).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as FsPromises from "node:fs/promises"
import { createRequire } from "node:module"
import * as Os from "node:os"
import * as Path from "node:path"
import { SandboxError } from "../../SshError.js"
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

/**
 * A host directory for files the sandbox's helpers need (bound read-only at `/run/sandbox-ssh` in
 * isolated mode). Removed when the scope closes.
 *
 * @internal
 */
export const runtimeDirectory: Effect.Effect<string, SandboxError, Scope.Scope> = Effect
  .acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const dir = await FsPromises.mkdtemp(Path.join(Os.tmpdir(), "sandbox-ssh-run-"))
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
