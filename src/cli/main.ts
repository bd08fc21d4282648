/**
 * The `sandbox-ssh` command line: serve a sandbox to OpenSSH's tools, run commands in it, manage
 * authorized keys and print the `~/.ssh/config` block.
 *
 * Logs go to stderr: with `serve --stdio`, stdout carries nothing but SSH bytes.
 *
 * @internal
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as Path from "node:path"
import { checkTerminal } from "../internal/client/attach.js"
import { shellQuote } from "../internal/client/commandExecutor.js"
import { DEFAULT_DETACH_KEYS, parseDetachKeys } from "../internal/client/detachKeys.js"
import { defaultAuthorizedKeysPath, defaultHostKeyPath, homeDirectory } from "../internal/home.js"
import * as ReadableStream from "../internal/readableStream.js"
import * as SandboxSsh from "../SandboxSsh.js"
import { InvalidOptionError, KeyError } from "../SshError.js"
import * as SshKeys from "../SshKeys.js"
import { runCli, StderrLogger, withLogging } from "./runtime.js"
import { sandboxOptions } from "./sandboxOptions.js"
import { openSandbox, sandboxRoot, type SandboxSelection } from "./sandboxSelection.js"
import { serve } from "./serve.js"

const verbose = Options.boolean("verbose").pipe(Options.withAlias("v"), Options.withDescription("debug logs on stderr"))

// serve ------------------------------------------------------------------------------------------

const serveCommand = Command.make(
  "serve",
  {
    ...sandboxOptions,
    verbose,
    stdio: Options.boolean("stdio").pipe(
      Options.withDescription(
        "relay one SSH connection over stdin/stdout (for an OpenSSH ProxyCommand) to the sandbox's server " +
          "daemon (see --socket), started when none runs; its socket and log are in $SANDBOX_SSH_HOME/run"
      )
    ),
    socket: Options.text("socket").pipe(
      Options.optional,
      Options.withDescription(
        "serve every connection to this Unix socket (0600, in a 0700 directory) from one sandbox: the daemon " +
          "that --stdio starts, so background processes of one connection are there for the next"
      )
    ),
    linger: Options.text("linger").pipe(
      Options.optional,
      Options.withDescription(
        "with --stdio or --socket: how long the daemon and its sandbox outlive the last connection " +
          "(e.g. 30s, 5m, 1h, infinity; 0 ends them with it; default 5m)"
      )
    ),
    host: Options.text("host").pipe(
      Options.withDefault("127.0.0.1"),
      Options.withDescription("TCP address to listen on")
    ),
    port: Options.integer("port").pipe(Options.withDefault(2222), Options.withDescription("TCP port to listen on")),
    hostKey: Options.file("host-key").pipe(Options.optional, Options.withDescription("host private key path")),
    authorizedKeys: Options.file("authorized-keys").pipe(Options.optional),
    user: Options.text("user").pipe(Options.optional, Options.withDescription("user inside the sandbox (default root)"))
  },
  // `--stdio` and `--socket` are declared here for `serve --help` and validation, and served by
  // their own entries: bin/sandbox-ssh.js hands `--stdio` to the relay (bin/relay.cjs) and
  // `--socket` to the daemon bundle (daemonMain.ts), so only the TCP listener runs here.
  (options) =>
    options.stdio || Option.isSome(options.socket)
      ? Effect.fail(
        new InvalidOptionError({
          option: options.stdio ? "--stdio" : "--socket",
          detail: "served by bin/sandbox-ssh.js (the ProxyCommand relay and the server daemon), not by this bundle"
        })
      )
      : Effect.flatMap(SshKeys.SshKeys, (keys) =>
        serve({
          ...options,
          hostKey: Option.getOrUndefined(options.hostKey),
          authorizedKeys: Option.getOrUndefined(options.authorizedKeys),
          user: Option.getOrUndefined(options.user)
        }, keys)).pipe(withLogging(options.verbose))
).pipe(
  Command.withDescription(
    "serve the sandbox to OpenSSH clients (ssh, sftp, scp, rsync): through a ProxyCommand (--stdio), " +
      "a Unix socket (--socket) or TCP (--port)"
  )
)

// exec -------------------------------------------------------------------------------------------

const exec = Command.make(
  "exec",
  {
    ...sandboxOptions,
    verbose,
    tty: Options.boolean("tty").pipe(Options.withAlias("t"), Options.withDescription("allocate a terminal")),
    user: Options.text("user").pipe(Options.optional),
    command: Args.text({ name: "command" }).pipe(Args.repeated)
  },
  (options) =>
    Effect.gen(function*() {
      if (options.command.length === 0) {
        return yield* new InvalidOptionError({ option: "command", detail: "give a command after --" })
      }
      // One argument is a shell command line (as ssh takes it); several are an argv, quoted here.
      const line = options.command.length === 1 ? options.command[0]! : options.command.map(shellQuote).join(" ")
      const sandbox = yield* openSandbox(options)
      const client = yield* SandboxSsh.make(sandbox).openClient({ user: Option.getOrUndefined(options.user) })
      const size = process.stdout.isTTY ? { cols: process.stdout.columns, rows: process.stdout.rows } : undefined
      const proc = yield* client.spawn(line, { tty: options.tty, ...(size === undefined ? {} : { size }) })
      const stdin = process.stdin.isTTY && !options.tty
        ? Stream.run(Stream.empty, proc.stdin)
        : Stream.run(ReadableStream.fromReadable(() => process.stdin, (e) => e, { closeOnDone: false }), proc.stdin)
      // With a terminal on both ends, keystrokes go to the remote one as they are typed (as ssh -t).
      if (options.tty && process.stdin.isTTY) {
        yield* Effect.acquireRelease(
          Effect.sync(() => process.stdin.setRawMode(true)),
          () => Effect.sync(() => process.stdin.setRawMode(false))
        )
      }
      // Reading stdin keeps the program alive: stop when the command is done. Node settles the
      // flowing state a tick after the stream's last "readable" listener goes; pause after that.
      yield* Effect.addFinalizer(() =>
        Effect.async<void>((resume) => {
          process.nextTick(() => {
            process.stdin.pause()
            resume(Effect.void)
          })
        })
      )
      yield* Effect.forkScoped(Effect.ignore(stdin))
      const [, , exit] = yield* Effect.all([
        Stream.run(proc.stdout, NodeSink.fromWritable(() => process.stdout, (e) => e, { endOnDone: false })),
        Stream.run(proc.stderr, NodeSink.fromWritable(() => process.stderr, (e) => e, { endOnDone: false })),
        proc.exit
      ], { concurrency: "unbounded" })
      if (exit._tag === "Signaled") yield* Console.error(`sandbox-ssh: command killed by SIG${exit.signal}`)
      process.exitCode = exit.code
    }).pipe(Effect.scoped, withLogging(options.verbose))
).pipe(Command.withDescription("run a command in the sandbox; exits with its status"))

// attach -----------------------------------------------------------------------------------------

const attach = Command.make(
  "attach",
  {
    ...sandboxOptions,
    verbose,
    detachKeys: Options.text("detach-keys").pipe(
      Options.optional,
      Options.withDescription(
        `detach sequence, Docker syntax (e.g. ctrl-p,ctrl-q; default ${DEFAULT_DETACH_KEYS}); detaching ends ` +
          "this command, and with it the sandbox's processes"
      )
    ),
    term: Options.text("term").pipe(Options.optional, Options.withDescription("terminal type (default $TERM)")),
    user: Options.text("user").pipe(Options.optional)
  },
  (options) =>
    Effect.gen(function*() {
      // Refuse bad input before a sandbox starts.
      const detachKeys = Option.getOrElse(options.detachKeys, () => DEFAULT_DETACH_KEYS)
      yield* parseDetachKeys(detachKeys, "--detach-keys")
      yield* checkTerminal(process.stdin, process.stdout)
      const sandbox = yield* openSandbox(options)
      const client = yield* SandboxSsh.make(sandbox).openClient({
        user: Option.getOrUndefined(options.user),
        term: Option.getOrUndefined(options.term)
      })
      const result = yield* client.attachResult({ detachKeys })
      if (result._tag === "Detached") {
        // No daemon holds the sandbox: it ends with this process (the library's attach keeps the
        // shell running for as long as its client is open).
        yield* Console.error(`\r\nsandbox-ssh: detached (${detachKeys}); the sandbox's processes end with this command`)
        return
      }
      if (result.signal !== undefined) yield* Console.error(`sandbox-ssh: shell killed by SIG${result.signal}`)
      process.exitCode = result.code
    }).pipe(Effect.scoped, withLogging(options.verbose))
).pipe(Command.withDescription("attach this terminal to a login shell in the sandbox; exits with its status"))

// authorize --------------------------------------------------------------------------------------

const authorize = Command.make(
  "authorize",
  {
    key: Options.text("key").pipe(Options.optional, Options.withDescription("an authorized_keys line")),
    file: Options.file("file").pipe(Options.optional, Options.withDescription("a public key file")),
    stdin: Options.boolean("stdin").pipe(Options.withDescription("read public keys from stdin")),
    authorizedKeys: Options.file("authorized-keys").pipe(Options.optional)
  },
  (options) =>
    Effect.gen(function*() {
      const keys = yield* SshKeys.SshKeys
      const input = Option.isSome(options.key)
        ? options.key.value
        : Option.isSome(options.file)
        ? fs.readFileSync(options.file.value, "utf8")
        : options.stdin
        ? fs.readFileSync(0, "utf8")
        : yield* new InvalidOptionError({ option: "--key/--file/--stdin", detail: "give a key to authorize" })
      const parsed = keys.parseAuthorizedKeys(input)
      for (const problem of parsed.problems) yield* Console.error(`line ${problem.line}: ${problem.detail}`)
      if (parsed.keys.length === 0) {
        return yield* new KeyError({ reason: "Unparsable", detail: "no public key found in the input" })
      }
      const path = Option.getOrElse(options.authorizedKeys, defaultAuthorizedKeysPath)
      fs.mkdirSync(Path.dirname(path), { recursive: true, mode: 0o700 })
      const existing = fs.existsSync(path) ? keys.parseAuthorizedKeys(fs.readFileSync(path, "utf8")) : undefined
      const lines = input.split(/\r?\n/)
      const added: Array<string> = []
      for (const key of parsed.keys) {
        const duplicate = existing?.keys.some((k) => Buffer.from(k.publicBlob).equals(Buffer.from(key.publicBlob))) ||
          added.includes(key.fingerprint)
        if (duplicate) {
          yield* Console.error(`already authorized: ${key.fingerprint}`)
          continue
        }
        fs.appendFileSync(path, `${lines[key.line - 1]!.trim()}\n`, { mode: 0o600 })
        added.push(key.fingerprint)
        yield* Console.error(`authorized: ${key.fingerprint} ${key.comment}`.trimEnd())
      }
      fs.chmodSync(path, 0o600)
    })
).pipe(Command.withDescription("add public keys to the authorized_keys file (0600, deduplicated)"))

// config-ssh -------------------------------------------------------------------------------------

/** The script this CLI was started as (bin/sandbox-ssh.js, or an npm-installed link to it). */
const binPath = (): string => fs.realpathSync(process.argv[1] ?? "sandbox-ssh")

const configSsh = Command.make(
  "config-ssh",
  {
    ...sandboxOptions,
    alias: Options.text("host-alias").pipe(Options.optional, Options.withDescription("Host name in ~/.ssh/config"))
  },
  (options) =>
    Effect.gen(function*() {
      const keys = yield* SshKeys.SshKeys
      const selection: SandboxSelection = options
      const name = Option.getOrElse(options.name, () => Path.basename(sandboxRoot(selection)))
      const alias = Option.getOrElse(options.alias, () => `sandbox-${name}`)
      const hostKey = yield* keys.loadOrCreateHostKey(defaultHostKeyPath())
      const knownHosts = Path.join(homeDirectory(), "known_hosts")
      const entry = `${alias} ${hostKey.publicKey}\n`
      const current = fs.existsSync(knownHosts) ? fs.readFileSync(knownHosts, "utf8") : ""
      if (!current.split("\n").includes(entry.trim())) fs.appendFileSync(knownHosts, entry, { mode: 0o600 })
      const where = Option.isSome(options.root)
        ? `--root ${shellQuote(Path.resolve(options.root.value))}`
        : `--name ${shellQuote(name)}`
      const proxy = `${shellQuote(process.execPath)} ${shellQuote(binPath())} serve --stdio ${where}${
        options.isolation === "auto" ? "" : ` --isolation ${options.isolation}`
      }`
      yield* Console.log(
        [
          `Host ${alias}`,
          `  User root`,
          `  ProxyCommand ${proxy}`,
          `  HostKeyAlias ${alias}`,
          `  UserKnownHostsFile ${knownHosts}`,
          `  StrictHostKeyChecking yes`,
          ``
        ].join("\n")
      )
    })
).pipe(Command.withDescription("print the ~/.ssh/config block that reaches the sandbox through serve --stdio"))

// stop -------------------------------------------------------------------------------------------

const stop = Command.make(
  "stop",
  {
    ...sandboxOptions,
    hostKey: Options.file("host-key").pipe(Options.optional, Options.withDescription("as given to serve --stdio")),
    authorizedKeys: Options.file("authorized-keys").pipe(Options.optional),
    user: Options.text("user").pipe(Options.optional)
  },
  (options) =>
    Effect.gen(function*() {
      // bin/stop.cjs computes which daemon a selection names, as the relay does, and stops it
      const args = [
        ...Option.match(options.root, { onNone: () => [], onSome: (root) => ["--root", root] }),
        ...Option.match(options.name, { onNone: () => [], onSome: (name) => ["--name", name] }),
        "--isolation",
        options.isolation,
        ...Option.match(options.hostKey, { onNone: () => [], onSome: (path) => ["--host-key", path] }),
        ...Option.match(options.authorizedKeys, { onNone: () => [], onSome: (path) => ["--authorized-keys", path] }),
        ...Option.match(options.user, { onNone: () => [], onSome: (user) => ["--user", user] })
      ]
      const stopScript = Path.join(Path.dirname(binPath()), "stop.cjs")
      const result = spawnSync(process.execPath, [stopScript, "stop", ...args], { stdio: "inherit" })
      if (result.status !== 0) {
        return yield* new InvalidOptionError({
          option: "stop",
          detail: `exited with ${result.status ?? result.signal}`
        })
      }
    })
).pipe(
  Command.withDescription(
    "stop the server daemon that serve --stdio started for a sandbox (its sandbox and processes end)"
  )
)

// ------------------------------------------------------------------------------------------------

const main = Command.make("sandbox-ssh").pipe(
  Command.withDescription("SSH for sandboxes: serve them to OpenSSH tools, or run commands in them"),
  Command.withSubcommands([serveCommand, exec, attach, authorize, configSsh, stop])
)

const cli = Command.run(main, { name: "sandbox-ssh", version: "0.1.0" })

runCli(
  cli(process.argv).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, SshKeys.layer, StderrLogger))),
  { silent: ValidationError.isValidationError, interruptOnHangup: true }
)
