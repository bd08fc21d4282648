/**
 * The fast entry for the server daemon, `sandbox-ssh serve --socket PATH` (started on demand by
 * `serve --stdio`, the OpenSSH ProxyCommand relay in bin/relay.cjs), and for one connection over
 * stdin/stdout (`serve --stdio` run straight from this bundle). It skips the full command-line
 * parser (and the modules behind it) and reads the few options `serve` takes with `node:util`.
 * Same options, same meaning as `serve` in `main.ts`.
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
import { serve } from "./serve.js"

const parse = Effect.try({
  try: () =>
    parseArgs({
      args: process.argv.slice(3),
      strict: true,
      allowPositionals: false,
      options: {
        stdio: { type: "boolean" },
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
  if ((values.socket === undefined) === (values.stdio !== true)) {
    return yield* new InvalidOptionError({ option: "serve", detail: "give one of --socket PATH and --stdio" })
  }
  const selection = {
    root: Option.fromNullable(values.root),
    name: Option.fromNullable(values.name),
    isolation,
    hostKey: values["host-key"],
    authorizedKeys: values["authorized-keys"],
    user: values.user
  }
  yield* (values.socket === undefined
    ? serve({ ...selection, stdio: true, host: "127.0.0.1", port: 0 }, SshKeys.make)
    : serveSocket({ ...selection, socket: values.socket, linger: values.linger }, SshKeys.make)).pipe(
      withLogging(values.verbose === true)
    )
})

runCli(program.pipe(Effect.provide(StderrLogger)), { interruptOnHangup: true })
