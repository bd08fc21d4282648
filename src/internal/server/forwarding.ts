/**
 * `direct-tcpip` channels (`ssh -L`, `ssh -D`): a TCP connection opened from inside the sandbox's
 * network, bridged to the channel both ways.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type * as ssh2 from "ssh2"
import type { Sandbox } from "../../Sandbox.js"
import { SandboxError } from "../../SshError.js"
import * as ReadableStream from "../readableStream.js"
import { writeChunk } from "../transport/writable.js"
import { channelClosed } from "./channel.js"

/** @internal */
export const handleDirectTcpip = (
  accept: ssh2.AcceptConnection<ssh2.ServerChannel>,
  reject: ssh2.RejectConnection,
  info: ssh2.TcpipRequestInfo,
  sandbox: Sandbox,
  touch: () => void
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const connected = yield* Effect.either(sandbox.connect(info.destIP, info.destPort))
    if (connected._tag === "Left") {
      // ssh2 answers a rejected direct-tcpip open with CONNECT_FAILED.
      yield* Effect.logDebug("direct-tcpip refused", connected.left.message)
      return reject()
    }
    const connection = connected.right
    const channel = accept()
    const upstream = ReadableStream.fromReadable<SandboxError>(
      () => channel,
      (cause) => new SandboxError({ reason: "TransportFailed", operation: "channel read", cause }),
      { closeOnDone: false }
    ).pipe(Stream.tap(() => Effect.sync(touch)), Stream.run(connection.input))
    const downstream = connection.output.pipe(
      Stream.runForEachChunk((chunk) => {
        touch()
        return writeChunk(channel, chunk)
      }),
      Effect.ensuring(Effect.sync(() => channel.end()))
    )
    yield* Effect.all([Effect.ignore(upstream), Effect.ignore(downstream)], { concurrency: 2, discard: true }).pipe(
      Effect.raceFirst(channelClosed(channel)),
      Effect.ensuring(Effect.sync(() => channel.close()))
    )
  }).pipe(
    Effect.scoped,
    Effect.withLogSpan("sandbox-ssh.direct-tcpip"),
    Effect.annotateLogs({ destination: `${info.destIP}:${info.destPort}` })
  )
