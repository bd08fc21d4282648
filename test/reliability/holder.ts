/**
 * Fixture (not a test) for faults.test.ts: a host program with a bubblewrap sandbox, an in-process
 * client and running execs; it prints "ready <runtimeDir>" and waits to be SIGKILLed.
 * Usage: node --import tsx holder.ts <root> <marker> <execs>
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { internals } from "../../src/internal/local/sandbox.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"

const [root, marker, execs] = process.argv.slice(2)

Effect.gen(function*() {
  const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap", root })
  const client = yield* SandboxSsh.make(sandbox).openClient()
  for (let i = 0; i < Number(execs ?? 4); i++) {
    const process = yield* client.spawn(`sleep 1000; : ${marker}`)
    yield* Effect.forkScoped(Stream.runDrain(process.stdout))
  }
  // a background job of the sandbox, detached from every exec, too
  yield* client.exec(`setsid sh -c 'sleep 1000; : ${marker}' >/dev/null 2>&1 &`)
  process.stdout.write(`ready ${internals(sandbox)!.runtimeDir}\n`)
  yield* Effect.never
}).pipe(Effect.scoped, Effect.runFork)
