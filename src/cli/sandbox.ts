/**
 * How the CLI names a local sandbox: `--root DIR`, or `--name NAME` under the library's home
 * (`<home>/sandboxes/<name>`, created 0700), `default` when neither is given.
 *
 * @internal
 */
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as Path from "node:path"
import { homeDirectory } from "../internal/home.js"
import * as LocalSandbox from "../LocalSandbox.js"
import type { Sandbox } from "../Sandbox.js"
import { SandboxError } from "../SshError.js"

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

/** @internal */
export interface SandboxSelection {
  readonly root: Option.Option<string>
  readonly name: Option.Option<string>
  readonly isolation: "auto" | "bubblewrap" | "none"
}

/** The directory a selection names (without creating it). @internal */
export const sandboxRoot = (selection: SandboxSelection): string =>
  Option.match(selection.root, {
    onSome: (root) => Path.resolve(root),
    onNone: () => Path.join(homeDirectory(), "sandboxes", Option.getOrElse(selection.name, () => "default"))
  })

/** @internal */
export const openSandbox = (selection: SandboxSelection): Effect.Effect<Sandbox, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const name = Option.getOrUndefined(selection.name)
    if (name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
      return yield* new SandboxError({
        reason: "InvalidArgument",
        operation: "--name",
        detail: `${JSON.stringify(name)}: use letters, digits, '.', '_' and '-'`
      })
    }
    const root = sandboxRoot(selection)
    if (Option.isNone(selection.root)) {
      yield* Effect.try({
        try: () => fs.mkdirSync(root, { recursive: true, mode: 0o700 }),
        catch: (cause) =>
          new SandboxError({ reason: "PermissionDenied", operation: "create sandbox", path: root, cause })
      })
    }
    return yield* LocalSandbox.make({ root, isolation: selection.isolation })
  })
