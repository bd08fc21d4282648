/**
 * A real terminal for tests: a private tmux server (its own socket in a temporary directory, no
 * config file) running one pane of known size with a plain bash, driven by `send-keys` and read by
 * `capture-pane`. The server is killed and its directory removed when the scope closes (and, as a
 * backstop, when the test process exits): tmux leaves its socket file behind otherwise.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as Path from "node:path"

export class TmuxError extends Data.TaggedError("TmuxError")<{ readonly message: string }> {}

export interface Tmux {
  /** The server's socket (`tmux -S <socket> ...` reaches it). */
  readonly socket: string
  /** `send-keys` with tmux key names (`"Enter"`, `"C-c"`, `"C-]"`). */
  readonly keys: (...keys: ReadonlyArray<string>) => Effect.Effect<void>
  /** Types `text` literally, then Enter. */
  readonly line: (text: string) => Effect.Effect<void>
  /** The visible screen, one string (trailing blanks trimmed by tmux). */
  readonly screen: Effect.Effect<string>
  /** The screen plus the scroll-back history. */
  readonly history: Effect.Effect<string>
  /** Polls the history until `pattern` matches; fails with the last screen after `timeoutMs`. */
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Effect.Effect<RegExpMatchArray, TmuxError>
  readonly resize: (cols: number, rows: number) => Effect.Effect<void>
  /** The pid of the pane's bash. */
  readonly panePid: number
  /** Empties the screen and the history, so that later waits only see new output. */
  readonly clear: Effect.Effect<void>
}

const tmux = (socket: string, args: ReadonlyArray<string>): string =>
  execFileSync("tmux", ["-S", socket, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

/** A pane of `cols`×`rows` running `bash --norc --noprofile` with the prompt `host$ `, in `cwd`. */
export const make = (options: {
  readonly cols: number
  readonly rows: number
  readonly cwd: string
}): Effect.Effect<Tmux, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(Path.join(os.tmpdir(), "sandbox-ssh-tmux-"))
    const socket = Path.join(dir, "socket")
    const kill = () => {
      try {
        tmux(socket, ["kill-server"])
      } catch {
        // already gone
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        process.on("exit", kill)
        tmux(socket, [
          "-f",
          "/dev/null",
          "new-session",
          "-d",
          "-x",
          String(options.cols),
          "-y",
          String(options.rows),
          "-s",
          "main",
          "-c",
          options.cwd,
          "env PS1='host$ ' HISTFILE=/dev/null bash --norc --noprofile -i",
          ";",
          "set-option",
          "-g",
          "status",
          "off",
          ";",
          "set-option",
          "-g",
          "history-limit",
          "10000"
        ])
      }),
      () =>
        Effect.sync(() => {
          kill()
          process.off("exit", kill)
        })
    )
    const panePid = Number(tmux(socket, ["display-message", "-p", "-t", "main", "#{pane_pid}"]).trim())
    const history = Effect.sync(() => tmux(socket, ["capture-pane", "-p", "-J", "-S", "-", "-t", "main"]))
    const t: Tmux = {
      socket,
      panePid,
      keys: (...keys) => Effect.sync(() => void tmux(socket, ["send-keys", "-t", "main", ...keys])),
      line: (text) =>
        Effect.sync(() => {
          tmux(socket, ["send-keys", "-t", "main", "-l", text])
          tmux(socket, ["send-keys", "-t", "main", "Enter"])
        }),
      screen: Effect.sync(() => tmux(socket, ["capture-pane", "-p", "-t", "main"])),
      history,
      waitFor: (pattern, timeoutMs = 20_000) =>
        Effect.gen(function*() {
          const deadline = Date.now() + timeoutMs
          for (;;) {
            const text = yield* history
            const match = text.match(pattern)
            if (match !== null) return match
            if (Date.now() > deadline) {
              return yield* new TmuxError({
                message: `timed out waiting for ${pattern} on the terminal; it shows:\n${text.trimEnd()}`
              })
            }
            yield* Effect.sleep(50)
          }
        }),
      resize: (cols, rows) =>
        Effect.sync(() => void tmux(socket, ["resize-window", "-t", "main", "-x", String(cols), "-y", String(rows)])),
      clear: Effect.sync(() => {
        tmux(socket, ["send-keys", "-t", "main", "-R"])
        tmux(socket, ["clear-history", "-t", "main"])
      })
    }
    return t
  })
