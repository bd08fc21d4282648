/**
 * The reference's typical flow on the embedded default sandbox: open a native client, run a
 * command, read its output and exit status, close. Run with `npm start`.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { LocalSandbox, SandboxSsh, SshKeys } from "../src/index.js"

const program = Effect.gen(function*() {
  const ssh = yield* SandboxSsh.SandboxSsh
  const { info } = ssh.sandbox
  yield* Console.log(
    info.isolated
      ? `sandbox: ${info.root} (isolated with ${info.isolation})`
      : `sandbox: ${info.root} (NOT isolated: plain host processes; install bubblewrap to isolate)`
  )

  const client = yield* ssh.openClient() // 1. open a native client
  const out = yield* client.exec("uname -a") // 2. run a command
  yield* Console.log(`${out.stdoutText.trimEnd()} (exit ${out.status})`)

  const failing = yield* client.exec("ls /no/such/path")
  yield* Console.log(`failing command: exit ${failing.status}, success=${failing.success}`)
  yield* Console.log(`  stderr: ${failing.stderrText.trimEnd()}`)

  yield* client.close // 3. close (the scope would close it too)
}).pipe(
  Effect.scoped,
  Effect.provide(SandboxSsh.layer),
  Effect.provide([LocalSandbox.layer(), SshKeys.layer])
)

NodeRuntime.runMain(program)
