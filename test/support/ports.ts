/** Local TCP helpers of the port-forwarding tests. */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as net from "node:net"

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** Connects to a forwarded port (retrying while ssh sets it up) and reads until EOF. */
export const readFromPort = (port: number): Effect.Effect<string> =>
  Effect.async<string, Error>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    let data = ""
    socket.on("data", (chunk) => (data += chunk.toString()))
    // Nothing received: the forward (or the server behind it) is not up yet; try again.
    socket.on("end", () => resume(data === "" ? Effect.fail(new Error("empty")) : Effect.succeed(data)))
    socket.on("error", (error) => resume(Effect.fail(error)))
  }).pipe(
    Effect.retry(Schedule.intersect(Schedule.spaced("100 millis"), Schedule.recurs(100))),
    Effect.orDie
  )
