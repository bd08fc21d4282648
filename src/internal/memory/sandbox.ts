/**
 * Assembles a memory sandbox: one tree, one runner and one network, shared by every process,
 * file operation and connection, and bounded by the scope it is made in.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as MemorySandbox from "../../MemorySandbox.js"
import type * as Sandbox from "../../Sandbox.js"
import { compileHandlers } from "./command.js"
import { makeFileSystem, MemoryTree, runSync, toBytes } from "./fileSystem.js"
import { connect, type Network } from "./network.js"
import { type Runner, spawn } from "./process.js"

const absolute = (path: string, base: string): string => path.startsWith("/") ? path : `${base}/${path}`

/** @internal */
export const make = (
  options: MemorySandbox.MemorySandboxOptions = {}
): Effect.Effect<Sandbox.Sandbox, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    const shell = options.shell ?? "/bin/sh"
    const tree = new MemoryTree(now)
    // A bad seed is a mistake in the test itself, so it is a defect rather than a typed error.
    const workdir = yield* Effect.sync(() =>
      runSync("make", options.workdir ?? "/root", () => {
        tree.setAttributes(tree.makeDirectories("/tmp", now), { mode: 0o1777 }, now)
        return tree.directoryPath(tree.makeDirectories(absolute(options.workdir ?? "/root", "/"), now))
      })
    )
    yield* Effect.sync(() => {
      for (const [path, content] of Object.entries(options.files ?? {})) {
        runSync("make", path, () => {
          const full = absolute(path, workdir)
          if (full.endsWith("/")) tree.makeDirectories(full, now)
          else tree.seedFile(full, toBytes(content), now)
        })
      }
    })

    let closed = false
    let pid = 100
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
      })
    )

    const runner: Runner = {
      tree,
      shell,
      workdir,
      user: options.user ?? "root",
      env: options.env ?? {},
      handlers: compileHandlers(options.handlers),
      fallback: options.fallback ?? "not-found",
      scope,
      nextPid: () => pid++,
      isClosed: () => closed
    }
    const network: Network = { ports: options.ports ?? {}, scope, isClosed: () => closed }

    const sandbox: Sandbox.Sandbox = {
      info: { transport: "memory", isolated: true, isolation: "memory", shell, workdir },
      spawn: (spawnOptions) => spawn(runner, spawnOptions),
      fs: makeFileSystem(tree, workdir),
      connect: (host, port) => connect(network, host, port)
    }
    return sandbox
  })
