/**
 * TCP connections from inside a container's network namespace (its loopback included), for `-L`
 * and `-D` forwarding. The Engine API has nothing for this, and a tool inside the container (`nc`)
 * is missing from many images and cannot report "connected" before the first byte. So, from this
 * host: one small Node helper per sandbox, started on first use with `nsenter --net=/proc/<pid of
 * the container's init>/ns/net`, connects on request and hands the connected socket back over its
 * IPC channel (file-descriptor passing), so the bytes then flow through a plain kernel socket with
 * no copy through a helper. Needs the daemon on this host and the right to enter its namespaces
 * (root).
 *
 * Handles are sent one at a time, each after the previous one was acknowledged, so that the
 * helper never starts reading a socket it is about to hand over (Node reads a fresh socket right
 * after `connect` unless it is handed over synchronously).
 *
 * @internal
 */
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import type * as Net from "node:net"
import type { SandboxConnection } from "../../Sandbox.js"
import { SandboxError, type SandboxErrorReason } from "../../SshError.js"
import * as ReadableStream from "../readableStream.js"
import { invalidPort } from "../sandboxConnection.js"
import * as Streams from "./streams.js"

const helperSource = String.raw`
const net = require("net")
const queue = []
let busy = false
const next = () => {
  if (busy || queue.length === 0) return
  busy = true
  const m = queue.shift()
  const s = net.connect({ host: m.host, port: m.port })
  const fail = (e) => {
    s.destroy()
    process.send({ id: m.id, code: e.code || "ECONNREFUSED", message: e.message })
    busy = false
    next()
  }
  s.once("error", fail)
  s.once("connect", () => {
    s.removeListener("error", fail)
    s.on("error", () => {})
    s.setNoDelay(true)
    // synchronously, before Node starts reading it
    process.send({ id: m.id }, s)
  })
}
process.on("message", (m) => {
  if (m.ack) { busy = false; return next() }
  queue.push(m)
  next()
})
process.on("disconnect", () => process.exit(0))
`

const reasonOf = (code: string): SandboxErrorReason => {
  switch (code) {
    case "EINVAL":
    case "ERR_INVALID_ARG_TYPE":
    case "ERR_SOCKET_BAD_PORT":
      return "InvalidArgument"
    default:
      return "ConnectFailed"
  }
}

interface Reply {
  readonly id: number
  readonly code?: string
  readonly message?: string
}

/** @internal */
export interface Network {
  readonly connect: (host: string, port: number) => Effect.Effect<SandboxConnection, SandboxError, Scope.Scope>
}

const nsenterPath = () =>
  ["/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"].find((path) => Fs.existsSync(path)) ?? "nsenter"

/**
 * The helper is started on the first connection and ends with `scope`. `containerPid` gives the
 * host pid of the container's init (it changes when the container restarts).
 *
 * @internal
 */
export const make = (
  containerPid: Effect.Effect<number, SandboxError>,
  /** Shown in the helper's command line (`ps`), e.g. the container id. */
  label: string,
  scope: Scope.Scope
): Effect.Effect<Network> =>
  Effect.gen(function*() {
    const lock = yield* Effect.makeSemaphore(1)
    let helper: { child: ChildProcess.ChildProcess; pid: number } | undefined = undefined
    let nextId = 1
    const waiting = new Map<number, (reply: Reply, handle: Net.Socket | undefined) => void>()

    const unavailable = (detail: string, cause?: unknown) =>
      new SandboxError({ reason: "Unsupported", operation: "connect", detail, cause })

    const startHelper = (pid: number) =>
      Effect.async<ChildProcess.ChildProcess, SandboxError>((resume) => {
        const child = ChildProcess.spawn(
          nsenterPath(),
          [`--net=/proc/${pid}/ns/net`, "--", process.execPath, "-e", helperSource, `sandbox-ssh-connect:${label}`],
          // no NODE_OPTIONS: loaders of the host program (tsx, test runners) have no business here
          {
            stdio: ["ignore", "ignore", "pipe", "ipc"],
            serialization: "json",
            env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }
          }
        )
        let stderr = ""
        child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
        const onError = (cause: Error) =>
          resume(Effect.fail(unavailable(`cannot start the connection helper with nsenter: ${cause.message}`, cause)))
        const onExit = () =>
          resume(Effect.fail(
            unavailable(
              `cannot enter the container's network namespace (connections are opened from this host with ` +
                `nsenter, which needs root and a Docker daemon on this host): ${stderr.trim()}`
            )
          ))
        child.once("error", onError)
        child.once("exit", onExit)
        child.on("message", (reply: Reply, handle: Net.Socket | undefined) => {
          const resolve = waiting.get(reply.id)
          waiting.delete(reply.id)
          if (handle !== undefined) child.send({ ack: true })
          if (resolve !== undefined) resolve(reply, handle)
          else handle?.destroy()
        })
        // the helper is up when its IPC channel answers: send nothing until then
        child.once("spawn", () => {
          child.removeListener("error", onError)
          child.on("error", () => {})
          child.removeListener("exit", onExit)
          child.once("exit", () => {
            helper = undefined
            for (const [id, resolve] of waiting) {
              waiting.delete(id)
              resolve({ id, code: "EPIPE", message: `the connection helper exited: ${stderr.trim()}` }, undefined)
            }
          })
          resume(Effect.succeed(child))
        })
      })

    const stopHelper = Effect.sync(() => {
      helper?.child.kill("SIGKILL")
      helper = undefined
    })
    yield* Scope.addFinalizer(scope, stopHelper)

    const ensureHelper = lock.withPermits(1)(Effect.gen(function*() {
      const pid = yield* containerPid
      if (helper !== undefined && helper.pid === pid && helper.child.exitCode === null) return helper.child
      if (helper !== undefined) yield* stopHelper
      const child = yield* startHelper(pid)
      helper = { child, pid }
      return child
    }))

    const open = (host: string, port: number) =>
      Effect.flatMap(ensureHelper, (child) =>
        Effect.async<Net.Socket, SandboxError>((resume) => {
          const id = nextId++
          let cancelled = false
          waiting.set(id, (reply, handle) => {
            if (cancelled) return handle?.destroy()
            if (handle !== undefined) {
              handle.on("error", () => {})
              return resume(Effect.succeed(handle))
            }
            resume(Effect.fail(
              new SandboxError({
                reason: reasonOf(reply.code ?? ""),
                operation: "connect",
                path: `${host}:${port}`,
                detail: reply.message ?? "connection failed"
              })
            ))
          })
          child.send({ id, host, port })
          return Effect.sync(() => {
            cancelled = true
          })
        }))

    const connect = (host: string, port: number): Effect.Effect<SandboxConnection, SandboxError, Scope.Scope> =>
      Effect.suspend(() => {
        const invalid = invalidPort(host, port)
        if (invalid !== undefined) return Effect.fail(invalid)
        const onError = (cause: unknown) =>
          new SandboxError({
            reason: "ConnectFailed",
            operation: "connect",
            path: `${host}:${port}`,
            detail: cause instanceof Error ? cause.message : String(cause),
            cause
          })
        return Effect.acquireRelease(
          open(host, port).pipe(
            Effect.timeout(Duration.seconds(75)),
            Effect.catchTag("TimeoutException", () =>
              Effect.fail(
                new SandboxError({
                  reason: "ConnectFailed",
                  operation: "connect",
                  path: `${host}:${port}`,
                  detail: "timed out"
                })
              ))
          ),
          (socket) => Effect.sync(() => socket.destroy())
        ).pipe(Effect.map((socket): SandboxConnection => ({
          input: NodeSink.fromWritable<SandboxError, Uint8Array>(() => socket, onError, { endOnDone: false }).pipe(
            Sink.mapEffect(() => Streams.halfClose(socket))
          ),
          output: ReadableStream.fromReadable(() => socket, onError)
        })))
      })

    return { connect }
  })
