/**
 * The library's home directory: `$SANDBOX_SSH_HOME`, else `~/.sandbox-ssh`.
 *
 * @internal
 */
import * as os from "node:os"
import * as Path from "node:path"

/** @internal */
export const homeDirectory = (): string => {
  const configured = process.env.SANDBOX_SSH_HOME
  return configured !== undefined && configured !== ""
    ? Path.resolve(configured)
    : Path.join(os.homedir(), ".sandbox-ssh")
}

/** @internal */
export const defaultHostKeyPath = (): string => Path.join(homeDirectory(), "ssh_host_ed25519_key")

/** @internal */
export const defaultAuthorizedKeysPath = (): string => Path.join(homeDirectory(), "authorized_keys")
