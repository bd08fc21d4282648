/**
 * Command strings: how a spawn becomes the string handlers match, and shell-like word splitting.
 *
 * @internal
 */
import type * as MemorySandbox from "../../MemorySandbox.js"
import type * as Sandbox from "../../Sandbox.js"

/** Characters that make a command more than a simple command when unquoted. */
const META = new Set(["|", "&", ";", "<", ">", "(", ")", "$", "`", "*", "?", "[", "]", "{", "}", "~", "#", "\n"])

const ASSIGNMENT = /^\s*[A-Za-z_][A-Za-z0-9_]*=/

/** @internal */
export interface Words {
  readonly words: ReadonlyArray<string>
  /** No unquoted shell syntax: the words are the whole meaning of the command. */
  readonly simple: boolean
}

/**
 * Splits a command string as a shell splits a simple command: blanks separate words, single
 * quotes are literal, double quotes honour `\` before `"`, `\`, `$` and `` ` ``, a bare `\` quotes
 * the next character. Nothing is expanded.
 *
 * @internal
 */
export const splitWords = (line: string): Words => {
  const words: Array<string> = []
  let word = ""
  let inWord = false
  let simple = true
  let i = 0
  while (i < line.length) {
    const c = line[i]!
    if (c === "'") {
      const end = line.indexOf("'", i + 1)
      if (end < 0) simple = false
      word += line.slice(i + 1, end < 0 ? line.length : end)
      inWord = true
      i = end < 0 ? line.length : end + 1
    } else if (c === "\"") {
      inWord = true
      i++
      while (i < line.length && line[i] !== "\"") {
        const next = line[i + 1]
        if (line[i] === "\\" && next !== undefined && "\"\\$`\n".includes(next)) {
          word += next
          i += 2
        } else {
          if (line[i] === "$" || line[i] === "`") simple = false
          word += line[i]
          i++
        }
      }
      if (i >= line.length) simple = false
      i++
    } else if (c === "\\") {
      if (i + 1 < line.length) word += line[i + 1]
      inWord = true
      i += 2
    } else if (c === " " || c === "\t") {
      if (inWord) words.push(word)
      word = ""
      inWord = false
      i++
    } else {
      if (META.has(c)) simple = false
      word += c
      inWord = true
      i++
    }
  }
  if (inWord) words.push(word)
  // `NAME=value cmd` assigns a variable first.
  if (ASSIGNMENT.test(line)) simple = false
  return { words, simple }
}

/** @internal */
export interface CommandLine {
  /** The string handlers are matched against. */
  readonly line: string
  readonly program: string
  readonly args: ReadonlyArray<string>
  readonly simple: boolean
}

const basename = (path: string): string => path.slice(path.lastIndexOf("/") + 1)

/**
 * `[shell, "-c", s]` is the command string `s`; anything else is its argv joined by spaces.
 *
 * @internal
 */
export const commandLine = (shell: string, options: Sandbox.SpawnOptions): CommandLine => {
  const args = options.args ?? []
  const isShell = options.command === shell || options.command === basename(shell)
  if (isShell && args.length >= 2 && args[0] === "-c") {
    const line = args[1]!
    const { simple, words } = splitWords(line)
    return { line, program: words[0] ?? "", args: words.slice(1), simple }
  }
  return { line: [options.command, ...args].join(" "), program: options.command, args, simple: true }
}

/** @internal */
export interface CompiledHandler {
  readonly matches: (line: string) => boolean
  readonly run: MemorySandbox.HandlerResult | MemorySandbox.HandlerFn
}

const compileMatcher = (match: MemorySandbox.CommandMatcher): (line: string) => boolean => {
  if (typeof match === "string") return (line) => line === match
  if (typeof match === "function") return match
  return (line) => {
    // A global or sticky RegExp keeps state between `test` calls.
    match.lastIndex = 0
    return match.test(line)
  }
}

/** @internal */
export const compileHandlers = (handlers: MemorySandbox.Handlers | undefined): ReadonlyArray<CompiledHandler> => {
  if (handlers === undefined) return []
  if (Array.isArray(handlers)) {
    return (handlers as ReadonlyArray<MemorySandbox.Handler>).map((h) => ({
      matches: compileMatcher(h.match),
      run: h.run
    }))
  }
  return Object.entries(handlers as Readonly<Record<string, MemorySandbox.HandlerResult | MemorySandbox.HandlerFn>>)
    .map(([line, run]) => ({ matches: compileMatcher(line), run }))
}
