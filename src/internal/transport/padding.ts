/**
 * Random packet padding from a pool, for ssh2's AEAD ciphers.
 *
 * ssh2 fills the 4 to 19 bytes of random padding of every packet it sends with a call of its own to
 * `crypto.randomFillSync`: ~5 µs each, measured as 7% of the CPU of an in-process SFTP transfer
 * (profiled: 247 ms of randomFillSync for 1.25 GiB written, as much as the AES-GCM encryption itself).
 * For the ciphers whose packet layout is fixed — AES-GCM and ChaCha20-Poly1305, the ones OpenSSH
 * and `openClient` negotiate — `allocPacket` is replaced by one that takes the padding from a pool
 * refilled by `randomFillSync` 4 KiB at a time: the same CSPRNG, every byte used once (OpenSSH too
 * takes its padding from a buffered CSPRNG, `arc4random_buf`).
 *
 * Installed once per process, and only where it checks out: for each cipher class, the new
 * `allocPacket` must give the same packet lengths and header bytes as ssh2's own for payload
 * lengths around every block boundary and a full 32 KiB one; otherwise (another ssh2 version,
 * another layout) that class keeps ssh2's own. Nothing else of ssh2 is touched. The packet buffers
 * themselves come from `packetBuffers.ts`, which reuses large ones on TCP sockets.
 *
 * @internal
 */
import { randomFillSync } from "node:crypto"
// ssh2's own module instance (the CLI bundles include it as one module with ssh2)
import ssh2CryptoModule from "ssh2/lib/protocol/crypto.js"
import * as PacketBuffers from "./packetBuffers.js"

interface CipherInfo {
  readonly sslName: string
  readonly blockLen: number
  readonly keyLen: number
  readonly ivLen: number
  readonly authLen: number
}

/** @internal */
export interface CipherInstance {
  allocPacket(payloadLength: number): Buffer
  free(): void
}

interface Ssh2Crypto {
  readonly CIPHER_INFO: Readonly<Record<string, CipherInfo>>
  readonly createCipher: (config: unknown) => CipherInstance
}

const POOL_SIZE = 4096
const pool = Buffer.allocUnsafe(POOL_SIZE)
let used = POOL_SIZE

/** Copies `length` (≤ 255) fresh random bytes into `target` at `offset`. */
const fillPadding = (target: Buffer, offset: number, length: number): void => {
  if (used + length > POOL_SIZE) {
    randomFillSync(pool)
    used = 0
  }
  pool.copy(target, offset, used, used + length)
  used += length
}

/** `allocPacket` for a cipher of block size `block` and `authLength` bytes of tag after the packet. */
const allocPacketWith = (block: number, authLength: number) =>
  function allocPacket(payloadLength: number): Buffer {
    let packetLength = 4 + 1 + payloadLength
    let padding = block - ((packetLength - 4) & (block - 1))
    if (padding < 4) padding += block
    packetLength += padding
    const packet = PacketBuffers.allocate(packetLength + authLength)
    packet.writeUInt32BE(packetLength - 4, 0)
    packet[4] = padding
    fillPadding(packet, 5 + payloadLength, padding)
    return packet
  }

/** The same lengths and header bytes as ssh2's own `allocPacket`, for every length that matters. */
const agrees = (
  instance: CipherInstance,
  original: (payloadLength: number) => Buffer,
  replacement: (payloadLength: number) => Buffer,
  block: number
): boolean => {
  const lengths = Array.from({ length: 3 * block }, (_, i) => i).concat([32768 - 64, 32768])
  return lengths.every((n) => {
    const theirs = original.call(instance, n)
    const ours = replacement.call(instance, n)
    return theirs.length === ours.length && theirs.subarray(0, 5).equals(ours.subarray(0, 5))
  })
}

const ssh2Crypto = ssh2CryptoModule as Ssh2Crypto

/**
 * A throwaway outbound cipher of ssh2's for `name` (zero key), as its connections make them, or
 * `undefined` for a name ssh2 does not know.
 *
 * @internal
 */
export const ssh2Cipher = (name: string): CipherInstance | undefined => {
  const info = ssh2Crypto.CIPHER_INFO[name]
  if (info === undefined) return undefined
  return ssh2Crypto.createCipher({
    outbound: {
      onWrite: () => {},
      cipherInfo: info,
      cipherKey: Buffer.alloc(info.keyLen),
      cipherIV: Buffer.alloc(info.ivLen),
      seqno: 0
    }
  })
}

const AEAD_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]

let installed: ReadonlyArray<string> | undefined

/**
 * Installs the pooled padding into ssh2's AEAD cipher classes (idempotent). Returns the cipher
 * names whose class now uses it.
 *
 * @internal
 */
export const install = (): ReadonlyArray<string> => {
  if (installed !== undefined) return installed
  const done: Array<string> = []
  try {
    const patched = new Set<object>()
    for (const name of AEAD_CIPHERS) {
      const info = ssh2Crypto.CIPHER_INFO[name]
      if (info === undefined || info.authLen === 0) continue
      const instance = ssh2Cipher(name)!
      const prototype = Object.getPrototypeOf(instance) as { allocPacket?: unknown }
      const original = prototype.allocPacket
      if (patched.has(prototype)) {
        done.push(name)
      } else if (typeof original === "function" && Object.hasOwn(prototype, "allocPacket")) {
        const replacement = allocPacketWith(info.blockLen, info.authLen)
        if (agrees(instance, original as (n: number) => Buffer, replacement, info.blockLen)) {
          prototype.allocPacket = replacement
          patched.add(prototype)
          done.push(name)
        }
      }
      instance.free()
    }
  } catch {
    // another ssh2 layout: its own padding stays
  }
  installed = done
  return done
}
