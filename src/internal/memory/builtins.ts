/**
 * A few commands users can opt into. They do what the coreutils/dash commands of the same name do
 * for simple invocations, and match nothing else.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type * as MemorySandbox from "../../MemorySandbox.js"
import type { SandboxError } from "../../SshError.js"
import { splitWords } from "./command.js"

const READ_SIZE = 65_536

const program = (name: string) => (line: string): boolean => {
  const { simple, words } = splitWords(line)
  const first = words[0]
  return simple && (first === name || first === `/bin/${name}` || first === `/usr/bin/${name}`)
}

const describe = (error: SandboxError): string => {
  switch (error.reason) {
    case "NotFound":
      return "No such file or directory"
    case "IsADirectory":
      return "Is a directory"
    case "NotADirectory":
      return "Not a directory"
    case "PermissionDenied":
      return "Permission denied"
    default:
      return error.detail ?? error.reason
  }
}

const copyFile = (context: MemorySandbox.HandlerContext, path: string): Effect.Effect<void, SandboxError> =>
  Effect.acquireUseRelease(
    context.fs.open(path, { read: true }),
    (file) => {
      const loop = (offset: number): Effect.Effect<void, SandboxError> =>
        Effect.flatMap(
          file.read(offset, READ_SIZE),
          (chunk) =>
            chunk.length === 0 ? Effect.void : Effect.zipRight(context.stdout(chunk), loop(offset + chunk.length))
        )
      return loop(0)
    },
    (file) => Effect.ignore(file.close)
  )

const cat: MemorySandbox.HandlerFn = (context) =>
  Effect.gen(function*() {
    const operands = context.args.length === 0 ? ["-"] : context.args
    let exitCode = 0
    for (const operand of operands) {
      if (operand === "-") {
        yield* Stream.runForEach(context.stdin, context.stdout)
        continue
      }
      yield* copyFile(context, operand).pipe(
        Effect.catchAll((error) => {
          exitCode = 1
          return context.stderr(`cat: ${operand}: ${describe(error)}\n`)
        })
      )
    }
    return { exitCode }
  })

const echo: MemorySandbox.HandlerFn = ({ args }) => {
  const newline = args[0] !== "-n"
  const words = newline ? args : args.slice(1)
  return Effect.succeed({ stdout: words.join(" ") + (newline ? "\n" : "") })
}

const exit: MemorySandbox.HandlerFn = ({ args }) => {
  const operand = args[0]
  if (operand === undefined) return Effect.succeed({ exitCode: 0 })
  if (!/^\d+$/.test(operand)) {
    return Effect.succeed({ stderr: `sh: 1: exit: Illegal number: ${operand}\n`, exitCode: 2 })
  }
  return Effect.succeed({ exitCode: Number(operand) & 0xff })
}

const UNITS: Readonly<Record<string, number>> = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }

const sleep: MemorySandbox.HandlerFn = ({ args }) => {
  if (args.length === 0) return Effect.succeed({ stderr: "sleep: missing operand\n", exitCode: 1 })
  let seconds = 0
  for (const operand of args) {
    const match = /^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$/.exec(operand)
    if (match === null) return Effect.succeed({ stderr: `sleep: invalid time interval '${operand}'\n`, exitCode: 1 })
    seconds += Number(match[1]) * UNITS[match[2]!]!
  }
  return Effect.as(Effect.sleep(Duration.millis(seconds * 1000)), {})
}

/** @internal */
export const builtins: ReadonlyArray<MemorySandbox.Handler> = [
  { match: program("true"), run: { exitCode: 0 } },
  { match: program("false"), run: { exitCode: 1 } },
  { match: program("echo"), run: echo },
  { match: program("cat"), run: cat },
  { match: program("exit"), run: exit },
  { match: program("pwd"), run: ({ cwd }) => Effect.succeed({ stdout: `${cwd}\n` }) },
  { match: program("sleep"), run: sleep }
]
