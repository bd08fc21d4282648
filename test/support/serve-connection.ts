/**
 * `SshServer.serveConnection` as an OpenSSH ProxyCommand: one connection over stdin/stdout,
 *
 *   ssh -o ProxyCommand="node --import tsx test/support/serve-connection.ts <home> <root>" host
 *
 * serving a non-isolated LocalSandbox rooted at `<root>`, with `<home>/host_key` and
 * `<home>/authorized_keys`. Logs go to stderr; stdout carries nothing but SSH.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Path from "node:path"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as SandboxSsh from "../../src/SandboxSsh.js"

const [home, root] = process.argv.slice(2)

const program = Effect.gen(function*() {
  const sandbox = yield* LocalSandbox.make({ root: root!, isolation: "none" })
  const server = yield* SandboxSsh.make(sandbox).prepareServer({
    hostKeyPath: Path.join(home!, "host_key"),
    authorizedKeysPath: Path.join(home!, "authorized_keys")
  })
  yield* server.serveConnection()
}).pipe(
  Effect.scoped,
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)))
)

NodeRuntime.runMain(program, { disableErrorReporting: true })
