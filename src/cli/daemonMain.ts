/**
 * The entry of the server daemon, `sandbox-ssh serve --socket PATH` (started on demand by
 * `serve --stdio`, the OpenSSH ProxyCommand relay in bin/relay.cjs), bundled on its own: it skips
 * the full command-line parser (and the modules behind it) and reads the few options with
 * `node:util`. Same options, same meaning as `serve --socket` in `main.ts`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { parseArgs } from "node:util"
import { InvalidOptionError } from "../SshError.js"
import * as SshKeys from "../SshKeys.js"
import { serveSocket } from "./daemon.js"
import { runCli, StderrLogger, withLogging } from "./runtime.js"
import type { SandboxSelection } from "./sandboxSelection.js"

const parse = Effect.try({
  try: () =>
    parseArgs({
      args: process.argv.slice(3),
      strict: true,
      allowPositionals: false,
      options: {
        socket: { type: "string" },
        linger: { type: "string" },
        root: { type: "string" },
        name: { type: "string" },
        isolation: { type: "string", default: "auto" },
        "host-key": { type: "string" },
        "authorized-keys": { type: "string" },
        user: { type: "string" },
        verbose: { type: "boolean", short: "v" }
      }
    }).values,
  catch: (error) =>
    new InvalidOptionError({ option: "serve", detail: `${(error as Error).message} (see: sandbox-ssh serve --help)` })
})

const isIsolation = (value: string): value is SandboxSelection["isolation"] =>
  value === "auto" || value === "bubblewrap" || value === "none"

const program = Effect.gen(function*() {
  const values = yield* parse
  const isolation = values.isolation
  if (!isIsolation(isolation)) {
    return yield* new InvalidOptionError({ option: "--isolation", detail: "one of auto, bubblewrap, none" })
  }
  if (values.socket === undefined) {
    return yield* new InvalidOptionError({ option: "--socket", detail: "the daemon needs the socket to serve" })
  }
  yield* serveSocket({
    root: Option.fromNullable(values.root),
    name: Option.fromNullable(values.name),
    isolation,
    hostKey: values["host-key"],
    authorizedKeys: values["authorized-keys"],
    user: values.user,
    socket: values.socket,
    linger: values.linger
  }, SshKeys.make).pipe(withLogging(values.verbose === true))
})

runCli(program.pipe(Effect.provide(StderrLogger)), { interruptOnHangup: true })
