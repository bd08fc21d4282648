/**
 * The sandbox's network: scripted TCP services, reached through `connect`.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Mailbox from "effect/Mailbox"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import type * as MemorySandbox from "../../MemorySandbox.js"
import type * as Sandbox from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import { toBytes } from "./fileSystem.js"
import { readEnd, writeEnd } from "./process.js"

const CAPACITY = 16
const FINALIZER_TIMEOUT = Duration.seconds(5)

const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || host === "[::1]" || host === "0.0.0.0" || /^127\.\d+\.\d+\.\d+$/.test(host)

/** @internal */
export interface Network {
  readonly ports: Readonly<Record<string, MemorySandbox.PortHandler>>
  readonly scope: Scope.Scope
  readonly isClosed: () => boolean
}

/** @internal */
export const connect = (
  network: Network,
  host: string,
  port: number
): Effect.Effect<Sandbox.SandboxConnection, SandboxError, Scope.Scope> =>
  Effect.gen(function*() {
    const address = `${host}:${port}`
    const service = network.isClosed()
      ? undefined
      : network.ports[address] ?? (isLoopback(host) ? network.ports[String(port)] : undefined)
    if (service === undefined) {
      return yield* new SandboxError({
        reason: "ConnectFailed",
        operation: "connect",
        path: address,
        detail: network.isClosed() ? "the sandbox is closed" : "connection refused"
      })
    }
    const toService = yield* Mailbox.make<Uint8Array>({ capacity: CAPACITY })
    const toClient = yield* Mailbox.make<Uint8Array, SandboxError>({ capacity: CAPACITY })
    const connection: MemorySandbox.PortConnection = {
      host,
      port,
      input: readEnd(toService),
      output: Sink.forEachChunk((chunk: Iterable<Uint8Array>) => toClient.offerAll(chunk)),
      write: (data) => {
        const bytes = toBytes(data)
        return bytes.length === 0 ? Effect.void : Effect.asVoid(toClient.offer(bytes))
      }
    }
    const finish = (exit: Exit.Exit<void, unknown>) =>
      Effect.zipRight(
        toService.shutdown,
        Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
          ? toClient.fail(
            new SandboxError({
              reason: "Closed",
              operation: "connect",
              path: address,
              detail: "connection reset by peer",
              cause: Cause.squash(exit.cause)
            })
          )
          : toClient.end
      )
    yield* Effect.acquireRelease(
      Effect.suspend(() => service(connection)).pipe(
        Effect.scoped,
        // The fork would inherit the acquisition's uninterruptibility.
        Effect.interruptible,
        Effect.onExit(finish),
        // The outcome reached the client through `finish`.
        Effect.exit,
        Effect.forkIn(network.scope)
      ),
      (fiber) => Fiber.interrupt(fiber).pipe(Effect.timeoutOption(FINALIZER_TIMEOUT), Effect.asVoid)
    )
    return { input: writeEnd(toService), output: readEnd(toClient) }
  })
