/**
 * Our SFTP server over stdin/stdout, as an `sftp-server` program for `sftp -D`:
 *
 *   sftp -D "node --import tsx test/support/sftp-stdio-server.ts memory" -b batch
 *   sftp -D "node --import tsx test/support/sftp-stdio-server.ts local /some/dir" -b batch
 *
 * `memory` serves a fresh MemorySandbox (working directory `/root`, holding `hello.txt`), `local
 * <dir>` a non-isolated LocalSandbox rooted at `<dir>` (its working directory). The session ends
 * when sftp closes the pipe. Logs go to stderr; stdout carries nothing but SFTP.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Net from "node:net"
import { serve } from "../../src/internal/server/sftp/server.js"
import * as LocalSandbox from "../../src/LocalSandbox.js"
import * as MemorySandbox from "../../src/MemorySandbox.js"

const [mode, root] = process.argv.slice(2)

const sandbox = mode === "local" && root !== undefined
  ? LocalSandbox.make({ root, isolation: "none" })
  : MemorySandbox.make({ files: { "/root/hello.txt": "hello\n" } })

// Our own non-blocking handle on fd 1: process.stdout on a pipe writes synchronously, which
// would block the event loop instead of exercising the server's output flow control.
const output = new Net.Socket({ fd: 1, readable: false, writable: true })
output.on("error", () => undefined) // the client may go away first; the session then ends on EOF

// SFTP_STDIO_TIMING=1: report on stderr how long the session ran, from the first byte to EOF
// (benchmarks subtract nothing then: node's start-up is not part of it).
if (process.env.SFTP_STDIO_TIMING === "1") {
  let start = 0
  process.stdin.once("readable", () => {
    start = performance.now()
  })
  process.stdin.once("end", () => {
    process.stderr.write(`sftp-stdio-server: session ${(performance.now() - start).toFixed(0)} ms\n`)
  })
}

const program = Effect.gen(function*() {
  const sb = yield* sandbox
  yield* serve(process.stdin, output, { fs: sb.fs })
  yield* Effect.async<void>((resume) => {
    output.end(() => resume(Effect.void))
  })
}).pipe(
  Effect.scoped,
  Effect.tapErrorCause((cause) => Effect.logError("sftp-stdio-server", cause)),
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)))
)

NodeRuntime.runMain(program, { disableErrorReporting: true })
