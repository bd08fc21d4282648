/**
 * What a channel's reader gets of the data the peer sends: views of the buffers it arrived in,
 * lent to a reader that copies them out and hands them back (the SFTP server), or copies of its
 * own for any other reader (a process's stdin, a forwarded socket), which may keep them.
 *
 * The buffers are those of `transport/inboundBuffers.ts` (a TCP or daemon connection: slabs used
 * again once every view is back) and of `transport/packetBuffers.ts` (the in-process pair: the
 * sender's own packet, decrypted in place). `install` routes every `CHANNEL_DATA` of a connection
 * through the lend-or-copy choice before its slabs may be used again; `giveBack` hands a chunk
 * back to whichever of the two it came from.
 *
 * @internal
 */
import type { Duplex } from "node:stream"
import type * as ssh2 from "ssh2"
import * as InboundBuffers from "../transport/inboundBuffers.js"
import * as PacketBuffers from "../transport/packetBuffers.js"
import { channelEntry, internalsOf, liveChannelOf } from "./ssh2Internals.js"

/** Channels whose one reader copies out every chunk it gets and hands it back (`lendTo`). */
const borrowers = new WeakSet<object>()

/**
 * Marks `channel` as one whose single reader copies out every chunk it gets and hands it back with
 * `giveBack`: its data may be lent views.
 *
 * @internal
 */
export const lendTo = (channel: object): void => {
  borrowers.add(channel)
}

/**
 * Hands back a chunk a borrower got, once nothing refers to its bytes; a chunk of neither pool is
 * ignored.
 *
 * @internal
 */
export const giveBack = (chunk: Uint8Array): void => {
  PacketBuffers.giveBack(chunk)
  InboundBuffers.giveBack(chunk)
}

/**
 * Routes the channel data of ssh2 `connection` served over `socket` through the lend-or-copy
 * choice, then lets `socket`'s slabs be used again (`InboundBuffers.attach`). A connection whose
 * internals are not as expected is left alone, and its slabs are never reused.
 *
 * @internal
 */
export const install = (socket: Duplex, connection: ssh2.Connection): void => {
  const internals = internalsOf(connection)
  const original = internals?._protocol._handlers.CHANNEL_DATA
  if (internals === undefined || original === undefined) return
  internals._protocol._handlers.CHANNEL_DATA = (protocol: unknown, recipient: number, data: Buffer) => {
    const channel = liveChannelOf(channelEntry(internals._chanMgr, recipient))
    const lent = channel !== undefined && borrowers.has(channel) && InboundBuffers.lend(data)
    original(protocol, recipient, lent ? data : InboundBuffers.ownCopy(data))
  }
  InboundBuffers.attach(socket, internals._protocol)
}
