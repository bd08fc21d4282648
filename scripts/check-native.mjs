// Fails when npm did not run the install scripts that build or fetch native parts: ssh2's
// optional crypto binding (sshcrypto.node: AES-GCM and chacha20 in C) and the PTY binding.
import { createRequire } from "node:module"
import { existsSync } from "node:fs"
import { dirname, join } from "node:path"

const require = createRequire(import.meta.url)
const problems = []
const ssh2Dir = dirname(require.resolve("ssh2/package.json"))
const sshcrypto = join(ssh2Dir, "lib/protocol/crypto/build/Release/sshcrypto.node")
if (!existsSync(sshcrypto)) problems.push(`ssh2 native crypto was not built (${sshcrypto} missing): npm skipped install scripts`)
try {
  require("@lydell/node-pty")
} catch (error) {
  problems.push(`@lydell/node-pty does not load: ${error.message}`)
}
if (problems.length > 0) {
  for (const p of problems) console.error(`native check: ${p}`)
  process.exit(1)
}
console.log("native check: ssh2 crypto binding built, node-pty loads")
