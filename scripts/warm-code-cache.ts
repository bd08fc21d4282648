/**
 * The build's warm-up for `serve --stdio`'s code cache (see bin/code-cache.cjs): runs the bundled
 * `serve --stdio` once, as an OpenSSH ProxyCommand would, with `SANDBOX_SSH_WRITE_CODE_CACHE=1`,
 * and drives one typical connection through it with ssh2's client (an exec, then SFTP writes,
 * reads and a listing), so the cache holds what a connection compiles. Best effort: when the
 * warm-up fails, it says why and the build goes on (the CLI then runs without a cache).
 */
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Duplex } from "node:stream"
import ssh2 from "ssh2"
import * as SshKeys from "../src/SshKeys.js"

const bundle = Path.resolve(process.argv[2] ?? "dist/serve-stdio.cjs")
const cli = Path.resolve("bin/sandbox-ssh.js")

const main = async () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "sandbox-ssh-warm-up-"))
  try {
    const key = Effect.runSync(SshKeys.make.generateEphemeral)
    Fs.writeFileSync(Path.join(dir, "authorized_keys"), `${key.publicKey}\n`, { mode: 0o600 })
    Fs.mkdirSync(Path.join(dir, "root"))
    Fs.mkdirSync(Path.join(dir, "home"), { mode: 0o700 })
    const child = spawn(process.execPath, [
      cli,
      "serve",
      "--stdio",
      "--root",
      Path.join(dir, "root"),
      "--host-key",
      Path.join(dir, "host_key"),
      "--authorized-keys",
      Path.join(dir, "authorized_keys")
    ], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, SANDBOX_SSH_HOME: Path.join(dir, "home"), SANDBOX_SSH_WRITE_CODE_CACHE: "1" }
    })
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    try {
      await connection(Duplex.from({ readable: child.stdout, writable: child.stdin }), key.privateKey)
    } finally {
      // as OpenSSH's client ends a ProxyCommand: its input closes, then SIGHUP
      child.stdin.end()
      setTimeout(() => child.kill("SIGHUP"), 200).unref()
    }
    const code = await exited
    clearTimeout(timer)
    // 129: ended by the SIGHUP, as under OpenSSH
    if (code !== 0 && code !== 129) throw new Error(`serve --stdio exited with ${code}`)
    const size = Fs.statSync(`${bundle}.cache`).size
    process.stderr.write(`sandbox-ssh build: code cache for serve --stdio written (${Math.round(size / 1024)} KiB)\n`)
  } finally {
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** One connection: `exec true`, then an SFTP round of write, stat, read, readdir, remove. */
const connection = (sock: Duplex, privateKey: string) =>
  new Promise<void>((resolve, reject) => {
    const client = new ssh2.Client()
    const fail = (error: unknown) => {
      client.end()
      reject(error)
    }
    client.on("error", fail)
    client.on("ready", () => {
      client.exec("true", (error, channel) => {
        if (error) return fail(error)
        channel.resume()
        channel.stderr.resume()
        channel.on("close", (status: number) => {
          if (status !== 0) return fail(new Error(`exec true: status ${status}`))
          client.sftp((error, sftp) => {
            if (error) return fail(error)
            const data = Buffer.alloc(256 * 1024, 7)
            sftp.writeFile("warm-up", data, (error) => {
              if (error) return fail(error)
              sftp.stat("warm-up", (error) => {
                if (error) return fail(error)
                sftp.readFile("warm-up", (error, read) => {
                  if (error) return fail(error)
                  if (!read.equals(data)) return fail(new Error("SFTP read back other bytes"))
                  sftp.readdir(".", (error) => {
                    if (error) return fail(error)
                    sftp.unlink("warm-up", (error) => {
                      if (error) return fail(error)
                      client.end()
                      resolve()
                    })
                  })
                })
              })
            })
          })
        })
      })
    })
    client.connect({
      sock,
      username: "root",
      privateKey,
      readyTimeout: 30_000,
      // what OpenSSH's client negotiates by default
      algorithms: { cipher: ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"] }
    })
  })

main().catch((error) => {
  process.stderr.write(
    `sandbox-ssh build: no code cache for serve --stdio (it starts slower): ${String(error?.message ?? error)}\n`
  )
  Fs.rmSync(`${bundle}.cache`, { force: true })
})
