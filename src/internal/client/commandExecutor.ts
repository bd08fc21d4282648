/**
 * `@effect/platform`'s `CommandExecutor` over an SSH client: commands run inside the sandbox.
 *
 * @internal
 */
import * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import { SystemError } from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { SshClient } from "../../SshClient.js"
import type { SshError } from "../../SshError.js"

/** Quotes one word for a POSIX shell. @internal */
export const shellQuote = (word: string): string =>
  /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`

const toSystemError = (method: string) => (error: SshError) =>
  new SystemError({ module: "Command", method, reason: "Unknown", description: error.message, cause: error })

const commandLine = (command: Command.StandardCommand): string => {
  const words = command.shell === false
    ? [command.command, ...command.args].map(shellQuote).join(" ")
    : [command.command, ...command.args].join(" ")
  return Option.match(command.cwd, {
    onNone: () => words,
    onSome: (cwd) => `cd ${shellQuote(cwd)} && ${words}`
  })
}

let nextProcessId = 1

const start = (client: SshClient) => (command: Command.Command) =>
  Effect.gen(function*() {
    const parts = Command.flatten(command)
    const first = parts[0]
    const last = parts[parts.length - 1]!
    const line = parts.length === 1 ? commandLine(first) : parts.map((part) => `(${commandLine(part)})`).join(" | ")
    const env = parts.reduce(
      (env, part) => ({ ...env, ...Object.fromEntries(HashMap.toEntries(part.env)) }),
      {} as Record<string, string>
    )
    const proc = yield* client.spawn(line, Object.keys(env).length > 0 ? { env } : {}).pipe(
      Effect.mapError(toSystemError("start"))
    )
    if (typeof first.stdin !== "string") {
      yield* Effect.forkScoped(Stream.run(first.stdin, proc.stdin).pipe(Effect.ignore))
    } else if (first.stdin === "inherit") {
      yield* Effect.forkScoped(Stream.run(Stream.empty, proc.stdin).pipe(Effect.ignore))
    }
    const redirect = (output: Command.Command.Output, stream: Stream.Stream<Uint8Array, SshError>) =>
      typeof output === "string" ? stream : Stream.transduce(stream, output)
    const process: CommandExecutor.Process = {
      ...Inspectable.BaseProto,
      [CommandExecutor.ProcessTypeId]: CommandExecutor.ProcessTypeId,
      pid: CommandExecutor.ProcessId(nextProcessId++),
      exitCode: Effect.map(proc.exitCode, CommandExecutor.ExitCode).pipe(Effect.mapError(toSystemError("exitCode"))),
      isRunning: proc.isRunning,
      kill: (signal = "SIGTERM") =>
        proc.signal(signal).pipe(
          Effect.zipRight(Effect.ignore(proc.exit)),
          Effect.mapError(toSystemError("kill"))
        ),
      stdin: Sink.mapError(proc.stdin, toSystemError("stdin")),
      stdout: Stream.mapError(redirect(last.stdout, proc.stdout), toSystemError("stdout")),
      stderr: Stream.mapError(redirect(last.stderr, proc.stderr), toSystemError("stderr")),
      toJSON() {
        return { _id: "@effect/platform/CommandExecutor/Process", pid: this.pid, command: line }
      }
    }
    return process
  })

/** @internal */
export const layerCommandExecutor = (client: SshClient): Layer.Layer<CommandExecutor.CommandExecutor> =>
  Layer.succeed(CommandExecutor.CommandExecutor, CommandExecutor.makeExecutor(start(client)))
