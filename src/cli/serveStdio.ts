/**
 * The fast entry for `sandbox-ssh serve --stdio`: an OpenSSH ProxyCommand starts one per
 * connection, so it skips the full command-line parser (and the modules behind it) and reads the
 * few options `serve` takes with `node:util`. Same options, same meaning as `serve` in `main.ts`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { parseArgs } from "node:util"
import { InvalidOptionError } from "../SshError.js"
import * as SshKeys from "../SshKeys.js"
import { runCli, StderrLogger, withLogging } from "./runtime.js"
import { serve } from "./serve.js"

const parse = Effect.try({
  try: () =>
    parseArgs({
      args: process.argv.slice(3),
      strict: true,
      allowPositionals: false,
      options: {
        stdio: { type: "boolean" },
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

const program = Effect.gen(function*() {
  const values = yield* parse
  const isolation = values.isolation
  if (isolation !== "auto" && isolation !== "bubblewrap" && isolation !== "none") {
    return yield* new InvalidOptionError({ option: "--isolation", detail: "one of auto, bubblewrap, none" })
  }
  yield* serve({
    stdio: true,
    host: "127.0.0.1",
    port: 0,
    root: Option.fromNullable(values.root),
    name: Option.fromNullable(values.name),
    isolation,
    hostKey: values["host-key"],
    authorizedKeys: values["authorized-keys"],
    user: values.user
  }, SshKeys.make).pipe(withLogging(values.verbose === true))
})

runCli(program.pipe(Effect.provide(StderrLogger)), { interruptOnHangup: true })
