/**
 * A Node `Readable` as an Effect `Stream` (`src/internal/readableStream.ts`): the very chunks the
 * readable emitted (no joined copies), backpressure by pausing it, errors after the data, and
 * what is left of the readable when the stream ends early or is interrupted.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { PassThrough } from "node:stream"
import * as ReadableStream from "../../src/internal/readableStream.js"

class ReadFailed {
  readonly _tag = "ReadFailed"
  constructor(readonly cause: unknown) {}
}
const onError = (cause: unknown) => new ReadFailed(cause)

const listeners = (readable: PassThrough) =>
  ["data", "end", "close", "error", "readable"].reduce((n, event) => n + readable.listenerCount(event), 0)

describe("readableStream", () => {
  it.live("hands over the chunks the readable emitted, in order, and ends with it", () =>
    Effect.gen(function*() {
      const readable = new PassThrough()
      const written = [Buffer.from("alpha"), Buffer.alloc(70_000, 1), Buffer.from("omega")]
      // all buffered before the stream starts: `read()` would have joined them into one buffer
      for (const chunk of written) readable.write(chunk)
      readable.end()
      const received = yield* Stream.runCollect(ReadableStream.fromReadable(() => readable, onError))
      const chunks = Chunk.toReadonlyArray(received)
      assert.strictEqual(chunks.length, written.length)
      chunks.forEach((chunk, i) => assert.strictEqual(chunk, written[i], `chunk ${i} is the buffer written`))
      assert.isTrue(readable.destroyed)
      assert.strictEqual(listeners(readable), 0)
    }))

  it.live("pauses the readable while the consumer does not pull, and resumes it when it does", () =>
    Effect.scoped(Effect.gen(function*() {
      const readable = new PassThrough({ highWaterMark: 16 * 1024 })
      const pull = yield* Stream.toPull(ReadableStream.fromReadable(() => readable, onError))
      const chunk = Buffer.alloc(16 * 1024, 7)
      // the first pull starts the stream (and its "data" listener)
      readable.write(Buffer.from("start"))
      assert.strictEqual(Chunk.reduce(yield* pull, 0, (n, c) => n + c.length), 5)
      let accepted = 0
      // without backpressure a flowing PassThrough takes everything
      for (let i = 0; i < 256 && readable.write(chunk); i++) {
        accepted += chunk.length
        yield* Effect.yieldNow()
        yield* Effect.sleep(1)
      }
      assert.isAtMost(accepted, 256 * 1024, `stopped after ${accepted} bytes`)
      assert.isTrue(readable.isPaused())
      let taken = 0
      while (taken < accepted) taken += Chunk.reduce(yield* pull, 0, (n, c) => n + c.length)
      assert.isFalse(readable.isPaused())
      readable.end()
    })))

  it.live("delivers the data that came before an error, then fails with the mapped error", () =>
    Effect.gen(function*() {
      const readable = new PassThrough()
      readable.write(Buffer.from("before"))
      const boom = new Error("boom")
      setTimeout(() => readable.destroy(boom), 5)
      const seen: Array<string> = []
      const result = yield* Stream.runForEach(
        ReadableStream.fromReadable(() => readable, onError),
        (chunk) => Effect.sync(() => seen.push(Buffer.from(chunk).toString()))
      ).pipe(Effect.either)
      assert.deepStrictEqual(seen, ["before"])
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.strictEqual(result.left.cause, boom)
      assert.strictEqual(listeners(readable), 0)
    }))

  it.live("ends when the readable is destroyed without an error", () =>
    Effect.gen(function*() {
      const readable = new PassThrough()
      setTimeout(() => readable.destroy(), 5)
      const received = yield* Stream.runCollect(ReadableStream.fromReadable(() => readable, onError)).pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("hung on a closed readable") })
      )
      assert.strictEqual(Chunk.size(received), 0)
    }))

  it.live("closeOnDone false: an early end leaves the readable paused, its rest readable later", () =>
    Effect.gen(function*() {
      const readable = new PassThrough()
      const stream = ReadableStream.fromReadable(() => readable, onError, { closeOnDone: false })
      readable.write(Buffer.from("first"))
      const first = yield* Stream.runHead(stream)
      assert.deepStrictEqual(Option.map(first, (c) => Buffer.from(c).toString()), Option.some("first"))
      assert.isFalse(readable.destroyed)
      assert.strictEqual(listeners(readable), 0)
      readable.write(Buffer.from("second"))
      readable.end()
      yield* Effect.sleep(5)
      const rest = yield* Stream.runCollect(stream)
      assert.strictEqual(Buffer.concat(Chunk.toReadonlyArray(rest)).toString(), "second")
    }))

  it.live("an interrupted stream removes its listeners and destroys the readable by default", () =>
    Effect.gen(function*() {
      const readable = new PassThrough()
      const fiber = yield* Effect.fork(Stream.runDrain(ReadableStream.fromReadable(() => readable, onError)))
      yield* Effect.sleep(10)
      assert.isAbove(listeners(readable), 0)
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(listeners(readable), 0)
      assert.isTrue(readable.destroyed)
    }))
})
