/**
 * The typed errors of sandbox-ssh. Each carries a `reason` literal, the original `cause`, and a
 * `message` a person can act on.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * Why a sandbox transport operation failed. File reasons mirror POSIX errno values so that the
 * SFTP server can map them to status codes in one place.
 *
 * @since 0.1.0
 * @category models
 */
export type SandboxErrorReason =
  | "NotFound"
  | "PermissionDenied"
  | "AlreadyExists"
  | "NotEmpty"
  | "NotADirectory"
  | "IsADirectory"
  | "InvalidArgument"
  | "Unsupported"
  | "SpawnFailed"
  | "ConnectFailed"
  | "TransportFailed"
  | "Closed"

/**
 * A sandbox transport operation failed (spawning a process, a file operation, a TCP connection
 * from inside the sandbox, or the sandbox itself could not be created).
 *
 * @since 0.1.0
 * @category errors
 */
export class SandboxError extends Data.TaggedError("SandboxError")<{
  readonly reason: SandboxErrorReason
  readonly operation: string
  readonly path?: string | undefined
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  override get message(): string {
    const where = this.path === undefined ? "" : ` ${JSON.stringify(this.path)}`
    const detail = this.detail === undefined ? "" : `: ${this.detail}`
    return `${this.operation}${where} failed (${this.reason})${detail}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type KeyErrorReason = "Missing" | "Unreadable" | "BadPermissions" | "Unparsable" | "WriteFailed"

/**
 * Loading, creating or parsing a key (host key, authorized keys) failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class KeyError extends Data.TaggedError("KeyError")<{
  readonly reason: KeyErrorReason
  readonly path?: string | undefined
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    const where = this.path === undefined ? "" : ` (${this.path})`
    return `key ${this.reason}${where}: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type ConnectionErrorReason = "HandshakeFailed" | "AuthenticationRejected" | "ConnectionLost" | "Closed"

/**
 * The SSH connection could not be established, was rejected, or was lost.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectionError extends Data.TaggedError("ConnectionError")<{
  readonly reason: ConnectionErrorReason
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `SSH connection ${this.reason}: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type ChannelErrorReason = "Refused" | "RequestRejected" | "NoExitStatus" | "Closed"

/**
 * An SSH channel was refused by the server, a request on it was rejected, or it ended without
 * reporting how the remote command ended.
 *
 * @since 0.1.0
 * @category errors
 */
export class ChannelError extends Data.TaggedError("ChannelError")<{
  readonly reason: ChannelErrorReason
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `SSH channel ${this.reason}: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type SftpErrorReason =
  | "NoSuchFile"
  | "PermissionDenied"
  | "Failure"
  | "BadMessage"
  | "NoConnection"
  | "ConnectionLost"
  | "Unsupported"
  | "Eof"

/**
 * An SFTP request failed with a status from the server.
 *
 * @since 0.1.0
 * @category errors
 */
export class SftpError extends Data.TaggedError("SftpError")<{
  readonly reason: SftpErrorReason
  readonly operation: string
  readonly path?: string | undefined
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  override get message(): string {
    const where = this.path === undefined ? "" : ` ${JSON.stringify(this.path)}`
    const detail = this.detail === undefined ? "" : `: ${this.detail}`
    return `sftp ${this.operation}${where} failed (${this.reason})${detail}`
  }
}

/**
 * An option had an invalid value. Raised before anything starts.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptionError extends Data.TaggedError("InvalidOptionError")<{
  readonly option: string
  readonly detail: string
}> {
  override get message(): string {
    return `invalid option ${this.option}: ${this.detail}`
  }
}

/**
 * An interactive operation needed a terminal and the local stdin or stdout is not one.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotATerminalError extends Data.TaggedError("NotATerminalError")<{
  readonly detail: string
}> {
  override get message(): string {
    return `not a terminal: ${this.detail}`
  }
}

/**
 * Every error the SSH layer can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type SshError =
  | SandboxError
  | KeyError
  | ConnectionError
  | ChannelError
  | SftpError
  | InvalidOptionError
  | NotATerminalError
