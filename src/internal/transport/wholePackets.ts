/**
 * Where the whole SSH packets in a run of received bytes end, for ssh2's AEAD deciphers
 * (AES-GCM and ChaCha20-Poly1305, the ones OpenSSH negotiates), read from the decipher's state.
 *
 * ssh2's deciphers decrypt a packet in place when all of it is in the chunk they are given, and
 * copy it into a fresh buffer when it straddles two chunks. Node reads a socket 64 KiB at a time,
 * so about half the 32 KiB packets of an upload straddle two reads: 124.5 MiB of such copies per
 * 256 MiB received (counted, `scratchpad/sftp/getab.ts`). `inboundBuffers.ts` feeds ssh2 up to the
 * end of the last whole packet only, and keeps the rest for the next read.
 *
 * Knowing where a packet ends takes the decipher's private fields (its position in the current
 * packet) and, for ChaCha20-Poly1305, its length decryption. Both are checked once per decipher
 * class, on a throwaway cipher and decipher pair of ssh2's: packets encrypted by the one must end
 * where `wholeEnd` says and come out of the other whole, with the decipher between packets after
 * each. A class that does not check out (another ssh2 layout, the pure-JS fallbacks) gets no
 * framer, and its bytes are fed as they come, as before.
 *
 * @internal
 */
import ssh2CryptoModule from "ssh2/lib/protocol/crypto.js"

/** ssh2's inbound decipher as far as this module relies on it (checked before relied on). */
export interface Ssh2Decipher {
  readonly constructor: unknown
  _onPayload: (payload: Buffer) => unknown
  readonly inSeqno?: unknown
  readonly _len?: unknown
  readonly _lenBytes?: unknown
  readonly _lenPos?: unknown
  readonly _pktLen?: unknown
  readonly _tagPos?: unknown
  readonly _macPos?: unknown
  readonly _instance?: { readonly decryptLen?: unknown }
}

interface CipherInfo {
  readonly sslName: string
  readonly keyLen: number
  readonly ivLen: number
  readonly authLen: number
}

interface Ssh2Crypto {
  readonly CIPHER_INFO: Readonly<Record<string, CipherInfo>>
  readonly MAC_INFO: Readonly<Record<string, { readonly len: number }>>
  readonly createCipher: (config: unknown) => {
    allocPacket(payloadLength: number): Buffer
    encrypt(packet: Buffer): void
    free(): void
  }
  readonly createDecipher: (config: unknown) => Ssh2Decipher & {
    decrypt(data: Buffer, start: number, end: number): unknown
    free(): void
  }
}

const ssh2Crypto = ssh2CryptoModule as Ssh2Crypto

/** ssh2's largest packet length (`MAX_PACKET_SIZE`): a longer one is refused by the decipher. */
const MAX_PACKET = 35000
/** The tag after each packet, for both ciphers. */
const TAG = 16

/**
 * One decipher layout: how far into the current packet it is, and the length of a packet that
 * starts at `bytes[at]` and is the `ahead`-th after the current one.
 */
interface Layout {
  /** Bytes still to come of the packet the decipher is inside, 0 between packets, -1 when unknown. */
  readonly remaining: (decipher: Ssh2Decipher) => number
  readonly length: (decipher: Ssh2Decipher, bytes: Buffer, at: number, ahead: number) => number
}

const isCount = (value: unknown): value is number => typeof value === "number" && Number.isInteger(value)

/**
 * Bytes still to come of the current packet, from a decipher's length (`len`), how many of the 4
 * length bytes it has (`lengthBytes`), how much of the packet (`packetBytes`) and of the tag
 * (`tagBytes`); -1 when a field is not a count or the length is not known yet.
 */
const remainingFrom = (len: unknown, lengthBytes: unknown, packetBytes: unknown, tagBytes: unknown): number => {
  if (!isCount(len) || !isCount(lengthBytes) || !isCount(packetBytes) || !isCount(tagBytes)) return -1
  if (lengthBytes === 0) return packetBytes === 0 && tagBytes === 0 ? 0 : -1
  if (lengthBytes < 4) return -1
  return len - packetBytes + TAG - tagBytes
}

const gcm: Layout = {
  remaining: (d) => remainingFrom(d._len, d._lenBytes, d._pktLen, d._tagPos),
  // the length is in the clear (it is authenticated, not encrypted)
  length: (_d, bytes, at) => bytes.readUInt32BE(at)
}

const lengthBytes = Buffer.alloc(4)

const chacha: Layout = {
  remaining: (d) => remainingFrom(d._len, d._lenPos, d._pktLen, d._macPos),
  // the length is encrypted under the packet's sequence number, with a key of its own
  length: (d, bytes, at, ahead) => {
    bytes.copy(lengthBytes, 0, at, at + 4)
    const decryptLen = d._instance!.decryptLen as (length: Buffer, seqno: number) => number
    return decryptLen.call(d._instance, lengthBytes, ((d.inSeqno as number) + ahead) >>> 0)
  }
}

/**
 * The end of the last whole packet in `bytes[start, end)` for a decipher of `layout` (a packet the
 * decipher is inside counts as whole once its remaining bytes are there), or `end` when the
 * decipher's state cannot be read or a length is out of range: ssh2 then gets everything, and
 * refuses a bad length itself.
 */
const wholeEndWith = (layout: Layout, decipher: Ssh2Decipher, bytes: Buffer, start: number, end: number): number => {
  const remaining = layout.remaining(decipher)
  if (remaining < 0) return end
  // inside a packet, only its rest: ChaCha20-Poly1305's decipher keeps the length bytes it last
  // decrypted for the packet's MAC, so no later length may be decrypted before it is done
  if (remaining > 0) return start + remaining <= end ? start + remaining : start
  let at = start
  let ahead = 0
  while (end - at >= 4) {
    const length = layout.length(decipher, bytes, at, ahead)
    if (length > MAX_PACKET || length < 8) return end
    const total = 4 + length + TAG
    if (end - at < total) break
    at += total
    ahead++
  }
  return at
}

/**
 * ssh2's cipher and decipher for `name` under one key, as the two ends of a connection have them
 * (an HMAC for a cipher that needs one), or `undefined` for a name ssh2 does not know: for the
 * check below, and for tests.
 *
 * @internal
 */
export const ssh2Pair = (
  name: string,
  ends: {
    readonly onWrite: (packet: Buffer) => void
    readonly onPayload: (payload: Buffer) => void
    readonly seqno?: number
  }
) => {
  const info = ssh2Crypto.CIPHER_INFO[name]
  const mac = ssh2Crypto.MAC_INFO["hmac-sha2-256"]
  if (info === undefined || mac === undefined) return undefined
  const keys = {
    seqno: ends.seqno ?? 0,
    macInfo: mac,
    macKey: Buffer.alloc(mac.len, 5)
  }
  const key = Buffer.alloc(info.keyLen, 7)
  const iv = Buffer.alloc(info.ivLen, 3)
  return {
    cipher: ssh2Crypto.createCipher({
      outbound: { ...keys, onWrite: ends.onWrite, cipherInfo: info, cipherKey: key, cipherIV: iv }
    }),
    decipher: ssh2Crypto.createDecipher({
      inbound: {
        ...keys,
        // whatever it returns: ssh2 takes a value as where to stop parsing
        onPayload: (payload: Buffer) => {
          ends.onPayload(payload)
        },
        decipherInfo: info,
        decipherKey: key,
        decipherIV: iv
      }
    })
  }
}

/** The decipher classes that checked out, with their layout; classes that did not, as undefined. */
const checked = new Map<unknown, Layout | undefined>()

const CANDIDATES: ReadonlyArray<readonly [name: string, layout: Layout]> = [
  ["aes128-gcm@openssh.com", gcm],
  ["aes256-gcm@openssh.com", gcm],
  ["chacha20-poly1305@openssh.com", chacha]
]

/**
 * Encrypts packets with ssh2's cipher `name` and feeds them to its decipher whole packet by whole
 * packet, as `wholeEnd` finds them in the stream, split at awkward places: does every payload come
 * out, in order and intact, with the decipher between packets after each feed?
 */
const checksOut = (name: string, layout: Layout): unknown => {
  if (ssh2Crypto.CIPHER_INFO[name]?.authLen !== TAG) return undefined
  const wire: Array<Buffer> = []
  const received: Array<Buffer> = []
  const { cipher, decipher } = ssh2Pair(name, {
    onWrite: (packet) => wire.push(Buffer.from(packet)),
    onPayload: (payload) => received.push(Buffer.from(payload)),
    seqno: 5
  })!
  const sent: Array<Buffer> = []
  try {
    for (const size of [1, 15, 16, 32768, 300, 32768 + 13]) {
      const payload = Buffer.alloc(size, size & 0xff)
      const packet = cipher.allocPacket(size)
      payload.copy(packet, 5)
      cipher.encrypt(packet)
      sent.push(payload)
    }
    const stream = Buffer.concat(wire)
    const ends = wire.map((_, i) => wire.slice(0, i + 1).reduce((sum, packet) => sum + packet.length, 0))
    // bytes fed as they came, up to inside the second packet's body (where a connection's first
    // slab starts); then reads that end inside a length, after whole packets, inside a body,
    // inside a tag
    let fed = ends[0]! + 10
    decipher.decrypt(stream.subarray(0, fed), 0, fed)
    const cuts = [fed + 2, ends[2]! + 2, ends[2]! + 100, ends[3]! - 5, ends[4]! + 1, stream.length]
    for (const cut of cuts) {
      const end = wholeEndWith(layout, decipher, stream, fed, cut)
      if (end < fed || end > cut) return undefined
      if (end === fed) continue
      decipher.decrypt(stream.subarray(fed, end), 0, end - fed)
      fed = end
      if (layout.remaining(decipher) !== 0) return undefined
    }
    if (fed !== stream.length || received.length !== sent.length) return undefined
    if (!received.every((payload, i) => payload.equals(sent[i]!))) return undefined
    return decipher.constructor
  } catch {
    return undefined
  } finally {
    cipher.free()
    decipher.free()
  }
}

let probed = false

/** The layout of `decipher`'s class, checked on first use (`checksOut`), or undefined. */
const layoutOf = (decipher: Ssh2Decipher | undefined): Layout | undefined => {
  if (decipher === undefined) return undefined
  if (!probed) {
    probed = true
    for (const [name, layout] of CANDIDATES) {
      const constructor = checksOut(name, layout)
      if (constructor !== undefined) checked.set(constructor, layout)
    }
  }
  return checked.get(decipher.constructor)
}

/**
 * Whether `decipher` is of a class this module can frame for.
 *
 * @internal
 */
export const canFrame = (decipher: Ssh2Decipher | undefined): boolean => layoutOf(decipher) !== undefined

/**
 * The end of the last whole packet in `bytes[start, end)` for `decipher`, or `end` for a decipher
 * this module cannot frame for (everything is fed, as before).
 *
 * @internal
 */
export const wholeEnd = (decipher: Ssh2Decipher | undefined, bytes: Buffer, start: number, end: number): number => {
  const layout = layoutOf(decipher)
  return layout === undefined ? end : wholeEndWith(layout, decipher!, bytes, start, end)
}

/**
 * Whether `decipher` is between packets, so that it keeps no view of the bytes it was fed. False
 * for a class this module cannot frame for: its state is not known.
 *
 * @internal
 */
export const betweenPackets = (decipher: Ssh2Decipher | undefined): boolean => {
  const layout = layoutOf(decipher)
  return layout !== undefined && layout.remaining(decipher!) === 0
}
