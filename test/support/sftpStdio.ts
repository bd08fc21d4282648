/**
 * Runs the real OpenSSH `sftp` client against an SFTP server program over pipes (`sftp -D`), with
 * no SSH in between: our server through `sftp-stdio-server.ts`, or OpenSSH's own `sftp-server` as
 * the reference.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const here = Path.dirname(fileURLToPath(import.meta.url))
const tsxLoader = Path.resolve(here, "../../node_modules/tsx/dist/loader.mjs")
const runner = Path.resolve(here, "sftp-stdio-server.ts")

/** The reference implementation. */
export const opensshServer = "/usr/lib/openssh/sftp-server"

/** `sftp -D` program for our server on a MemorySandbox (workdir `/root`, holding `hello.txt`). */
export const memoryServer = `${process.execPath} --import ${tsxLoader} ${runner} memory`

/** `sftp -D` program for our server on a non-isolated LocalSandbox rooted at `root`. */
export const localServer = (root: string) => `${process.execPath} --import ${tsxLoader} ${runner} local ${root}`

export interface SftpResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs `sftp -D <server> -b <batch>` in `cwd` (the client's local directory). The server program
 * runs in `cwd` too (OpenSSH's `sftp-server` serves its working directory). Killed on interruption.
 */
export const runSftp = (server: string, batch: string, cwd: string): Effect.Effect<SftpResult> =>
  Effect.async<SftpResult>((resume) => {
    const batchFile = Path.join(cwd, `.batch-${process.pid}-${Math.random().toString(36).slice(2)}`)
    Fs.writeFileSync(batchFile, batch)
    const child = ChildProcess.spawn("sftp", ["-D", server, "-b", batchFile], {
      cwd,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (data: string) => stdout += data)
    child.stderr.setEncoding("utf8").on("data", (data: string) => stderr += data)
    child.on("close", (code) => {
      Fs.rmSync(batchFile, { force: true })
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => {
      child.kill("SIGKILL")
      Fs.rmSync(batchFile, { force: true })
    })
  })

/** A fresh temporary directory, removed with the scope. */
export const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  )
