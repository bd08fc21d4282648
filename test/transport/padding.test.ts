/**
 * ssh2's AEAD ciphers take their random padding from a pooled CSPRNG (src/internal/transport/padding.ts).
 * End-to-end use of every cipher is in test/SandboxSsh.test.ts ("every cipher over the in-memory
 * duplex") and, with OpenSSH's default chacha20-poly1305, in test/openssh-tools.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Padding from "../../src/internal/transport/padding.js"

const blockLength: Record<string, number> = {
  "aes128-gcm@openssh.com": 16,
  "chacha20-poly1305@openssh.com": 8
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
      const cipher = Padding.ssh2Cipher(name)!
      const block = blockLength[name]!
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
