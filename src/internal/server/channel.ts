/**
 * Helpers for ssh2 server channels: closure.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
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
