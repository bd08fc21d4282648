// Bundles the CLI into dist/: one file with only the modules it uses, so the CLI and the server
// daemon start in a fraction of the time that loading the TypeScript sources through tsx takes.
// Runs on `npm ci`/`npm install` (prepare).
import { build } from "esbuild"
import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

// Two bundles: the whole CLI, and `serve` alone for the server daemon (`serve --socket`, started on
// demand by the `serve --stdio` relay, bin/relay.cjs, which loads no bundle; without the option
// parser it loads about a third less). ssh2 is bundled in (its native binding and cpu-features load
// from node_modules), as CommonJS: bin/code-cache.cjs runs them with V8's code cache, which needs a
// classic script.
const ssh2Native = {
  name: "ssh2-native",
  setup(build) {
    build.onResolve({ filter: /sshcrypto\.node$/ }, () => ({
      path: "ssh2/lib/protocol/crypto/build/Release/sshcrypto.node",
      external: true
    }))
  }
}
// a fresh dist/: no cache of an earlier bundle, no bundle of an earlier layout
Fs.rmSync("dist", { recursive: true, force: true })
await build({
  entryPoints: { cli: "src/cli/main.ts", daemon: "src/cli/daemonMain.ts" },
  outdir: "dist",
  outExtension: { ".js": ".cjs" },
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  external: ["@lydell/node-pty", "cpu-features"],
  plugins: [ssh2Native],
  define: { "import.meta.url": "__importMetaUrl" },
  banner: { js: "const __importMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: "warning"
})

// The code caches: the daemon from one warm-up connection (scripts/warm-code-cache.ts), the
// CLI from one `exec` (best effort as well: without a cache the CLI only starts slower).
spawnSync(process.execPath, ["--import", "tsx", "scripts/warm-code-cache.ts", "dist/daemon.cjs"], {
  stdio: "inherit"
})
const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "sandbox-ssh-warm-up-"))
try {
  const exec = spawnSync(process.execPath, ["bin/sandbox-ssh.js", "exec", "--root", root, "--", "true"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, SANDBOX_SSH_HOME: Path.join(root, ".home"), SANDBOX_SSH_WRITE_CODE_CACHE: "1" },
    timeout: 60_000
  })
  if (exec.status !== 0) {
    Fs.rmSync("dist/cli.cjs.cache", { force: true })
    process.stderr.write(`sandbox-ssh build: no code cache for the CLI (it starts slower): exec exited with ${exec.status}\n`)
  }
} finally {
  Fs.rmSync(root, { recursive: true, force: true })
}
