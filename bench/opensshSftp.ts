/**
 * Drives one OpenSSH `sftp` process in batch mode (`sftp -b -`), one command at a time, and times
 * each command by itself, without the connection set-up.
 *
 * In batch mode `sftp` reads its commands from stdin with `fgets`, echoes each one as it reads it
 * (`sftp> <command>`, line-buffered) and reads the next only once the previous one is done. So
 * each command is sent followed by `lpwd` (local, no network); the echo of that `lpwd` marks the
 * end of the command. A failed command makes batch-mode `sftp` exit, which fails the measurement.
 *
 * The same driver runs against sshd (through the anchor's ControlMaster) and against our server
 * (TCP listener or `serve --stdio` ProxyCommand), so both sides pay exactly the same client.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { performance } from "node:perf_hooks"
import { BenchError, endChild } from "./util.js"

const MARKER = "sftp> lpwd"

export interface SftpProcess {
  /** Runs one command; succeeds with its wall time in ms once `sftp` is ready for the next one. */
  readonly command: (line: string) => Effect.Effect<number, BenchError>
}

/**
 * Starts `sftp <args> -b - <host>` and waits until it is connected. The process gets EOF on stdin,
 * then SIGKILL after 2 s, when the scope closes.
 */
export const open = (
  args: ReadonlyArray<string>,
  host: string,
  options: { readonly env?: NodeJS.ProcessEnv | undefined; readonly timeoutMs?: number | undefined } = {}
): Effect.Effect<SftpProcess, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn("sftp", [...args, "-b", "-", host], {
          stdio: ["pipe", "pipe", "pipe"],
          env: options.env ?? process.env
        })
      ),
      (c) => endChild(c, (c) => c.stdin!.end(), 2000)
    )
    let out = ""
    let err = ""
    let seen = 0
    let sent = 0
    let exited: string | undefined
    const waiters = new Set<() => boolean>()
    const wake = () => {
      for (const w of waiters) w()
    }
    let partial = ""
    child.stdout!.on("data", (b: Buffer) => {
      const lines = (partial + b.toString("utf8")).split("\n")
      partial = lines.pop()!
      for (const line of lines) {
        if (line === MARKER) seen++
        else out = `${out}${line}\n`.slice(-4096) // kept for error messages only
      }
      wake()
    })
    child.stderr!.on("data", (b: Buffer) => {
      err = (err + b.toString("utf8")).slice(-4096)
    })
    child.on("error", (e) => {
      exited = `spawn sftp: ${e.message}`
      wake()
    })
    child.on("exit", (code, signal) => {
      exited = `sftp exited (${code ?? signal}): ${err.trim().split("\n").slice(-2).join(" | ") || out.trim()}`
      wake()
    })
    child.stdin!.on("error", () => undefined) // EPIPE after sftp exits: reported through `exited`
    const timeoutMs = options.timeoutMs ?? 300_000

    const waitMarker = (target: number) =>
      Effect.async<void, BenchError>((resume) => {
        const check = (): boolean => {
          if (seen < target && exited === undefined) return false
          waiters.delete(check)
          clearTimeout(timer)
          resume(seen >= target ? Effect.void : Effect.fail(new BenchError({ message: exited! })))
          return true
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          resume(Effect.fail(new BenchError({ message: `sftp: no answer within ${timeoutMs} ms` })))
        }, timeoutMs)
        if (check()) return
        waiters.add(check)
        return Effect.sync(() => {
          clearTimeout(timer)
          waiters.delete(check)
        })
      })

    /** Writes `line` then `lpwd`, and waits for that `lpwd`'s echo. */
    const send = (line: string) =>
      Effect.suspend(() => {
        if (exited !== undefined) return Effect.fail(new BenchError({ message: exited }))
        sent += line.split("\n").filter((l) => l.trim() === "lpwd").length + 1
        child.stdin!.write(`${line}\nlpwd\n`)
        return waitMarker(sent)
      })

    // Connected once the first marker comes back.
    yield* send("lcd .")
    return {
      command: (line: string) =>
        Effect.suspend(() => {
          const start = performance.now()
          return Effect.map(send(line), () => performance.now() - start)
        })
    }
  })
