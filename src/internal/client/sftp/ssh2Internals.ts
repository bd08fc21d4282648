/**
 * The private fields of ssh2's SFTP client (`SFTPWrapper`, ssh2 1.x `lib/protocol/SFTP.js`) that
 * this client reads or takes part in, in one place: an ssh2 upgrade that renames or reshapes one
 * shows up here. Every field is `unknown` or optional, and each user checks the shape it relies on
 * before it relies on it, falling back to ssh2's public API otherwise.
 *
 * @internal
 */
import type * as ssh2 from "ssh2"

/** An entry of ssh2's request table: the callback its reply handlers call, and READ's target. @internal */
export interface Ssh2Request {
  buffer?: unknown
  cb?: unknown
}

/** @internal */
export interface Ssh2SftpInternals {
  /** The parser ssh2's channel hands each CHANNEL_DATA payload to (`dataViews.ts` goes in front). */
  push: (data: Buffer | null) => unknown
  /** Outstanding requests by id. */
  _requests?: Record<number, Ssh2Request | undefined>
  /** The id of the request sent last. */
  _writeReqid?: unknown
  /** The parser's position in the current packet: both 0 at a packet boundary. */
  _pktLenBytes?: unknown
  _pktPos?: unknown
  /** Payloads waiting for the channel's window. */
  _buffer?: unknown
  readonly _maxReadLen?: unknown
  readonly _maxWriteLen?: unknown
  readonly _extensions?: unknown
  readonly _protocol?: { readonly channelData?: unknown }
  outgoing?: { id?: unknown; state?: unknown; window?: unknown; packetSize?: unknown }
  readonly incoming?: { readonly state?: unknown }
}

/**
 * `sftp` seen through its private fields.
 *
 * @internal
 */
export const internalsOf = (sftp: ssh2.SFTPWrapper): Ssh2SftpInternals => sftp as unknown as Ssh2SftpInternals
