/**
 * The build's warm-up for the server daemon's code cache (see bin/code-cache.cjs): starts the
 * bundled daemon (`serve --socket`, what `serve --stdio` relays OpenSSH connections to) with
 * `SANDBOX_SSH_WRITE_CODE_CACHE=1` and `--linger 0`, and drives one typical connection through its
 * socket with ssh2's client (an exec, then SFTP writes, reads and a listing); the daemon then exits
 * and writes the cache, which holds what starting and serving a connection compiles. Best effort:
 * when the warm-up fails, it says why and the build goes on (the daemon then starts without a cache).
 */
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import type { Duplex } from "node:stream"
import ssh2 from "ssh2"
import * as SshKeys from "../src/SshKeys.js"

const bundle = Path.resolve(process.argv[2] ?? "dist/daemon.cjs")
const cli = Path.resolve("bin/sandbox-ssh.js")

/** Connects to `path` once the daemon listens there (it starts a sandbox first). */
const connectWhenReady = async (path: string, exited: Promise<unknown>): Promise<Net.Socket> => {
  let gone = false
  void exited.then(() => {
    gone = true
  })
  for (const deadline = Date.now() + 60_000; Date.now() < deadline && !gone;) {
    const socket = await new Promise<Net.Socket | undefined>((resolve) => {
      const socket = Net.connect(path)
      socket.once("connect", () => resolve(socket))
      socket.once("error", () => resolve(undefined))
    })
    if (socket !== undefined) return socket
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(gone ? "the daemon exited before it served" : "the daemon did not answer within 60 s")
}

const main = async () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "sandbox-ssh-warm-up-"))
  try {
    const key = Effect.runSync(SshKeys.make.generateEphemeral)
    Fs.writeFileSync(Path.join(dir, "authorized_keys"), `${key.publicKey}\n`, { mode: 0o600 })
    Fs.mkdirSync(Path.join(dir, "root"))
    Fs.mkdirSync(Path.join(dir, "home"), { mode: 0o700 })
    const socket = Path.join(dir, "home", "run", "warm-up.sock")
    const child = spawn(process.execPath, [
      cli,
      "serve",
      "--socket",
      socket,
      "--linger",
      "0",
      "--root",
      Path.join(dir, "root"),
      "--host-key",
      Path.join(dir, "host_key"),
      "--authorized-keys",
      Path.join(dir, "authorized_keys")
    ], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SANDBOX_SSH_HOME: Path.join(dir, "home"), SANDBOX_SSH_WRITE_CODE_CACHE: "1" }
    })
    // its log (the line it serves with, and failures): shown only when the warm-up fails
    let log = ""
    child.stderr.on("data", (chunk: Buffer) => {
      log += chunk.toString()
    })
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    try {
      await connection(await connectWhenReady(socket, exited), key.privateKey)
    } catch (error) {
      child.kill("SIGTERM")
      await exited
      throw new Error(`${String((error as Error)?.message ?? error)}\n${log}`)
    }
    // --linger 0: the daemon ends with its only connection
    const code = await exited
    clearTimeout(timer)
    if (code !== 0) throw new Error(`serve --socket exited with ${code}\n${log}`)
    const size = Fs.statSync(`${bundle}.cache`).size
    process.stderr.write(
      `sandbox-ssh build: code cache for the server daemon written (${Math.round(size / 1024)} KiB)\n`
    )
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
    `sandbox-ssh build: no code cache for the server daemon (it starts slower): ${String(error?.message ?? error)}\n`
  )
  Fs.rmSync(`${bundle}.cache`, { force: true })
})
