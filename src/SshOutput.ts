/**
 * The collected result of `SshClient.exec`.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

const decoder = new TextDecoder()

/**
 * Captured stdout, stderr and how the command ended. `status` is the exit code, or `128 + n` when
 * the command was killed by signal `n` (then `signal` names it, e.g. `"KILL"`).
 *
 * @since 0.1.0
 * @category models
 */
export class SshOutput extends Schema.Class<SshOutput>("SshOutput")({
  status: Schema.Int,
  stdout: Schema.Uint8ArrayFromSelf,
  stderr: Schema.Uint8ArrayFromSelf,
  signal: Schema.optional(Schema.String)
}) {
  /** `true` when the command exited with status 0. */
  get success(): boolean {
    return this.status === 0
  }

  /** stdout decoded as UTF-8. */
  get stdoutText(): string {
    return decoder.decode(this.stdout)
  }

  /** stderr decoded as UTF-8. */
  get stderrText(): string {
    return decoder.decode(this.stderr)
  }
}
