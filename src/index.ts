/**
 * sandbox-ssh: SSH semantics for sandboxes, as an Effect library.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as DockerSandbox from "./DockerSandbox.js"
/** @since 0.1.0 */
export * as LocalSandbox from "./LocalSandbox.js"
/** @since 0.1.0 */
export * as MemorySandbox from "./MemorySandbox.js"
/** @since 0.1.0 */
export * as Sandbox from "./Sandbox.js"
/** @since 0.1.0 */
export * as SandboxSsh from "./SandboxSsh.js"
/** @since 0.1.0 */
export * as SftpClient from "./SftpClient.js"
/** @since 0.1.0 */
export * as SshClient from "./SshClient.js"
/** @since 0.1.0 */
export * as SshError from "./SshError.js"
/** @since 0.1.0 */
export * as SshKeys from "./SshKeys.js"
/** @since 0.1.0 */
export * as SshOutput from "./SshOutput.js"
/** @since 0.1.0 */
export * as SshServer from "./SshServer.js"
