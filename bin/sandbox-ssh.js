#!/usr/bin/env node
// The sandbox-ssh CLI, bundled from src/cli by `npm run build` (run by npm install / npm ci) and run
// with V8's code cache (code-cache.cjs). `serve --stdio` (one process per OpenSSH connection) has a
// bundle of its own that loads faster. CommonJS (bin/package.json): no ES module loader to start.
"use strict"
const fs = require("node:fs")
const path = require("node:path")

const args = process.argv.slice(2)
const stdio = args[0] === "serve" && args.includes("--stdio") && !args.includes("--help")
const bundle = path.join(__dirname, "..", "dist", stdio ? "serve-stdio.cjs" : "cli.cjs")
if (!fs.existsSync(bundle)) {
  process.stderr.write("sandbox-ssh: the CLI is not built; run `npm run build` in the package directory\n")
  process.exit(1)
}
require("./code-cache.cjs").run(bundle)
