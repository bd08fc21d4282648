/**
 * TCP connections of a non-isolated sandbox: the host's own network.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import type { SandboxConnection } from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import * as ReadableStream from "../readableStream.js"
import { invalidPort } from "../sandboxConnection.js"
import { fromNodeError } from "./errors.js"
import { writableSink } from "./process.js"

const connectError = (host: string, port: number) => (cause: unknown) => {
  const error = fromNodeError("connect", `${host}:${port}`)(cause)
  return error.reason === "TransportFailed" ? new SandboxError({ ...error, reason: "ConnectFailed" }) : error
}

/** @internal */
export const connect = (host: string, port: number): Effect.Effect<SandboxConnection, SandboxError, Scope.Scope> =>
  Effect.suspend(() => {
    const invalid = invalidPort(host, port)
    if (invalid !== undefined) return Effect.fail(invalid)
    const onError = connectError(host, port)
    return Effect.acquireRelease(
      Effect.async<Net.Socket, SandboxError>((resume) => {
        const socket = Net.connect({ host, port })
        const onFailure = (error: Error) => {
          socket.destroy()
          resume(Effect.fail(onError(error)))
        }
        socket.once("error", onFailure)
        socket.once("connect", () => {
          socket.removeListener("error", onFailure)
          // errors reach the stream and sink; never let one be uncaught
          socket.on("error", () => {})
          socket.setNoDelay(true)
          resume(Effect.succeed(socket))
        })
        return Effect.sync(() => socket.destroy())
      }),
      (socket) => Effect.sync(() => socket.destroy())
    ).pipe(
      Effect.map((socket): SandboxConnection => ({
        input: writableSink(() => socket, onError),
        output: ReadableStream.fromReadable(() => socket, onError)
      }))
    )
  })
