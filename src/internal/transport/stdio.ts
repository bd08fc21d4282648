/**
 * The process's stdin and stdout as one duplex stream for an SSH transport (an OpenSSH
 * `ProxyCommand`). Ending or destroying it detaches from stdin/stdout without closing them, so the
 * next connection can be served over them again.
 *
 * @internal
 */
import { Duplex } from "node:stream"

/** @internal */
export const stdioDuplex = (
  input: NodeJS.ReadableStream & { pause(): unknown; resume(): unknown } = process.stdin,
  output: NodeJS.WritableStream = process.stdout
): Duplex => {
  const onData = (chunk: Buffer) => {
    if (!duplex.push(chunk)) input.pause()
  }
  const onEnd = () => duplex.push(null)
  const detach = () => {
    input.removeListener("data", onData)
    input.removeListener("end", onEnd)
    input.pause()
  }
  const duplex = new Duplex({
    allowHalfOpen: false,
    read() {
      input.resume()
    },
    write(chunk: Buffer, _encoding, callback) {
      if (output.write(chunk)) callback()
      else output.once("drain", () => callback())
    },
    final(callback) {
      detach()
      callback()
    },
    destroy(error, callback) {
      detach()
      callback(error)
    }
  })
  input.on("data", onData)
  input.once("end", onEnd)
  return duplex
}
