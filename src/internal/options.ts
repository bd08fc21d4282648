/**
 * Validation and defaults of user-facing options, applied before anything starts.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { InvalidOptionError } from "../SshError.js"

/** The default terminal: `$TERM`, or `xterm` when unset, empty or `dumb`. @internal */
export const defaultTerm = (): string => {
  const term = process.env.TERM
  return term === undefined || term === "" || term === "dumb" ? "xterm" : term
}

/** @internal */
export const DEFAULT_INACTIVITY_TIMEOUT: Duration.Duration = Duration.minutes(10)

/** @internal */
export const validUser = (option: string, user: string | undefined): Effect.Effect<string, InvalidOptionError> =>
  user === undefined
    ? Effect.succeed("root")
    : /^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(user) && user.length <= 32
    ? Effect.succeed(user)
    : Effect.fail(new InvalidOptionError({ option, detail: `${JSON.stringify(user)} is not a valid user name` }))

/** @internal */
export const validTerm = (option: string, term: string | undefined): Effect.Effect<string, InvalidOptionError> =>
  term === undefined
    ? Effect.succeed(defaultTerm())
    : /^[A-Za-z0-9_.+-]+$/.test(term)
    ? Effect.succeed(term)
    : Effect.fail(new InvalidOptionError({ option, detail: `${JSON.stringify(term)} is not a terminal name` }))

/** A non-negative duration; zero disables what it times. @internal */
export const validTimeout = (
  option: string,
  input: Duration.DurationInput | undefined,
  fallback: Duration.Duration
): Effect.Effect<Duration.Duration, InvalidOptionError> => {
  if (input === undefined) return Effect.succeed(fallback)
  // Duration clamps negative inputs to zero (which means "disabled" here), so refuse them first.
  const negative = (typeof input === "number" && !(input >= 0)) ||
    (typeof input === "bigint" && input < 0n) ||
    (typeof input === "string" && input.trim().startsWith("-")) ||
    (Array.isArray(input) && (input[0] < 0 || input[1] < 0))
  if (negative) {
    return Effect.fail(
      new InvalidOptionError({ option, detail: `must be a non-negative duration, got ${String(input)}` })
    )
  }
  return Option.match(Duration.decodeUnknown(input), {
    onNone: () => Effect.fail(new InvalidOptionError({ option, detail: `${JSON.stringify(input)} is not a duration` })),
    onSome: Effect.succeed
  })
}
