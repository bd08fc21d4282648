/**
 * Talking to a process on a terminal as a person would: type, wait until some output has come,
 * type again. Used by the process conformance suite and the Docker terminal test.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Sandbox from "../../src/Sandbox.js"
import type { SandboxError } from "../../src/SshError.js"
import { encoder } from "../local/support.js"

export interface Terminal {
  /** Sends `text` to the process's stdin. */
  readonly type: (text: string) => Effect.Effect<void>
  /** Reads stdout until `done` holds for everything read so far; returns all of it. */
  readonly readUntil: (done: (seen: string) => boolean) => Effect.Effect<string>
  /** Waits for stdout to end; returns everything read. */
  readonly drain: Effect.Effect<string, SandboxError>
}

/** Feeds the process's stdin from what is typed and reads its stdout in the background (for the scope). */
export const terminal = (process: Sandbox.SandboxProcess): Effect.Effect<Terminal, never, Scope.Scope> =>
  Effect.gen(function*() {
    const input = yield* Queue.unbounded<Uint8Array>()
    yield* Effect.forkScoped(Stream.run(Stream.fromQueue(input), process.stdin))
    const outputs = yield* Queue.unbounded<string>()
    const reader = yield* Effect.forkScoped(
      Stream.runForEach(Stream.decodeText(process.stdout), (text) => Queue.offer(outputs, text))
    )
    let seen = ""
    return {
      type: (text) => Effect.asVoid(Queue.offer(input, encoder.encode(text))),
      readUntil: (done) =>
        Effect.gen(function*() {
          while (!done(seen)) seen += yield* Queue.take(outputs)
          return seen
        }),
      drain: Effect.gen(function*() {
        yield* Fiber.join(reader)
        seen += [...(yield* Queue.takeAll(outputs))].join("")
        return seen
      })
    }
  })
