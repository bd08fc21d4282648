/**
 * Key pairs: generation and parsing through ssh2's own key code.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import { createHash } from "node:crypto"
import * as ssh2 from "ssh2"
import { KeyError } from "../../SshError.js"
import type { KeyPair } from "../../SshKeys.js"

/** SHA256 fingerprint as `ssh-keygen -lf` prints it. @internal */
export const fingerprint = (publicBlob: Uint8Array): string =>
  "SHA256:" + createHash("sha256").update(publicBlob).digest("base64").replace(/=+$/, "")

/** @internal */
export const parsePrivateKey = (pem: string, path?: string): Effect.Effect<KeyPair, KeyError> =>
  Effect.suspend(() => {
    const parsed = ssh2.utils.parseKey(pem)
    if (parsed instanceof Error) {
      return Effect.fail(new KeyError({ reason: "Unparsable", path, detail: parsed.message, cause: parsed }))
    }
    if (!parsed.isPrivateKey()) {
      return Effect.fail(new KeyError({ reason: "Unparsable", path, detail: "not a private key" }))
    }
    return Effect.succeed(toKeyPair(pem, parsed))
  })

const toKeyPair = (pem: string, parsed: ssh2.ParsedKey): KeyPair => {
  const blob = parsed.getPublicSSH()
  const publicKey = `${parsed.type} ${blob.toString("base64")}`
  return {
    type: parsed.type,
    privateKey: pem,
    publicKey,
    publicBlob: new Uint8Array(blob),
    fingerprint: fingerprint(blob)
  }
}

/** @internal */
export const generateEd25519 = (comment?: string): Effect.Effect<KeyPair> =>
  Effect.sync(() => {
    const generated = ssh2.utils.generateKeyPairSync("ed25519", comment === undefined ? {} : { comment })
    const parsed = ssh2.utils.parseKey(generated.private)
    if (parsed instanceof Error) throw parsed
    return toKeyPair(generated.private, parsed)
  })
