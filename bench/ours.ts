/**
 * Our side of the benchmark: the library's public API against the default `LocalSandbox`
 * (isolation `"auto"`: bubblewrap namespaces when installed, else plain host processes).
 *
 * `index.ts` imports this module dynamically so that the anchor still runs (and reports why our
 * rows are missing) when the library cannot be loaded.
 */
import * as Effect from "effect/Effect"
import * as LocalSandbox from "../src/LocalSandbox.js"
import { measureSandbox } from "./measure.js"
import type { RunCounts } from "./util.js"

export type { OursResults } from "./measure.js"

export const measure = (counts: RunCounts) =>
  Effect.gen(function*() {
    const sandbox = yield* LocalSandbox.make({ isolation: "auto" })
    return yield* measureSandbox(sandbox, counts)
  }).pipe(Effect.scoped)
