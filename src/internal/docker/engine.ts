/**
 * A minimal Docker Engine API client over the daemon's unix socket, on plain `node:http`.
 *
 * Why not dockerode or `@effect/platform`'s `HttpClient`: exec attach needs HTTP connection
 * hijacking (`Upgrade: tcp`, a `101` answer, then the raw socket both ways with our own half-close
 * for stdin EOF). `node:http` hands that socket over through its `upgrade` event; the platform
 * `HttpClient` has no upgrade support, and dockerode would add docker-modem, a second HTTP stack
 * and callback APIs for the dozen calls used here. Plain requests reuse keep-alive connections of
 * one agent per sandbox; each hijacked stream gets a connection of its own.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import type * as Net from "node:net"
import { SandboxError, type SandboxErrorReason } from "../../SshError.js"

/** @internal */
export const defaultSocketPath = (): string => {
  const host = process.env.DOCKER_HOST
  if (host !== undefined && host.startsWith("unix://")) return host.slice("unix://".length)
  return "/var/run/docker.sock"
}

/** @internal */
export interface Request {
  readonly method: "GET" | "POST" | "PUT" | "DELETE" | "HEAD"
  readonly path: string
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>> | undefined
  readonly body?: unknown
  /** Names the operation in errors, e.g. `"spawn"`. */
  readonly operation: string
  /** What the request is about (a container name), for errors. */
  readonly subject?: string | undefined
}

/** @internal */
export interface Response {
  readonly status: number
  readonly body: Buffer
}

/** @internal */
export interface Engine {
  readonly socketPath: string
  /** Plain request; a status of 400 or more fails with a `SandboxError`. */
  readonly request: (request: Request) => Effect.Effect<Response, SandboxError>
  readonly json: <A>(request: Request) => Effect.Effect<A, SandboxError>
  /**
   * `POST` that upgrades the connection to a raw stream (exec start, container attach). The socket
   * is destroyed when the scope closes.
   */
  readonly hijack: (request: Request) => Effect.Effect<Net.Socket, SandboxError, Scope.Scope>
}

const errnoCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined

/**
 * Errors of the connection to the daemon (not of the Engine's answers): the one place where a
 * socket errno becomes a reason a person can act on.
 *
 * @internal
 */
export const connectionError = (socketPath: string, operation: string) => (cause: unknown): SandboxError => {
  const code = errnoCode(cause)
  const message = cause instanceof Error ? cause.message : String(cause)
  switch (code) {
    case "ENOENT":
      return new SandboxError({
        reason: "TransportFailed",
        operation,
        path: socketPath,
        detail: `the Docker daemon is unreachable: no socket at ${socketPath} ` +
          `(is dockerd running? pass socketPath or set DOCKER_HOST=unix://...)`,
        cause
      })
    case "ECONNREFUSED":
      return new SandboxError({
        reason: "TransportFailed",
        operation,
        path: socketPath,
        detail: `the Docker daemon is unreachable: nothing accepts connections on ${socketPath} (is dockerd running?)`,
        cause
      })
    case "EACCES":
    case "EPERM":
      return new SandboxError({
        reason: "PermissionDenied",
        operation,
        path: socketPath,
        detail: `permission denied on the Docker socket ${socketPath}: run as root or as a member of ` +
          `the socket's group (usually "docker")`,
        cause
      })
    default:
      return new SandboxError({
        reason: "TransportFailed",
        operation,
        path: socketPath,
        detail: `the connection to the Docker daemon failed: ${message}`,
        cause
      })
  }
}

const daemonMessage = (body: Buffer): string => {
  const text = body.toString("utf8").trim()
  try {
    const parsed = JSON.parse(text) as { message?: unknown }
    if (typeof parsed.message === "string") return parsed.message
  } catch {
    // not JSON
  }
  return text
}

/**
 * An error answer of the Engine as a `SandboxError`. Missing objects are `NotFound`; a container
 * that is stopped, paused or restarting is `Closed`.
 *
 * @internal
 */
export const statusError = (request: Request, status: number, body: Buffer): SandboxError => {
  const message = daemonMessage(body)
  const reason: SandboxErrorReason = status === 404
    ? "NotFound"
    : status === 409 && /not running|is paused|is restarting|is dead|marked for removal/i.test(message)
    ? "Closed"
    : status === 409
    ? "AlreadyExists"
    : status === 401 || status === 403
    ? "PermissionDenied"
    : status === 400
    ? "InvalidArgument"
    : "TransportFailed"
  return new SandboxError({
    reason,
    operation: request.operation,
    path: request.subject,
    detail: `Docker Engine answered ${status} to ${request.method} ${request.path}: ${message}`
  })
}

const pathWithQuery = (request: Request): string => {
  const query = request.query === undefined ? "" : Object.entries(request.query)
    .filter((entry): entry is [string, string | number | boolean] => entry[1] !== undefined)
    .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`)
    .join("&")
  return query === "" ? request.path : `${request.path}?${query}`
}

const bodyOf = (request: Request): Buffer | undefined =>
  request.body === undefined ? undefined : Buffer.from(JSON.stringify(request.body))

/**
 * A client for the daemon at `socketPath`, alive as long as the scope (its keep-alive connections
 * are closed with it).
 *
 * @internal
 */
export const make = (socketPath: string): Effect.Effect<Engine, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new Http.Agent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 8 })),
      (agent) => Effect.sync(() => agent.destroy())
    ),
    (agent): Engine => {
      const request = (request: Request) =>
        Effect.async<Response, SandboxError>((resume) => {
          const body = bodyOf(request)
          const req = Http.request({
            socketPath,
            agent,
            method: request.method,
            path: pathWithQuery(request),
            headers: body === undefined
              ? { Host: "docker" }
              : { Host: "docker", "Content-Type": "application/json", "Content-Length": body.length }
          })
          req.once("error", (cause) => resume(Effect.fail(connectionError(socketPath, request.operation)(cause))))
          req.once("response", (res) => {
            const chunks: Array<Buffer> = []
            res.on("data", (chunk: Buffer) => chunks.push(chunk))
            res.once("error", (cause) => resume(Effect.fail(connectionError(socketPath, request.operation)(cause))))
            res.once("end", () => {
              const data = Buffer.concat(chunks)
              const status = res.statusCode ?? 500
              resume(
                status >= 400 ? Effect.fail(statusError(request, status, data)) : Effect.succeed({ status, body: data })
              )
            })
          })
          req.end(body)
          return Effect.sync(() => req.destroy())
        })

      const json = <A>(req: Request) =>
        Effect.flatMap(request(req), (response) =>
          Effect.try({
            try: () => (response.body.length === 0 ? undefined : JSON.parse(response.body.toString("utf8"))) as A,
            catch: (cause) =>
              new SandboxError({
                reason: "TransportFailed",
                operation: req.operation,
                path: req.subject,
                detail: `the Docker Engine answered ${req.method} ${req.path} with something that is not JSON`,
                cause
              })
          }))

      const hijack = (request: Request) =>
        Effect.acquireRelease(
          Effect.async<Net.Socket, SandboxError>((resume) => {
            const body = bodyOf(request) ?? Buffer.alloc(0)
            // a connection of its own: it never returns to the agent's pool
            const req = Http.request({
              socketPath,
              agent: false,
              method: request.method,
              path: pathWithQuery(request),
              headers: {
                Host: "docker",
                "Content-Type": "application/json",
                "Content-Length": body.length,
                Connection: "Upgrade",
                Upgrade: "tcp"
              }
            })
            let done = false
            req.once("error", (cause) => {
              if (!done) resume(Effect.fail(connectionError(socketPath, request.operation)(cause)))
            })
            req.once("upgrade", (_res, socket, head) => {
              done = true
              socket.setNoDelay(true)
              // errors reach the streams reading and writing it; never let one be uncaught
              socket.on("error", () => {})
              if (head.length > 0) socket.unshift(head)
              resume(Effect.succeed(socket))
            })
            req.once("response", (res) => {
              const chunks: Array<Buffer> = []
              res.on("data", (chunk: Buffer) => chunks.push(chunk))
              res.once("end", () => {
                done = true
                const status = res.statusCode ?? 500
                resume(Effect.fail(
                  status >= 400
                    ? statusError(request, status, Buffer.concat(chunks))
                    : new SandboxError({
                      reason: "TransportFailed",
                      operation: request.operation,
                      path: request.subject,
                      detail: `the Docker Engine did not upgrade ${request.path} to a raw stream (status ${status})`
                    })
                ))
              })
            })
            req.end(body)
            return Effect.sync(() => req.destroy())
          }),
          (socket) => Effect.sync(() => socket.destroy())
        )

      return { socketPath, request, json, hijack }
    }
  )
