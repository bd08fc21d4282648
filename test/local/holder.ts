/**
 * Test fixture (not a test): holds a bubblewrap sandbox with a background process, prints "ready",
 * then waits to be killed. Usage: node --import tsx holder.ts <root> <marker>
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { internals } from "../../src/internal/local/sandbox.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"

const [root, marker] = process.argv.slice(2)

Effect.gen(function*() {
  const sandbox = yield* LocalSandbox.make({ isolation: "bubblewrap", root })
  const child = yield* sandbox.spawn({
    command: "/bin/sh",
    args: ["-c", `/bin/sh -c 'sleep 1000; : ${marker}' >/dev/null 2>&1 & echo started`]
  })
  yield* Stream.run(Stream.empty, child.stdin)
  yield* Stream.runDrain(child.stdout)
  yield* child.exit
  // its runtime directory outlives a SIGKILL (no finalizer runs): the test removes it
  process.stdout.write(`ready ${internals(sandbox)!.runtimeDir}\n`)
  yield* Effect.never
}).pipe(Effect.scoped, Effect.runFork)
