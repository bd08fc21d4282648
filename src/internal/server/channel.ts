/**
 * Helpers for ssh2 server channels: closure, and work that ends when the channel does.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import type * as ssh2 from "ssh2"

/** ssh2 never marks closed channels `destroyed`; its protocol state says whether CLOSE arrived. @internal */
export const isClosed = (channel: ssh2.ServerChannel | ssh2.Channel): boolean =>
  (channel as unknown as { incoming?: { state?: string } }).incoming?.state === "closed"

/** Resolves when the channel is closed by either side. @internal */
export const channelClosed = (channel: ssh2.ServerChannel | ssh2.Channel): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (isClosed(channel)) return resume(Effect.void)
    const done = () => resume(Effect.void)
    channel.once("close", done)
    return Effect.sync(() => channel.removeListener("close", done))
  })

/**
 * Runs `effect` on a fiber of its own, interrupted when `channel` closes first (the peer went away),
 * as `Effect.raceFirst(effect, channelClosed(channel))` would, for a fraction of the cost: a fork and
 * a listener (~6 µs) instead of a race (~40 µs), on every exec. When the channel closed first, the
 * caller sees the interruption as its cause (`Cause.isInterruptedOnly`); interrupting the caller
 * interrupts `effect`.
 *
 * @internal
 */
export const interruptOnClose = <A, E>(
  channel: ssh2.ServerChannel | ssh2.Channel,
  effect: Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.fork(restore(effect)), (fiber) => {
      const onClose = () => fiber.unsafeInterruptAsFork(FiberId.none)
      channel.once("close", onClose)
      if (isClosed(channel)) onClose()
      return restore(Fiber.join(fiber)).pipe(
        Effect.onInterrupt(() => Fiber.interrupt(fiber)),
        Effect.ensuring(Effect.sync(() => channel.removeListener("close", onClose)))
      )
    })
  )
