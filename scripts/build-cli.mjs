// Bundles the CLI into dist/cli.mjs: one file with only the modules it uses, so `serve --stdio`
// (an OpenSSH ProxyCommand, started once per connection) starts in a fraction of the time that
// loading the TypeScript sources through tsx takes. Runs on `npm ci`/`npm install` (prepare).
import { build } from "esbuild"

await build({
  entryPoints: ["src/cli/main.ts"],
  outfile: "dist/cli.mjs",
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // Native or CommonJS-with-optional-natives packages load from node_modules as usual.
  external: ["ssh2", "@lydell/node-pty"],
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  logLevel: "warning"
})
