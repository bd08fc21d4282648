/**
 * ssh2's AEAD ciphers take their random padding from a pooled CSPRNG (src/internal/transport/padding.ts).
 * End-to-end use of every cipher is in test/SandboxSsh.test.ts ("every cipher over the in-memory
 * duplex") and, with OpenSSH's default chacha20-poly1305, in test/openssh-tools.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import ssh2Crypto from "ssh2/lib/protocol/crypto.js"
import * as Padding from "../../src/internal/transport/padding.js"

interface Ssh2Crypto {
  readonly CIPHER_INFO: Record<string, { keyLen: number; ivLen: number; blockLen: number }>
  readonly createCipher: (config: unknown) => { allocPacket(n: number): Buffer; free(): void }
}
const crypto = ssh2Crypto as Ssh2Crypto

const cipherFor = (name: string) => {
  const info = crypto.CIPHER_INFO[name]!
  return crypto.createCipher({
    outbound: {
      onWrite: () => {},
      cipherInfo: info,
      cipherKey: Buffer.alloc(info.keyLen),
      cipherIV: Buffer.alloc(info.ivLen),
      seqno: 0
    }
  })
}

describe("pooled packet padding", () => {
  it("is installed for the AEAD ciphers of this ssh2 (a new ssh2 layout would lose it: this says so)", () => {
    assert.deepStrictEqual(
      [...Padding.install()].sort(),
      ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
    )
  })

  it.each(["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])(
    "%s: lengths as RFC 4253 wants them, and fresh random padding in every packet",
    (name) => {
      Padding.install()
      const cipher = cipherFor(name)
      const block = crypto.CIPHER_INFO[name]!.blockLen
      const paddings = new Set<string>()
      for (let i = 0; i < 2000; i++) {
        const payloadLength = i % 100
        const packet = cipher.allocPacket(payloadLength)
        const packetLength = packet.readUInt32BE(0)
        const padding = packet[4]!
        assert.isAtLeast(padding, 4)
        assert.strictEqual(packetLength, 1 + payloadLength + padding)
        // AEAD: the length field is not encrypted, the rest is whole blocks
        assert.strictEqual(packetLength % block, 0)
        assert.strictEqual(packet.length, 4 + packetLength + 16)
        paddings.add(packet.subarray(5 + payloadLength, 5 + payloadLength + padding).toString("hex"))
      }
      cipher.free()
      // 2,000 paddings of at least 4 random bytes: a repeat would mean reused bytes (p < 1e-3)
      assert.strictEqual(paddings.size, 2000)
    }
  )
})
