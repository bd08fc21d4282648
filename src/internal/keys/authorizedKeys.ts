/**
 * A parser for sshd's authorized_keys format (sshd(8) "AUTHORIZED_KEYS FILE FORMAT"): an optional
 * comma-separated options prefix, the key type, the base64 key, an optional comment. Comments and
 * blank lines are skipped; a bad line is reported with its number and does not stop the others.
 *
 * @internal
 */
import ssh2 from "ssh2"
import type { AuthorizedKey, AuthorizedKeyOption, AuthorizedKeys } from "../../SshKeys.js"
import { fingerprint } from "./keyPair.js"

const KEY_TYPE =
  /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com|ssh-ed25519-cert-v01@openssh\.com|ssh-rsa-cert-v01@openssh\.com)$/

/** Splits the leading options string (which may contain quoted, escaped spaces). */
const splitOptions = (line: string): { readonly options: string; readonly rest: string } | string => {
  let i = 0
  let quoted = false
  for (; i < line.length; i++) {
    const c = line[i]
    if (c === "\\" && quoted) {
      i++
      continue
    }
    if (c === "\"") quoted = !quoted
    else if (!quoted && (c === " " || c === "\t")) break
  }
  if (quoted) return "unterminated quote in options"
  return { options: line.slice(0, i), rest: line.slice(i).trimStart() }
}

const parseOptions = (text: string): ReadonlyArray<AuthorizedKeyOption> | string => {
  const options: Array<AuthorizedKeyOption> = []
  let i = 0
  while (i < text.length) {
    let name = ""
    while (i < text.length && text[i] !== "=" && text[i] !== ",") name += text[i++]
    if (!/^[A-Za-z0-9-]+$/.test(name)) return `bad option name ${JSON.stringify(name)}`
    let value: string | undefined = undefined
    if (text[i] === "=") {
      i++
      if (text[i] !== "\"") return `option ${name} needs a quoted value`
      i++
      value = ""
      while (i < text.length && text[i] !== "\"") {
        if (text[i] === "\\" && text[i + 1] === "\"") i++
        value += text[i++]
      }
      if (text[i] !== "\"") return `unterminated value for option ${name}`
      i++
    }
    options.push({ name: name.toLowerCase(), value })
    if (i < text.length) {
      if (text[i] !== ",") return `expected "," after option ${name}`
      i++
    }
  }
  return options
}

const parseKeyFields = (text: string): { type: string; blob: Buffer; comment: string } | string => {
  const [type, data, ...comment] = text.split(/[ \t]+/)
  if (type === undefined || !KEY_TYPE.test(type)) return `unknown key type ${JSON.stringify(type ?? "")}`
  if (data === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) return "missing or invalid base64 key data"
  const blob = Buffer.from(data, "base64")
  const parsed = ssh2.utils.parseKey(`${type} ${data}`)
  if (parsed instanceof Error) return `unparsable key: ${parsed.message}`
  if (parsed.type !== type.replace(/-cert-v01@openssh\.com$/, "")) return `key data is ${parsed.type}, not ${type}`
  return { type, blob, comment: comment.join(" ") }
}

/** @internal */
export const parseAuthorizedKeys = (content: string, path?: string): AuthorizedKeys => {
  const keys: Array<AuthorizedKey> = []
  const problems: Array<{ readonly line: number; readonly detail: string }> = []
  content.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim()
    if (line === "" || line.startsWith("#")) return
    const lineNumber = index + 1
    let fields = parseKeyFields(line)
    let options: ReadonlyArray<AuthorizedKeyOption> = []
    if (typeof fields === "string") {
      const split = splitOptions(line)
      if (typeof split === "string") return problems.push({ line: lineNumber, detail: split })
      const parsedOptions = parseOptions(split.options)
      if (typeof parsedOptions === "string") return problems.push({ line: lineNumber, detail: parsedOptions })
      const keyFields = parseKeyFields(split.rest)
      if (typeof keyFields === "string") return problems.push({ line: lineNumber, detail: keyFields })
      fields = keyFields
      options = parsedOptions
    }
    keys.push({
      line: lineNumber,
      type: fields.type,
      publicBlob: new Uint8Array(fields.blob),
      fingerprint: fingerprint(fields.blob),
      comment: fields.comment,
      options
    })
  })
  return { path, keys, problems }
}
