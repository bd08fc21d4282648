/**
 * The private Docker Engine of the DockerSandbox tests. `scripts/test-docker.sh` starts it and
 * passes its socket in `SANDBOX_SSH_DOCKER_SOCKET`; run alone (`npx vitest run test/docker`), the
 * tests start it themselves with `scripts/docker-test-env.sh` (idempotent). When it cannot start,
 * every test fails with the reason: these tests never skip.
 */
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as DockerSandbox from "../../src/DockerSandbox.js"

export const image = process.env.SANDBOX_SSH_DOCKER_IMAGE ?? "sandbox-ssh-test:busybox"

let resolved: string | Error | undefined

const startEngine = (): string => {
  const fromEnv = process.env.SANDBOX_SSH_DOCKER_SOCKET
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv
  const script = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "..", "..", "scripts", "docker-test-env.sh")
  try {
    const out = execFileSync("bash", [script, "start"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
    const lines = out.trim().split("\n")
    return lines[lines.length - 1]!
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? ""
    throw new Error(`the Docker engine for the DockerSandbox tests could not start (${script} start): ${stderr}`)
  }
}

/** The engine's socket; throws (failing the test) when the engine cannot start. */
export const socketPath = (): string => {
  if (resolved === undefined) {
    try {
      resolved = startEngine()
    } catch (error) {
      resolved = error as Error
    }
  }
  if (resolved instanceof Error) throw resolved
  return resolved
}

export const engineSocket = Effect.sync(socketPath)

/** A fresh container from the test image, removed when the scope closes. */
export const makeSandbox = (options: Partial<DockerSandbox.DockerCreateOptions> = {}) =>
  Effect.flatMap(engineSocket, (socketPath) => DockerSandbox.create({ image, socketPath, network: "none", ...options }))

/** The `docker` CLI against the private engine. */
export const docker = (args: ReadonlyArray<string>): string =>
  execFileSync("docker", ["-H", `unix://${socketPath()}`, ...args], { encoding: "utf8" })
