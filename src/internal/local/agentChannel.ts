/**
 * The host's end of the agent's socket, made so that the host reads each frame straight into its
 * own buffer (`onread` with `FrameReader`): a read reply of 256 KiB lands in the buffer handed to
 * the caller, with no intermediate chunk and no copy. Node can only set `onread` on a socket it
 * creates, and has no `socketpair`, so the pair is made by connecting to a one-shot Unix listener
 * in a fresh 0700 directory that is removed as soon as the connection is accepted. The accepted end
 * (`peer`) is given to the sandbox's init as its fd 4, then closed on the host: the agent's exit is
 * then seen as the end of the stream.
 *
 * The listener never lives in the runtime directory: that one is visible inside the sandbox, and
 * anything there could be connected to from inside.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as FsPromises from "node:fs/promises"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { SandboxError } from "../../SshError.js"
import { FrameReader, maxFrame } from "./agentProtocol.js"

/** @internal */
export interface AgentChannel {
  /** The host's end: write frames to it; its `close` is the agent's end. */
  readonly socket: Net.Socket
  /** The agent's end, for the child's stdio; the host must close its copy once the child has it. */
  readonly peer: Net.Socket
  /**
   * Starts delivering frames (before it, frames would be dropped; the agent speaks only when asked).
   * A corrupt stream is reported once through `onCorrupt`, never thrown.
   */
  readonly receive: (
    onFrame: (id: number, code: number, payload: Buffer) => void,
    onCorrupt: (error: Error) => void
  ) => void
}

const channelError = (cause: unknown) =>
  new SandboxError({
    reason: "TransportFailed",
    operation: "start sandbox agent",
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

const connectedPair = (
  reader: () => FrameReader,
  onRead: (length: number) => void
): Promise<readonly [Net.Socket, Net.Socket]> =>
  FsPromises.mkdtemp(Path.join(Os.tmpdir(), "sandbox-ssh-agent-")).then((dir) =>
    new Promise<readonly [Net.Socket, Net.Socket]>((resolve, reject) => {
      const path = Path.join(dir, "socket")
      const server = Net.createServer()
      let client: Net.Socket | undefined
      const fail = (error: Error) => {
        server.close()
        client?.destroy()
        reject(error)
      }
      server.once("error", fail)
      server.once("connection", (peer) => {
        server.close()
        server.removeListener("error", fail)
        client!.removeListener("error", fail)
        resolve([client!, peer])
      })
      server.listen(path, () => {
        client = Net.connect({
          path,
          onread: {
            buffer: () => reader().nextBuffer(),
            callback: (length) => {
              onRead(length)
              return true
            }
          }
        })
        client.once("error", fail)
      })
    }).finally(() => FsPromises.rm(dir, { recursive: true, force: true }))
  )

/**
 * A connected pair for the current scope; closing the scope destroys both ends.
 *
 * @internal
 */
export const make: Effect.Effect<AgentChannel, SandboxError, Scope.Scope> = Effect.suspend(() => {
  let onFrame: (id: number, code: number, payload: Buffer) => void = () => {}
  let onCorrupt: (error: Error) => void = () => {}
  let corrupt = false
  const reader = new FrameReader((id, code, payload) => onFrame(id, code, payload), maxFrame)
  const onRead = (length: number) => {
    if (corrupt) return
    try {
      reader.received(length)
    } catch (error) {
      corrupt = true
      onCorrupt(error instanceof Error ? error : new Error(String(error)))
    }
  }
  return Effect.acquireRelease(
    Effect.tryPromise({ try: () => connectedPair(() => reader, onRead), catch: channelError }),
    ([socket, peer]) =>
      Effect.sync(() => {
        socket.destroy()
        peer.destroy()
      })
  ).pipe(Effect.map(([socket, peer]): AgentChannel => {
    socket.on("error", () => {})
    peer.on("error", () => {})
    return {
      socket,
      peer,
      receive: (frame, corrupted) => {
        onFrame = frame
        onCorrupt = corrupted
      }
    }
  }))
})
