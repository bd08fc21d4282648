#!/usr/bin/env node
// The sandbox-ssh CLI, bundled from src/cli by `npm run build` (run by npm install / npm ci).
import { existsSync } from "node:fs"

const bundle = new URL("../dist/cli.mjs", import.meta.url)
if (!existsSync(bundle)) {
  process.stderr.write("sandbox-ssh: the CLI is not built; run `npm run build` in the package directory\n")
  process.exit(1)
}
await import(bundle.href)
