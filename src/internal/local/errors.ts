import { SandboxError, type SandboxErrorReason } from "../../SshError.js"

/**
 * Maps a Node errno code to a sandbox error reason. The one place where errno codes are
 * interpreted for the local transport.
 *
 * @internal
 */
export const reasonFromErrno = (code: string | undefined): SandboxErrorReason => {
  switch (code) {
    case "ENOENT":
      return "NotFound"
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return "PermissionDenied"
    case "EEXIST":
      return "AlreadyExists"
    case "ENOTEMPTY":
      return "NotEmpty"
    case "ENOTDIR":
      return "NotADirectory"
    case "EISDIR":
      return "IsADirectory"
    case "EINVAL":
    case "ELOOP":
    case "ENAMETOOLONG":
    case "EXDEV":
    case "EBADF":
    // Node's own argument checks (a NUL byte in a path, an offset out of range)
    case "ERR_INVALID_ARG_VALUE":
    case "ERR_INVALID_ARG_TYPE":
    case "ERR_OUT_OF_RANGE":
      return "InvalidArgument"
    case "ENOSYS":
    case "ENOTSUP":
    case "EOPNOTSUPP":
      return "Unsupported"
    case "ECONNREFUSED":
    case "ECONNRESET":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "ETIMEDOUT":
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EADDRNOTAVAIL":
      return "ConnectFailed"
    default:
      return "TransportFailed"
  }
}

const errnoCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined

const errorMessage = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/**
 * Builds a `SandboxError` from a Node error, keeping the original as `cause`.
 *
 * @internal
 */
export const fromNodeError = (operation: string, path?: string) => (cause: unknown): SandboxError =>
  new SandboxError({
    reason: reasonFromErrno(errnoCode(cause)),
    operation,
    path,
    detail: errorMessage(cause),
    cause
  })

/** @internal */
export const unsupported = (operation: string, detail: string, path?: string): SandboxError =>
  new SandboxError({ reason: "Unsupported", operation, path, detail })
