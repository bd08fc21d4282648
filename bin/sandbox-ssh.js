#!/usr/bin/env node
// The sandbox-ssh CLI, bundled from src/cli by `npm run build` (run by npm install / npm ci) and run
// with V8's code cache (code-cache.cjs). `serve --stdio` (the OpenSSH ProxyCommand, one process per
// connection) is a small relay to the sandbox's server daemon (relay.cjs) that loads no bundle; the
// daemon (`serve --socket`) has a bundle of its own that loads faster than the whole CLI.
// CommonJS (bin/package.json): no ES module loader to start.
"use strict"
const fs = require("node:fs")
const path = require("node:path")

const args = process.argv.slice(2)
const serve = args[0] === "serve" && !args.includes("--help") && !args.includes("-h")
const daemon = serve && args.some((arg) => arg === "--socket" || arg.startsWith("--socket="))
if (serve && !daemon && args.includes("--stdio")) {
  require("./relay.cjs")
} else {
  const bundle = path.join(__dirname, "..", "dist", daemon ? "daemon.cjs" : "cli.cjs")
  if (!fs.existsSync(bundle)) {
    process.stderr.write("sandbox-ssh: the CLI is not built; run `npm run build` in the package directory\n")
    process.exit(1)
  }
  require("./code-cache.cjs").run(bundle)
}
