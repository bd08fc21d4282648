/**
 * The private parts of ssh2's server connection (ssh2 1.17: `lib/server.js`, `lib/utils.js`,
 * `lib/protocol/Protocol.js`) that the server takes part in, in one place: the guards against a
 * hostile peer (`guards.ts`) and the lending of received channel data (`channelInput.ts`). An ssh2
 * upgrade that renames or reshapes one shows up here; `internalsOf` checks the shape before anyone
 * relies on it.
 *
 * @internal
 */
import type * as ssh2 from "ssh2"

/** A channel's window and state, as ssh2 keeps them for each direction. @internal */
export interface WindowState {
  id: number
  window: number
  state?: string
}

/** A `Channel`, or a server `Session` whose `_channel` exists once exec/shell/subsystem started. @internal */
export interface ChannelEntry {
  readonly constructor: { readonly name: string }
  readonly incoming?: WindowState
  readonly outgoing?: WindowState
  readonly _channel?: ChannelEntry | undefined
  readonly _chanInfo?: { readonly incoming: WindowState; readonly outgoing: WindowState }
}

/** @internal */
export interface ChannelManager {
  _count: number
  get(id: number): unknown
  remove(id: number): void
}

/** @internal */
export type Handler = (...args: Array<any>) => void

/** @internal */
export interface Protocol {
  readonly _handlers: Record<string, Handler | undefined>
  parse(chunk: Buffer, start: number, end: number): void
  disconnect(reason: number): void
  channelOpenFail(remote: number, reason: number, description: string): void
  channelFailure(remote: number): void
  channelClose(remote: number): void
}

/** @internal */
export interface Internals {
  readonly _protocol: Protocol
  readonly _chanMgr: ChannelManager
}

/**
 * `connection` seen through its private parts, or `undefined` when they are not as expected.
 *
 * @internal
 */
export const internalsOf = (connection: ssh2.Connection): Internals | undefined => {
  const candidate = connection as unknown as Partial<Internals>
  return typeof candidate._protocol?._handlers === "object" && typeof candidate._chanMgr?.get === "function"
    ? candidate as Internals
    : undefined
}

/** @internal */
export const isSession = (entry: ChannelEntry): boolean => entry.constructor.name === "Session"

/**
 * The entry ssh2 keeps for channel `id`, or `undefined` (none, or an id ssh2 refuses to look up).
 *
 * @internal
 */
export const channelEntry = (channels: ChannelManager, id: unknown): ChannelEntry | undefined => {
  try {
    const entry = channels.get(id as number)
    return typeof entry === "object" && entry !== null ? entry as ChannelEntry : undefined
  } catch {
    return undefined // an id ssh2 refuses to look up (≥ 2^32 - 1)
  }
}

/**
 * The channel that gets `entry`'s data: for a session, the channel of its exec, shell or
 * subsystem (`undefined` before one started); otherwise the entry itself.
 *
 * @internal
 */
export const liveChannelOf = (entry: ChannelEntry | undefined): ChannelEntry | undefined =>
  entry === undefined ? undefined : isSession(entry) ? entry._channel : entry

/**
 * The peer's id for the channel: where replies go.
 *
 * @internal
 */
export const remoteIdOf = (entry: ChannelEntry): number | undefined =>
  isSession(entry) ? entry._chanInfo?.outgoing.id : entry.outgoing?.id
