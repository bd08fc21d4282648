/**
 * How to test your own Effect program without a real sandbox: provide `MemorySandbox.layer`
 * where production provides `LocalSandbox.layer`. The SSH client, exec and exit codes are real;
 * only the commands are scripted.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { MemorySandbox, SandboxSsh, SshKeys } from "../src/index.js"

// The program under test: reports the kernel of a sandbox, failing when the command fails.
const kernelOf = Effect.gen(function*() {
  const client = yield* SandboxSsh.openClient()
  const out = yield* client.exec("uname -a")
  if (!out.success) return yield* Effect.fail(`uname failed with ${out.status}: ${out.stderrText}`)
  return out.stdoutText.trim()
}).pipe(Effect.scoped)

const testLayer = (handlers: MemorySandbox.Handlers) =>
  SandboxSsh.layer.pipe(Layer.provide([MemorySandbox.layer({ handlers }), SshKeys.layer]))

describe("kernelOf, tested against MemorySandbox", () => {
  it.effect("returns what the sandbox's uname prints", () =>
    Effect.gen(function*() {
      const kernel = yield* kernelOf
      assert.strictEqual(kernel, "Linux test 6.1.0 x86_64")
    }).pipe(Effect.provide(testLayer({ "uname -a": { stdout: "Linux test 6.1.0 x86_64\n" } }))))

  it.effect("fails with the status and stderr when uname fails", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(kernelOf)
      assert.strictEqual(error, "uname failed with 2: uname: broken\n")
    }).pipe(Effect.provide(testLayer({ "uname -a": { stderr: "uname: broken\n", exitCode: 2 } }))))

  it.effect("an unscripted command behaves like a missing one (127)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(kernelOf)
      assert.match(String(error), /^uname failed with 127: sh: 1: uname: not found/)
    }).pipe(Effect.provide(testLayer({}))))
})
