/**
 * Public-key authorization for server endpoints: which keys may log in and the restrictions their
 * authorized_keys options put on the connection (sshd(8) "AUTHORIZED_KEYS FILE FORMAT").
 *
 * Every option is either enforced or makes the key unusable; none is silently ignored.
 *
 * @internal
 */
import { isIPv4, isIPv6 } from "node:net"
import type { AuthorizedKey, AuthorizedKeys } from "../../SshKeys.js"

/** What an authenticated key may do on its connection. @internal */
export interface Authorization {
  /** The fingerprint of the key that logged in (safe to log). */
  readonly fingerprint: string
  /** `command="..."`: runs instead of what the client asks; the request is in SSH_ORIGINAL_COMMAND. */
  readonly forcedCommand: string | undefined
  readonly allowPty: boolean
  readonly allowPortForwarding: boolean
  /** `environment="NAME=value"` pairs, set for every process of the connection. */
  readonly environment: Readonly<Record<string, string>>
}

/** @internal */
export const unrestricted = (fingerprint: string): Authorization => ({
  fingerprint,
  forcedCommand: undefined,
  allowPty: true,
  allowPortForwarding: true,
  environment: {}
})

/** Options that restrict nothing we offer: agent and X11 forwarding are always refused. */
const HARMLESS = new Set(["no-agent-forwarding", "no-x11-forwarding", "no-user-rc", "cert-authority-none"])

const globToRegExp = (pattern: string): RegExp =>
  new RegExp(
    "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$",
    "i"
  )

const ipv4ToNumber = (address: string): number =>
  address.split(".").reduce((n, part) => (n << 8) + Number(part), 0) >>> 0

const matchesCidr = (address: string, cidr: string): boolean => {
  const [network, bits] = cidr.split("/")
  if (network === undefined || bits === undefined || !isIPv4(network) || !isIPv4(address)) return false
  const length = Number(bits)
  if (!Number.isInteger(length) || length < 0 || length > 32) return false
  const mask = length === 0 ? 0 : (~0 << (32 - length)) >>> 0
  return (ipv4ToNumber(address) & mask) === (ipv4ToNumber(network) & mask)
}

/**
 * `from="pattern-list"`: the client's address must match a pattern and no negated (`!`) one.
 * Patterns are wildcards (`*`, `?`) or IPv4 CIDR; host names are not resolved (a name pattern
 * matches nothing). An unknown address (stdio transport) matches nothing.
 *
 * @internal
 */
export const matchesFrom = (patterns: string, address: string | undefined): boolean => {
  if (address === undefined) return false
  const plain = address.replace(/^::ffff:/, "")
  let matched = false
  for (const raw of patterns.split(",")) {
    const negated = raw.startsWith("!")
    const pattern = negated ? raw.slice(1) : raw
    const hit = pattern.includes("/") ? matchesCidr(plain, pattern) : globToRegExp(pattern).test(plain) ||
      (isIPv6(address) && globToRegExp(pattern).test(address))
    if (hit && negated) return false
    if (hit) matched = true
  }
  return matched
}

/**
 * The restrictions of one authorized key for a client at `address`, or the reason it may not log
 * in.
 *
 * @internal
 */
export const restrictionsOf = (key: AuthorizedKey, address: string | undefined): Authorization | string => {
  let forcedCommand: string | undefined = undefined
  let allowPty = true
  let allowPortForwarding = true
  const environment: Record<string, string> = {}
  for (const option of key.options) {
    switch (option.name) {
      case "restrict":
        allowPty = false
        allowPortForwarding = false
        break
      case "pty":
        allowPty = true
        break
      case "port-forwarding":
        allowPortForwarding = true
        break
      case "no-pty":
        allowPty = false
        break
      case "no-port-forwarding":
        allowPortForwarding = false
        break
      case "command":
        if (option.value === undefined) return "command= needs a value"
        forcedCommand = option.value
        break
      case "environment": {
        const match = option.value === undefined ? null : /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(option.value)
        if (match === null) return `bad environment= value ${JSON.stringify(option.value ?? "")}`
        environment[match[1]!] = match[2]!
        break
      }
      case "from":
        if (option.value === undefined) return "from= needs a value"
        if (!matchesFrom(option.value, address)) return `client address ${address ?? "(unknown)"} not allowed by from=`
        break
      default:
        if (!HARMLESS.has(option.name)) return `unsupported option ${option.name}; key refused`
    }
  }
  return { fingerprint: key.fingerprint, forcedCommand, allowPty, allowPortForwarding, environment }
}

/**
 * Finds the authorized key matching `publicBlob` and returns its restrictions; `undefined` when no
 * usable key matches.
 *
 * @internal
 */
export const authorizeKey = (
  keys: AuthorizedKeys,
  publicBlob: Uint8Array,
  address: string | undefined
): Authorization | undefined => {
  const blob = Buffer.from(publicBlob)
  for (const key of keys.keys) {
    if (!blob.equals(Buffer.from(key.publicBlob))) continue
    const result = restrictionsOf(key, address)
    if (typeof result !== "string") return result
  }
  return undefined
}
