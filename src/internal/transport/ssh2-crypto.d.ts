// ssh2's internal cipher module (no types of its own); see padding.ts for the one use.
declare module "ssh2/lib/protocol/crypto.js" {
  const crypto: unknown
  export default crypto
}
