/**
 * What every transport's `Sandbox.connect` shares: the check of its arguments.
 *
 * @internal
 */
import { SandboxError } from "../SshError.js"

/** The error for a port that cannot be connected to, or `undefined` for a valid one. @internal */
export const invalidPort = (host: string, port: number): SandboxError | undefined =>
  Number.isInteger(port) && port > 0 && port <= 65535 ? undefined : new SandboxError({
    reason: "InvalidArgument",
    operation: "connect",
    path: `${host}:${port}`,
    detail: "the port must be an integer between 1 and 65535"
  })
