/**
 * Detach key sequences: Docker's syntax (`ctrl-p,ctrl-q`) parsed into bytes, and a streaming
 * matcher over the bytes typed at the terminal. Both are pure; `attach.ts` threads the state.
 *
 * @internal
 */
import * as Either from "effect/Either"
import { InvalidOptionError } from "../../SshError.js"

/** `ctrl-]`, as telnet (Docker's default `ctrl-p,ctrl-q` steals readline's ctrl-p). @internal */
export const DEFAULT_DETACH_KEYS = "ctrl-]"

/** Docker's table (moby/term `ASCII`): the name at index `i` is the control byte `i`. */
const CONTROL_NAMES: ReadonlyArray<string> = [
  "ctrl-@",
  ..."abcdefghijklmnopqrstuvwxyz".split("").map((c) => `ctrl-${c}`),
  "ctrl-[",
  "ctrl-\\",
  "ctrl-]",
  "ctrl-^",
  "ctrl-_"
]

/**
 * Parses a detach sequence with Docker's rules (moby/term `ToBytes`): keys separated by `,`; each
 * key is one ASCII character (`a`, `%`, ` `), a control key `ctrl-@`, `ctrl-a`..`ctrl-z`,
 * `ctrl-[`, `ctrl-\`, `ctrl-]`, `ctrl-^`, `ctrl-_` (lower case, as Docker), or `DEL`. An empty
 * sequence, an empty key (`a,,b`, so `,` itself cannot be a key), `ctrl-`, `ctrl-ab`, a non-ASCII
 * character or any other name is refused.
 *
 * @internal
 */
export const parseDetachKeys = (spec: string, option = "detachKeys"): Either.Either<Uint8Array, InvalidOptionError> => {
  const invalid = (detail: string) => Either.left(new InvalidOptionError({ option, detail }))
  if (spec === "") return invalid("empty: name at least one key, e.g. \"ctrl-]\" or \"ctrl-p,ctrl-q\"")
  const bytes: Array<number> = []
  for (const [index, key] of spec.split(",").entries()) {
    if (key.length === 1 && key.charCodeAt(0) < 0x80) {
      bytes.push(key.charCodeAt(0))
      continue
    }
    const control = CONTROL_NAMES.indexOf(key)
    if (control >= 0) bytes.push(control)
    else if (key === "DEL") bytes.push(0x7f)
    else {
      return invalid(
        `${JSON.stringify(spec)}: key ${index + 1} ${
          key === "" ? "is empty" : `${JSON.stringify(key)} is unknown`
        } (use one ASCII character, ctrl-a..ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or DEL, ` +
          `separated by commas)`
      )
    }
  }
  return Either.right(Uint8Array.from(bytes))
}

/**
 * A compiled detach sequence. `fallback[j]` is the length of the longest proper prefix of
 * `keys[0..j]` that is also a suffix of it (Knuth–Morris–Pratt), so that `ctrl-p,ctrl-p,ctrl-q`
 * still matches after three ctrl-p.
 *
 * @internal
 */
export interface DetachMatcher {
  readonly keys: Uint8Array
  readonly fallback: ReadonlyArray<number>
}

/** @internal */
export const makeMatcher = (keys: Uint8Array): DetachMatcher => {
  const fallback = new Array<number>(keys.length).fill(0)
  let k = 0
  for (let i = 1; i < keys.length; i++) {
    while (k > 0 && keys[i] !== keys[k]) k = fallback[k - 1]!
    if (keys[i] === keys[k]) k++
    fallback[i] = k
  }
  return { keys, fallback }
}

/**
 * The outcome of feeding one chunk of input.
 *
 * @internal
 */
export interface MatchStep {
  /** How many bytes of the sequence are held back (not delivered) after this chunk. */
  readonly held: number
  /** The bytes to deliver to the remote side now, in order. */
  readonly output: Uint8Array
  /** The whole sequence was typed. */
  readonly detached: boolean
  /** After a detach: the bytes of the chunk that followed the sequence (not delivered). */
  readonly rest: Uint8Array
}

/**
 * Feeds `chunk` to the matcher. `held` is the number of sequence bytes held back by the previous
 * step (0 at the start). Bytes that may still begin the sequence are held back; as soon as they
 * cannot, they are delivered, in order, ahead of what follows — a partial match is never eaten.
 * The sequence is recognised wherever it falls: across reads, or after other bytes in one read
 * (Docker recognises it only when each key arrives in its own read).
 *
 * @internal
 */
export const feed = (matcher: DetachMatcher, held: number, chunk: Uint8Array): MatchStep => {
  const { fallback, keys } = matcher
  // What is typed (or pasted) is mostly free of the sequence's first byte: pass it through as is.
  if (held === 0 && chunk.indexOf(keys[0]!) === -1) {
    return { held: 0, output: chunk, detached: false, rest: new Uint8Array(0) }
  }
  const out: Array<number> = []
  let j = held
  for (let i = 0; i < chunk.length; i++) {
    const byte = chunk[i]!
    while (j > 0 && keys[j] !== byte) {
      // The held bytes are keys[0..j); only their longest border can still start a match.
      const keep = fallback[j - 1]!
      for (let n = 0; n < j - keep; n++) out.push(keys[n]!)
      j = keep
    }
    if (keys[j] === byte) {
      j++
      if (j === keys.length) {
        return { held: 0, output: Uint8Array.from(out), detached: true, rest: chunk.subarray(i + 1) }
      }
    } else {
      out.push(byte)
    }
  }
  return { held: j, output: Uint8Array.from(out), detached: false, rest: new Uint8Array(0) }
}

/** The bytes held back by `held`: delivered when input ends before the sequence completes. @internal */
export const heldBytes = (matcher: DetachMatcher, held: number): Uint8Array => matcher.keys.slice(0, held)
