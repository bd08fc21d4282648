// Bundles the CLI into dist/cli.mjs: one file with only the modules it uses, so `serve --stdio`
// (an OpenSSH ProxyCommand, started once per connection) starts in a fraction of the time that
// loading the TypeScript sources through tsx takes. Runs on `npm ci`/`npm install` (prepare).
import { build } from "esbuild"

// Two entries: the whole CLI, and `serve --stdio` alone (an OpenSSH ProxyCommand starts one per
// connection; without the option parser it loads about a third less).
await build({
  entryPoints: { cli: "src/cli/main.ts", "serve-stdio": "src/cli/serveStdio.ts" },
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
