/**
 * The file agent: one long-lived POSIX shell exec'd in the container (`<shell> -c <script>`) that
 * answers metadata requests (stat, readdir, mkdir, rename, symlinks, setstat, ...) with the
 * container's own tools. It needs only a POSIX `sh` and the usual utilities — BusyBox ≥ 1.33 or
 * GNU coreutils (`stat -c`, `readlink -f`, `ln -T`, `mv -T`, `truncate`, `touch -d @N`) — so it
 * works in an image that has nothing but BusyBox. Requests are pipelined on one connection;
 * each costs a fork or two inside the container, not an exec through the Engine (~40 ms).
 *
 * Protocol. A request is one line: an operation and its arguments separated by spaces, every byte
 * outside `[A-Za-z0-9/._-]` written as a `printf %b` octal escape (`\0ooo`), so a path can hold
 * spaces, newlines or any byte but NUL. A response is a list of NUL-terminated fields ended by an
 * empty field: `0` and the results, or `E` and the error message of the tool that failed (mapped
 * to a reason by its strerror text, the one place where messages are interpreted).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { SandboxError, type SandboxErrorReason } from "../../SshError.js"
import * as Exec from "./exec.js"

/** `%f %s %u %g %X %Y %h`: raw mode (hex), size, uid, gid, atime, mtime, links. */
export const STAT_FORMAT = "%f %s %u %g %X %Y %h"

const script = String.raw`
umask 022
cd / || exit 1
F='${STAT_FORMAT}'
d() { case $1 in *\\*) v=$(printf '%bx' "$1"); v=${"${v%x}"};; *) v=$1;; esac; }
ok() { printf '0\0'; for f; do printf '%s\0' "$f"; done; printf '\0'; }
er() { printf 'E\0%s\0\0' "${"${1:-failed}"}"; }
gone() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
while IFS= read -r l; do
  set -f; set -- $l; set +f
  c=$1; shift
  case $c in
  st) d "$1"; o=$(stat -L -c "$F" -- "$v" 2>&1) && ok "$o" || er "$o";;
  ls) d "$1"; o=$(stat -c "$F" -- "$v" 2>&1) && ok "$o" || er "$o";;
  rd) d "$1"; p=$v
    if gone "$p"; then er "No such file or directory"
    elif [ ! -d "$p" ]; then er "Not a directory"
    elif [ ! -r "$p" ] || [ ! -x "$p" ]; then er "Permission denied"
    else
      case $p in */) b=$p;; *) b=$p/;; esac
      set -- "$b"* "$b".[!.]* "$b"..?*
      for f; do shift; if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; fi; done
      printf '0\0%s\0' "$#"
      for f; do printf '%s\0' "${"${f##*/}"}"; done
      printf s; [ $# -eq 0 ] || stat -c "$F %n" -- "$@" 2>/dev/null; printf '\0\0'
    fi;;
  mk) d "$1"; o=$(mkdir -m "$2" -- "$v" 2>&1) && ok || er "$o";;
  rmd) d "$1"; o=$(rmdir -- "$v" 2>&1) && ok || er "$o";;
  rm) d "$1"
    if [ -d "$v" ] && [ ! -L "$v" ]; then er "Is a directory"; else o=$(rm -- "$v" 2>&1) && ok || er "$o"; fi;;
  mv) d "$1"; a=$v; d "$2"; b=$v
    if gone "$a"; then er "No such file or directory"
    elif [ -f "$a" ] && [ ! -L "$a" ] && o=$(ln -T -- "$a" "$b" 2>&1); then o=$(rm -- "$a" 2>&1) && ok || er "$o"
    elif [ -e "$b" ] || [ -L "$b" ]; then er "File exists"
    else o=$(mv -f -T -- "$a" "$b" 2>&1) && ok || er "$o"; fi;;
  mvo) d "$1"; a=$v; d "$2"; o=$(mv -f -T -- "$a" "$v" 2>&1) && ok || er "$o";;
  rl) d "$1"
    if [ -L "$v" ]; then o=$(readlink -- "$v" 2>&1; echo x); ok "${"${o%?x}"}"
    elif [ -e "$v" ]; then er "Invalid argument"; else er "No such file or directory"; fi;;
  rp) d "$1"; o=$(readlink -f -- "$v" 2>/dev/null) && [ -n "$o" ] && ok "$o" || er "No such file or directory";;
  sl) d "$1"; a=$v; d "$2"
    if gone "$v"; then o=$(ln -s -T -- "$a" "$v" 2>&1) && ok || er "$o"; else er "File exists"; fi;;
  hl) d "$1"; a=$v; d "$2"
    if gone "$v"; then o=$(ln -T -- "$a" "$v" 2>&1) && ok || er "$o"; else er "File exists"; fi;;
  ss) d "$1"; p=$v
    if gone "$p"; then er "No such file or directory"; continue; fi
    o=
    if [ "$2" != - ]; then o=$(truncate -s "$2" -- "$p" 2>&1) || { er "$o"; continue; }; fi
    if [ "$3" != - ] && [ "$4" != - ]; then o=$(chown "$3:$4" -- "$p" 2>&1) || { er "$o"; continue; }
    elif [ "$3" != - ]; then o=$(chown "$3" -- "$p" 2>&1) || { er "$o"; continue; }
    elif [ "$4" != - ]; then o=$(chgrp "$4" -- "$p" 2>&1) || { er "$o"; continue; }; fi
    if [ "$5" != - ]; then o=$(chmod "$5" -- "$p" 2>&1) || { er "$o"; continue; }; fi
    if [ "$6" != - ]; then o=$(touch -c -a -d "@$6" -- "$p" 2>&1) || { er "$o"; continue; }; fi
    if [ "$7" != - ]; then o=$(touch -c -m -d "@$7" -- "$p" 2>&1) || { er "$o"; continue; }; fi
    ok;;
  sv) d "$1"; o=$(stat -f -c '%s %S %b %f %a %c %d %l' -- "$v" 2>&1) && ok "$o" || er "$o";;
  sy) d "$1"; sync -- "$v" 2>/dev/null || sync; ok;;
  op) d "$1"; p=$v; fl=$2
    case $fl in *c*)
      case $fl in
      *x*) o=$( (umask "$3"; set -C; : > "$p") 2>&1) || { er "$o"; continue; };;
      *) if gone "$p"; then o=$( (umask "$3"; : >> "$p") 2>&1) || { er "$o"; continue; }; fi;;
      esac;;
    esac
    if [ ! -e "$p" ]; then er "No such file or directory"; continue; fi
    case $fl in *w*|*a*)
      if [ -d "$p" ]; then er "Is a directory"; continue; fi
      [ -w "$p" ] || { er "Permission denied"; continue; };;
    esac
    case $fl in *r*) [ -r "$p" ] || { er "Permission denied"; continue; };; esac
    case $fl in *t*) o=$( (: > "$p") 2>&1) || { er "$o"; continue; };; esac
    o=$(stat -L -c "$F" -- "$p" 2>&1) && ok "$o" || er "$o";;
  ping) ok pong;;
  *) er "Invalid argument: unknown request $c";;
  esac
done
`

const SAFE = /^[A-Za-z0-9/._-]$/

/**
 * An argument as the agent reads it: safe bytes as they are, the rest as `\0ooo`.
 *
 * @internal
 */
export const encodeArgument = (value: string): string => {
  const bytes = Buffer.from(value, "utf8")
  let out = ""
  for (const byte of bytes) {
    const char = String.fromCharCode(byte)
    out += byte < 0x80 && SAFE.test(char) ? char : `\\0${byte.toString(8).padStart(3, "0")}`
  }
  return out === "" ? "\\0000" : out
}

/**
 * The reason for a tool's error message (BusyBox, GNU coreutils, dash and ash wordings; strerror
 * texts of glibc and musl).
 *
 * @internal
 */
export const reasonFromMessage = (message: string): SandboxErrorReason => {
  const text = message.toLowerCase()
  if (/no such file|nonexistent|not found/.test(text)) return "NotFound"
  if (/not empty/.test(text)) return "NotEmpty"
  if (/not a directory/.test(text)) return "NotADirectory"
  if (/is a directory|overwrite directory|cannot overwrite/.test(text)) return "IsADirectory"
  if (/file exists|already exists/.test(text)) return "AlreadyExists"
  if (/permission denied|operation not permitted|read-only file system/.test(text)) return "PermissionDenied"
  if (/not supported|not implemented|applet not found|unknown option|unrecognized option/.test(text)) {
    return "Unsupported"
  }
  if (/invalid|too many levels|name too long|cross-device|too many links/.test(text)) return "InvalidArgument"
  return "TransportFailed"
}

/** @internal */
export const toolError = (operation: string, path: string | undefined, message: string): SandboxError =>
  new SandboxError({ reason: reasonFromMessage(message), operation, path, detail: message.trim() })

interface Waiter {
  readonly resume: (result: Exit.Exit<Array<Buffer>, SandboxError>) => void
}

/** One running agent with a FIFO of the requests it is answering. */
class Connection {
  private buffer: Buffer = Buffer.alloc(0)
  private fields: Array<Buffer> = []
  private readonly waiters: Array<Waiter> = []
  dead: SandboxError | undefined = undefined

  constructor(readonly started: Exec.Started, readonly scope: Scope.CloseableScope) {
    started.stdout.on("data", (chunk: Buffer) => this.onData(chunk))
    // never read, never allowed to fill up (a full stderr would stall stdout behind it)
    started.stderr.resume()
    started.stdout.once("end", () => this.fail("the file agent's output ended"))
    started.socket.once("close", () => this.fail("the file agent's connection closed"))
  }

  get pending(): number {
    return this.waiters.length
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    let start = 0
    let nul: number
    while ((nul = this.buffer.indexOf(0, start)) >= 0) {
      const field = this.buffer.subarray(start, nul)
      start = nul + 1
      if (field.length === 0) {
        const fields = this.fields
        this.fields = []
        this.waiters.shift()?.resume(Exit.succeed(fields))
      } else {
        // copy: the buffer is reused for the next chunks
        this.fields.push(Buffer.from(field))
      }
    }
    this.buffer = start === 0 ? this.buffer : this.buffer.subarray(start)
  }

  private fail(detail: string): void {
    if (this.dead !== undefined) return
    this.dead = new SandboxError({ reason: "TransportFailed", operation: "file agent", detail })
    for (const waiter of this.waiters.splice(0)) waiter.resume(Exit.fail(this.dead))
  }

  send(line: string): Effect.Effect<Array<Buffer>, SandboxError> {
    return Effect.async<Array<Buffer>, SandboxError>((resume) => {
      if (this.dead !== undefined) return resume(Effect.fail(this.dead))
      const waiter: Waiter = { resume: (exit) => resume(exit) }
      this.waiters.push(waiter)
      this.started.socket.write(line + "\n")
      // an interrupted request keeps its place in the FIFO: its answer is read and dropped
      return Effect.sync(() => {
        const index = this.waiters.indexOf(waiter)
        if (index >= 0) this.waiters[index] = { resume: () => {} }
      })
    })
  }
}

/** @internal */
export interface Agent {
  /** Sends one request and returns the result fields (without the status), or the tool's error. */
  readonly call: (
    operation: string,
    path: string | undefined,
    op: string,
    args: ReadonlyArray<string>
  ) => Effect.Effect<Array<Buffer>, SandboxError>
}

/**
 * Agents started on demand (up to `size`, each serving pipelined requests), ended with `scope`.
 *
 * @internal
 */
export const make = (
  target: Exec.Target,
  options: { readonly shell: string; readonly user?: string | undefined; readonly size: number },
  scope: Scope.Scope
): Effect.Effect<Agent> =>
  Effect.gen(function*() {
    const connections: Array<Connection> = []
    const starting = yield* Effect.makeSemaphore(1)

    const startOne = Effect.gen(function*() {
      const child = yield* Scope.fork(scope, ExecutionStrategy.sequential)
      const started = yield* Exec.start(target, {
        argv: [options.shell, "-c", script, "sandbox-ssh-agent"],
        env: ["LC_ALL=C"],
        user: options.user,
        cwd: "/",
        command: options.shell
      }).pipe(Scope.extend(child), Effect.onError((cause) => Scope.close(child, Exit.failCause(cause))))
      if (started._tag === "NotStarted") {
        yield* Scope.close(child, Exit.void)
        return yield* Effect.fail(
          new SandboxError({
            reason: "Unsupported",
            operation: "file agent",
            detail: `file operations need a POSIX shell in the container (${options.shell}): ${started.message.trim()}`
          })
        )
      }
      const connection = new Connection(started, child)
      connections.push(connection)
      return connection
    })

    const pick = starting.withPermits(1)(Effect.gen(function*() {
      for (let i = connections.length - 1; i >= 0; i--) {
        if (connections[i]!.dead !== undefined) {
          const [dead] = connections.splice(i, 1)
          yield* Scope.close(dead!.scope, Exit.void)
        }
      }
      const idle = connections.find((c) => c.pending === 0)
      if (idle !== undefined) return idle
      if (connections.length < options.size) return yield* startOne
      return connections.reduce((best, c) => (c.pending < best.pending ? c : best))
    }))

    const call: Agent["call"] = (operation, path, op, args) =>
      Effect.flatMap(pick, (connection) =>
        Effect.flatMap(
          connection.send([op, ...args.map(encodeArgument)].join(" ")),
          (fields) => {
            const status = fields[0]?.toString("utf8")
            if (status === "0") return Effect.succeed(fields.slice(1))
            if (status === "E") return Effect.fail(toolError(operation, path, fields[1]?.toString("utf8") ?? "failed"))
            return Effect.fail(
              new SandboxError({
                reason: "TransportFailed",
                operation,
                path,
                detail: `the file agent answered something unexpected: ${JSON.stringify(status)}`
              })
            )
          }
        ))

    return { call }
  })
