/**
 * Authentication at a real endpoint (TCP listener): only public keys listed in a valid
 * authorized_keys line, with their `from=` honoured, get in; every refusal is answered after the
 * rejection delay and a connection gets at most `maxAuthTries` refusals; host key files with loose
 * permissions or behind a symbolic link are refused as documented (KeyError "BadPermissions").
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as Path from "node:path"
import ssh2 from "ssh2"
import * as SandboxSsh from "../../src/SandboxSsh.js"
import { run } from "../support/openssh.js"
import {
  type ClientKey,
  type Endpoint,
  generateKey,
  makeEndpoint,
  report,
  throwawayClientOptions,
  timeout
} from "./support.js"

type Attempt =
  | { readonly type: "none" }
  | { readonly type: "password"; readonly password: string }
  | { readonly type: "keyboard-interactive" }
  | { readonly type: "publickey"; readonly key: ClientKey }

interface Outcome {
  /** Whether the connection authenticated. */
  readonly authenticated: boolean
  /** The methods the server offered after each refusal. */
  readonly offered: Array<ReadonlyArray<string>>
  /** Milliseconds from each attempt to its answer. */
  readonly answerMs: Array<number>
  /** Attempts the server answered before it closed the connection (or we ran out). */
  readonly answered: number
  /** Whether a keyboard-interactive prompt was ever shown. */
  readonly prompted: boolean
}

/** Tries `attempts` in order on one connection. */
const tryAuth = (endpoint: Endpoint, attempts: ReadonlyArray<Attempt>, username = "root") =>
  Effect.async<Outcome>((resume) => {
    const offered: Array<ReadonlyArray<string>> = []
    const answerMs: Array<number> = []
    let prompted = false
    let sentAt = 0
    let next = 0
    let done = false
    const client = new ssh2.Client()
    const finish = (authenticated: boolean) => {
      if (done) return
      done = true
      client.end()
      resume(Effect.succeed({ authenticated, offered, answerMs, answered: answerMs.length, prompted }))
    }
    client.on("ready", () => {
      answerMs.push(Date.now() - sentAt)
      finish(true)
    })
    client.on("error", () => {})
    client.on("close", () => finish(false))
    client.connect({
      host: "127.0.0.1",
      port: endpoint.listener.port,
      username,
      readyTimeout: 30_000,
      tryKeyboard: true,
      authHandler: (methodsLeft, _partial, callback) => {
        if (sentAt > 0) {
          answerMs.push(Date.now() - sentAt)
          offered.push(methodsLeft ?? [])
        }
        const attempt = attempts[next++]
        sentAt = Date.now()
        if (attempt === undefined) {
          finish(false)
          return callback(false as never)
        }
        switch (attempt.type) {
          case "none":
            return callback({ type: "none", username })
          case "password":
            return callback({ type: "password", username, password: attempt.password })
          case "keyboard-interactive":
            return callback({
              type: "keyboard-interactive",
              username,
              prompt: (_name, _instructions, _lang, _prompts, answer) => {
                prompted = true
                answer(["secret"])
              }
            })
          case "publickey":
            return callback({ type: "publickey", username, key: attempt.key.privateKey })
        }
      }
    })
  })

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0

describe("authentication", () => {
  it.scopedLive("none, password and keyboard-interactive are refused; only publickey is offered", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint()
      const outcome = yield* tryAuth(endpoint, [
        { type: "none" },
        { type: "password", password: "root" },
        { type: "keyboard-interactive" }
      ])
      assert.isFalse(outcome.authenticated)
      assert.isFalse(outcome.prompted)
      for (const methods of outcome.offered) assert.deepStrictEqual([...methods], ["publickey"])
      // and the right key still works afterwards on a fresh connection
      const good = yield* tryAuth(endpoint, [{ type: "publickey", key: endpoint.key }])
      assert.isTrue(good.authenticated)
    }))

  it.scopedLive(
    "a wrong key, and keys from invalid or unsupported authorized_keys lines, are refused",
    () =>
      Effect.gen(function*() {
        const keys = Array.from({ length: 6 }, () => generateKey())
        const blob = (key: ClientKey) => key.publicKey.split(" ")[1]!
        const endpoint = yield* makeEndpoint({
          authorizedKeys: (good) =>
            [
              "# one good key, and lines that must not let anyone in",
              good.publicKey,
              `bogus-option ${keys[0]!.publicKey}`,
              `command="unterminated ${keys[1]!.publicKey}`,
              `ssh-ed25519 ${blob(keys[2]!).slice(0, 30)}`,
              `ssh-rsa ${blob(keys[3]!)}`,
              `tunnel="1" ${keys[4]!.publicKey}`,
              ""
            ].join("\n")
        })
        const problems = endpoint.server.authorizedKeys.problems.length
        const refusals: Array<boolean> = []
        for (const key of [...keys.slice(0, 5), keys[5]!]) {
          refusals.push(!(yield* tryAuth(endpoint, [{ type: "publickey", key }])).authenticated)
        }
        const good = yield* tryAuth(endpoint, [{ type: "publickey", key: endpoint.key }])
        yield* report({ suite: "auth", name: "bad-lines", problems, refusals })
        assert.deepStrictEqual(refusals, [true, true, true, true, true, true])
        assert.isAtLeast(problems, 3)
        assert.isTrue(good.authenticated)
      }),
    timeout(30_000)
  )

  it.scopedLive("from= is honoured: a key outside its pattern list is refused", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [string, boolean]> = [
        ["from=\"10.0.0.0/8\"", false],
        ["from=\"192.168.*\"", false],
        ["from=\"!127.0.0.1,*\"", false],
        ["from=\"127.0.0.1\"", true],
        ["from=\"127.0.0.0/8\"", true],
        ["from=\"10.1.2.3,127.0.0.*\"", true]
      ]
      const results: Record<string, boolean> = {}
      for (const [option, allowed] of cases) {
        const endpoint = yield* makeEndpoint({ authorizedKeys: (key) => `${option} ${key.publicKey}\n` })
        const outcome = yield* tryAuth(endpoint, [{ type: "publickey", key: endpoint.key }])
        results[option] = outcome.authenticated
        assert.strictEqual(outcome.authenticated, allowed, option)
      }
      yield* report({ suite: "auth", name: "from", results })
    }), timeout(30_000))

  it.scopedLive(
    "refusals are delayed, not `none`; a connection gets at most 6; a flood of them leaves the server serving",
    () =>
      Effect.gen(function*() {
        const endpoint = yield* makeEndpoint()
        const wrong = Array.from({ length: 10 }, () => ({ type: "publickey", key: generateKey() }) as const)
        const outcome = yield* tryAuth(endpoint, [{ type: "none" }, ...wrong])
        // the answer to `none`, then one per refused key until the server closes the connection
        const noneMs = outcome.answerMs[0]!
        const keyMs = outcome.answerMs.slice(1)
        // a real OpenSSH client with a key that is not authorized
        const identity = Path.join(endpoint.dir, "wrong_key")
        fs.writeFileSync(identity, generateKey().privateKey, { mode: 0o600 })
        const started = Date.now()
        const ssh = yield* run("ssh", [
          ...throwawayClientOptions(identity),
          "-p",
          String(endpoint.listener.port),
          "root@127.0.0.1",
          "true"
        ])
        const opensshMs = Date.now() - started
        // 20 connections at once, 10 wrong keys each
        const flood = yield* Effect.all(
          Array.from({ length: 20 }, () => tryAuth(endpoint, wrong)),
          { concurrency: "unbounded" }
        )
        const good = yield* tryAuth(endpoint, [{ type: "publickey", key: endpoint.key }])
        yield* report({
          suite: "auth",
          name: "rejection-delay",
          noneMs,
          keyMs,
          medianRejectionMs: median(keyMs),
          opensshWrongKeyMs: opensshMs,
          floodAnswered: flood.map((o) => o.answered)
        })
        assert.include(ssh.stderr, "Permission denied")
        assert.isBelow(noneMs, 90)
        assert.strictEqual(keyMs.length, 6)
        for (const ms of keyMs) assert.isAtLeast(ms, 95)
        for (const o of flood) assert.isAtMost(o.answered, 6)
        assert.isTrue(good.authenticated)
      }),
    timeout(60_000)
  )
})

describe("key files", () => {
  const prepare = (endpoint: Endpoint, hostKeyPath: string) =>
    Effect.flip(
      SandboxSsh.make(endpoint.sandbox).prepareServer({
        hostKeyPath,
        authorizedKeysPath: endpoint.authorizedKeysPath
      })
    )

  it.scopedLive("a host key readable by group or others, or reached through a symlink, is refused", () =>
    Effect.gen(function*() {
      const endpoint = yield* makeEndpoint()
      const before = fs.readFileSync(endpoint.hostKeyPath, "utf8")
      const results: Record<string, string> = {}
      for (const mode of [0o644, 0o640, 0o604]) {
        fs.chmodSync(endpoint.hostKeyPath, mode)
        const error = yield* prepare(endpoint, endpoint.hostKeyPath)
        results[mode.toString(8)] = `${error._tag}:${"reason" in error ? error.reason : ""}`
        assert.strictEqual(error._tag, "KeyError")
        assert.strictEqual((error as { reason?: string }).reason, "BadPermissions")
        assert.include(error.message, "chmod 600")
      }
      fs.chmodSync(endpoint.hostKeyPath, 0o600)
      const link = Path.join(endpoint.dir, "host_key_link")
      fs.symlinkSync(endpoint.hostKeyPath, link)
      const linked = yield* prepare(endpoint, link)
      results.symlink = `${linked._tag}:${"reason" in linked ? linked.reason : ""}`
      assert.strictEqual(linked._tag, "KeyError")
      assert.strictEqual((linked as { reason?: string }).reason, "BadPermissions")
      assert.include(linked.message, "symbolic link")
      // a dangling symlink is not replaced by a new key either
      const dangling = Path.join(endpoint.dir, "dangling")
      fs.symlinkSync(Path.join(endpoint.dir, "nowhere"), dangling)
      const danglingError = yield* prepare(endpoint, dangling)
      results.dangling = `${danglingError._tag}:${"reason" in danglingError ? danglingError.reason : ""}`
      assert.strictEqual(danglingError._tag, "KeyError")
      assert.isFalse(fs.existsSync(Path.join(endpoint.dir, "nowhere")))
      // nothing was rewritten
      assert.strictEqual(fs.readFileSync(endpoint.hostKeyPath, "utf8"), before)
      yield* report({ suite: "auth", name: "host-key-files", results })
    }))
})
