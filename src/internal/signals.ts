/**
 * Signal names as SSH carries them.
 *
 * @internal
 */
import * as os from "node:os"

/** The signal names ssh2 can put in an `exit-signal` request (FACTS.md). */
const ENCODABLE = new Set([
  "ABRT",
  "ALRM",
  "FPE",
  "HUP",
  "ILL",
  "INT",
  "QUIT",
  "SEGV",
  "TERM",
  "USR1",
  "USR2",
  "KILL",
  "PIPE"
])

/** @internal */
export const exitSignalName = (signal: string): string | undefined => {
  const name = signal.replace(/^SIG/, "")
  return ENCODABLE.has(name) ? name : undefined
}

/** The number of a signal on this platform, e.g. `signalNumber("TERM") === 15`. @internal */
export const signalNumber = (signal: string): number | undefined => {
  const name = `SIG${signal.replace(/^SIG/, "")}` as keyof typeof os.constants.signals
  return os.constants.signals[name]
}

/** The name of signal number `n` without the `SIG` prefix, e.g. `signalName(15) === "TERM"`. @internal */
export const signalName = (n: number): string | undefined => {
  for (const [name, value] of Object.entries(os.constants.signals)) {
    if (value === n) return name.replace(/^SIG/, "")
  }
  return undefined
}
