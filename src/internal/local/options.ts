/**
 * Validation and defaults of `LocalSandbox` options, all checked before anything starts.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FsPromises from "node:fs/promises"
import * as Path from "node:path"
import { InvalidOptionError, SandboxError } from "../../SshError.js"
import * as Bubblewrap from "./bubblewrap.js"

/** @internal */
export interface Options {
  readonly root?: string | undefined
  readonly isolation?: "auto" | "bubblewrap" | "none" | undefined
  readonly shell?: string | undefined
  readonly workdir?: string | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly hostname?: string | undefined
}

/** Options with defaults applied, except the root (which may be a temp dir made later). @internal */
export interface Resolved {
  readonly root: string | undefined
  readonly isolation: "bubblewrap" | "none"
  readonly bwrap: string | undefined
  readonly shell: string
  readonly workdir: string | undefined
  readonly env: Readonly<Record<string, string>>
  readonly hostname: string
}

const invalid = (option: string, detail: string) => Effect.fail(new InvalidOptionError({ option, detail }))

const hostnamePattern = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

const checkRoot = (root: string) =>
  Effect.tryPromise({
    try: async () => {
      const stat = await FsPromises.stat(root)
      if (!stat.isDirectory()) throw new Error("not a directory")
      await FsPromises.access(root, FsPromises.constants.W_OK | FsPromises.constants.X_OK)
      return await FsPromises.realpath(root)
    },
    catch: (cause) =>
      new SandboxError({
        reason: "InvalidArgument",
        operation: "create sandbox",
        path: root,
        detail: `the root must be an existing, writable directory (${
          cause instanceof Error ? cause.message : String(cause)
        })`,
        cause
      })
  })

/** @internal */
export const resolve = (options: Options): Effect.Effect<Resolved, InvalidOptionError | SandboxError> =>
  Effect.gen(function*() {
    const isolation = options.isolation ?? "auto"
    if (isolation !== "auto" && isolation !== "bubblewrap" && isolation !== "none") {
      return yield* invalid("isolation", `expected "auto", "bubblewrap" or "none", got ${JSON.stringify(isolation)}`)
    }
    const shell = options.shell ?? "/bin/sh"
    if (typeof shell !== "string" || shell === "" || shell.includes("\0")) {
      return yield* invalid("shell", "must be a non-empty path, e.g. /bin/sh")
    }
    const hostname = options.hostname ?? "sandbox"
    if (typeof hostname !== "string" || hostname.length > 64 || !hostnamePattern.test(hostname)) {
      return yield* invalid("hostname", `not a valid host name: ${JSON.stringify(hostname)}`)
    }
    const env = options.env ?? {}
    for (const [key, value] of Object.entries(env)) {
      if (key === "" || key.includes("=") || key.includes("\0") || typeof value !== "string" || value.includes("\0")) {
        return yield* invalid(
          "env",
          `bad variable ${JSON.stringify(key)}: names are non-empty without "=", values strings`
        )
      }
    }
    if (options.workdir !== undefined && (typeof options.workdir !== "string" || options.workdir === "")) {
      return yield* invalid("workdir", "must be a non-empty path")
    }
    if (options.root !== undefined && (typeof options.root !== "string" || options.root === "")) {
      return yield* invalid("root", "must be a non-empty path")
    }

    const bwrap = isolation === "none" ? undefined : Bubblewrap.findBwrap()
    if (isolation === "bubblewrap" && bwrap === undefined) {
      return yield* Effect.fail(
        new SandboxError({
          reason: "Unsupported",
          operation: "create sandbox",
          detail: "isolation \"bubblewrap\" needs bwrap, which is not installed: apt-get install bubblewrap"
        })
      )
    }
    const mode = bwrap === undefined ? "none" : "bubblewrap"
    if (mode === "bubblewrap") {
      const missing = Bubblewrap.missingTools()
      if (missing.length > 0) {
        return yield* Effect.fail(
          new SandboxError({
            reason: "Unsupported",
            operation: "create sandbox",
            detail: `isolated processes need ${missing.join(", ")}: apt-get install util-linux coreutils`
          })
        )
      }
    }
    if (mode === "bubblewrap" && options.workdir !== undefined && !Path.posix.isAbsolute(options.workdir)) {
      return yield* invalid("workdir", `must be an absolute path inside the sandbox, got ${options.workdir}`)
    }
    const root = options.root === undefined ? undefined : yield* checkRoot(options.root)
    return {
      root,
      isolation: mode,
      bwrap,
      shell,
      workdir: options.workdir,
      env,
      hostname
    }
  })
