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
import type * as Scope from "effect/Scope"
import type * as MemorySandbox from "../../MemorySandbox.js"
import type * as Sandbox from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import * as Pipe from "./pipe.js"

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
    const toService = yield* Pipe.make(Effect.void)
    // Writing to a client that closed the connection ends the service, as EPIPE ends a server's
    // handler of that connection.
    const toClient = yield* Pipe.make<SandboxError>(Effect.interrupt)
    const connection: MemorySandbox.PortConnection = {
      host,
      port,
      input: toService.readEnd,
      output: toClient.writeSink,
      write: toClient.write
    }
    const finish = (exit: Exit.Exit<void, unknown>) =>
      Effect.zipRight(
        toService.mailbox.shutdown,
        Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
          ? toClient.mailbox.fail(
            new SandboxError({
              reason: "Closed",
              operation: "connect",
              path: address,
              detail: "connection reset by peer",
              cause: Cause.squash(exit.cause)
            })
          )
          : toClient.mailbox.end
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
    return { input: toService.inputSink, output: toClient.readEnd }
  })
