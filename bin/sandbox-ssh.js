#!/usr/bin/env node
// The sandbox-ssh CLI, bundled from src/cli by `npm run build` (run by npm install / npm ci) and run
// with V8's code cache (bin/code-cache.cjs). `serve --stdio` (one process per OpenSSH connection)
// has a bundle of its own that loads faster.
import { existsSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"

const args = process.argv.slice(2)
const stdio = args[0] === "serve" && args.includes("--stdio") && !args.includes("--help")
const bundle = fileURLToPath(new URL(stdio ? "../dist/serve-stdio.cjs" : "../dist/cli.cjs", import.meta.url))
if (!existsSync(bundle)) {
  process.stderr.write("sandbox-ssh: the CLI is not built; run `npm run build` in the package directory\n")
  process.exit(1)
}
createRequire(import.meta.url)("./code-cache.cjs").run(bundle)
