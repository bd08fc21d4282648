/**
 * How the CLI names a local sandbox: `--root DIR`, or `--name NAME` under the library's home
 * (`<home>/sandboxes/<name>`, created 0700), `default` when neither is given. (No @effect/cli
 * here: the fast `serve --stdio` entry uses it without loading the option parser.)
 *
 * @internal
 */
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
