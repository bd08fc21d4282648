/**
 * A bounded byte pipe between a scripted program and its reader, with the semantics of a Unix
 * pipe: the writer waits while the pipe is full, the reader sees EOF once the writer ended and the
 * pipe is drained, and once the reader stops reading, writing is a broken pipe.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Mailbox from "effect/Mailbox"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { toBytes } from "./fileSystem.js"

/** Chunks a pipe holds before its writer waits. */
const CAPACITY = 16

/** @internal */
export interface Pipe<E> {
  readonly mailbox: Mailbox.Mailbox<Uint8Array, E>
  /** Consumable once: when the consumer stops (done or not) the read end is closed. */
  readonly readEnd: Stream.Stream<Uint8Array, E>
  /** Writes from the scripted side; a write to a closed read end runs `onBrokenPipe`. */
  readonly write: (data: string | Uint8Array) => Effect.Effect<void>
  /** The same as a sink; it does not end the pipe. */
  readonly writeSink: Sink.Sink<void, Uint8Array>
  /**
   * Writes from the caller's side (stdin, a client's bytes): ending the sink sends EOF, and what
   * is written after the reader went away is discarded, as a peer that already exited does not
   * read.
   */
  readonly inputSink: Sink.Sink<void, Uint8Array>
}

/** @internal */
export const make = <E = never>(onBrokenPipe: Effect.Effect<void>): Effect.Effect<Pipe<E>> =>
  Effect.map(Mailbox.make<Uint8Array, E>({ capacity: CAPACITY }), (mailbox) => {
    let readerClosed = false
    const broken = Effect.suspend(() => readerClosed ? onBrokenPipe : Effect.void)
    return {
      mailbox,
      readEnd: Mailbox.toStream(mailbox).pipe(
        Stream.ensuring(Effect.suspend(() => {
          readerClosed = true
          return mailbox.shutdown
        }))
      ),
      write: (data) => {
        const bytes = toBytes(data)
        if (bytes.length === 0) return Effect.void
        return Effect.flatMap(mailbox.offer(bytes), (accepted) => accepted ? Effect.void : broken)
      },
      writeSink: Sink.forEachChunk((chunk: Iterable<Uint8Array>) =>
        Effect.flatMap(mailbox.offerAll(chunk), (rejected) => rejected.length === 0 ? Effect.void : broken)
      ),
      inputSink: Sink.forEachChunk((chunk: Iterable<Uint8Array>) => mailbox.offerAll(chunk)).pipe(
        Sink.mapEffect(() => Effect.asVoid(mailbox.end))
      )
    }
  })
