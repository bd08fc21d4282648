/**
 * The sandbox options of the CLI's commands (see `sandboxSelection.ts` for what they mean).
 *
 * @internal
 */
import * as Options from "@effect/cli/Options"

/** @internal */
export const sandboxOptions = {
  root: Options.directory("root").pipe(
    Options.withDescription("host directory of the sandbox (its / when isolated)"),
    Options.optional
  ),
  name: Options.text("name").pipe(
    Options.withDescription("a sandbox kept under $SANDBOX_SSH_HOME/sandboxes/<name> (default: \"default\")"),
    Options.optional
  ),
  isolation: Options.choice("isolation", ["auto", "bubblewrap", "none"]).pipe(
    Options.withDescription("auto: bubblewrap when installed, else plain host processes (not isolated)"),
    Options.withDefault("auto" as const)
  )
}
