#!/usr/bin/env node
// The sandbox-ssh CLI, bundled from src/cli by `npm run build` (run by npm install / npm ci).
// `serve --stdio` (one process per OpenSSH connection) has a bundle of its own that loads faster.
import { existsSync } from "node:fs"

const args = process.argv.slice(2)
const entry = args[0] === "serve" && args.includes("--stdio") && !args.includes("--help") ? "serve-stdio" : "cli"
const bundle = new URL(`../dist/${entry}.mjs`, import.meta.url)
if (!existsSync(bundle)) {
  process.stderr.write("sandbox-ssh: the CLI is not built; run `npm run build` in the package directory\n")
  process.exit(1)
}
await import(bundle.href)
