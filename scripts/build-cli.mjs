// Bundles the CLI into dist/: one file with only the modules it uses, so `serve --stdio` (an
// OpenSSH ProxyCommand, started once per connection) starts in a fraction of the time that loading
// the TypeScript sources through tsx takes. Runs on `npm ci`/`npm install` (prepare).
import { build } from "esbuild"
import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"

// The whole CLI.
await build({
  entryPoints: { cli: "src/cli/main.ts" },
  outdir: "dist",
  outExtension: { ".js": ".mjs" },
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // Native or CommonJS-with-optional-natives packages load from node_modules as usual.
  external: ["ssh2", "@lydell/node-pty"],
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  logLevel: "warning"
})

// `serve --stdio` alone, without the option parser, ssh2 bundled in (its native binding and
// cpu-features load from node_modules), as CommonJS: bin/code-cache.cjs runs it with V8's code
// cache, which needs a classic script.
const ssh2Native = {
  name: "ssh2-native",
  setup(build) {
    build.onResolve({ filter: /sshcrypto\.node$/ }, () => ({
      path: "ssh2/lib/protocol/crypto/build/Release/sshcrypto.node",
      external: true
    }))
  }
}
await build({
  entryPoints: { "serve-stdio": "src/cli/serveStdio.ts" },
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

// The code cache, from one warm-up connection (scripts/warm-code-cache.ts).
Fs.rmSync("dist/serve-stdio.mjs", { force: true })
Fs.rmSync("dist/serve-stdio.cjs.cache", { force: true })
spawnSync(process.execPath, ["--import", "tsx", "scripts/warm-code-cache.ts", "dist/serve-stdio.cjs"], {
  stdio: "inherit"
})
