// Runs a CommonJS bundle with V8's code cache: `<bundle>.cache`, written by `npm run build` after a
// warm-up connection, holds the bytecode of the functions that run, so a new process skips most
// of parsing and compiling the bundle. A cache V8 rejects (another Node version) or a missing one
// only costs that time: the bundle then compiles from source as usual.
"use strict"
const fs = require("node:fs")
const path = require("node:path")
const vm = require("node:vm")
const Module = require("node:module")

/**
 * Runs `file` as the main module. With `SANDBOX_SSH_WRITE_CODE_CACHE` set (by the build's warm-up),
 * writes the code cache when the process exits.
 */
exports.run = (file) => {
  const cacheFile = `${file}.cache`
  const source = fs.readFileSync(file, "utf8")
  let cachedData
  try {
    cachedData = fs.readFileSync(cacheFile)
  } catch {
    // no cache: compile from source
  }
  const script = new vm.Script(Module.wrap(source), { filename: file, cachedData })
  if (process.env.SANDBOX_SSH_WRITE_CODE_CACHE === "1") {
    process.on("exit", () => {
      const temporary = `${cacheFile}.${process.pid}.tmp`
      fs.writeFileSync(temporary, script.createCachedData())
      fs.renameSync(temporary, cacheFile)
    })
  }
  const module = { exports: {}, filename: file, id: ".", loaded: true }
  script.runInThisContext()
    .call(module.exports, module.exports, Module.createRequire(file), module, file, path.dirname(file))
}
