/**
 * The in-sandbox agent: a CommonJS program run by the host's `node` as the init of an isolated
 * sandbox (bwrap's child, pid 2 of the sandbox's PID namespace). Every file operation and TCP
 * connection of the sandbox is performed by it with plain `node:fs` / `node:net`, so paths are
 * resolved by the kernel in the sandbox's own mount namespace and connections start in its network
 * namespace: no `..`, symlink or race can reach the host, because the host is not in its view.
 *
 * It runs as uid 0 of the sandbox with no capabilities and `no_new_privs` (bwrap's `--cap-drop ALL`
 * and its unconditional `PR_SET_NO_NEW_PRIVS`): permission checks are those of an unprivileged
 * owner. A mode-000 file owned by root cannot be read or written (`EACCES`), files of other users
 * are reachable through their "other" bits only, and `chown` to another owner fails (`EPERM`),
 * exactly as for the sandbox's own root processes.
 *
 * The same program also serves `Sandbox.fileSystemFor(user)`: started for a login user through the
 * entry path of that user's processes (`nsenter` + `setpriv`: the user's uid, gid and groups, no
 * capabilities), it then has exactly that user's permissions.
 *
 * Contract (see `bubblewrap.ts` for the init, `sandbox.ts` for a user's agent): it exits when stdin
 * closes (or when the host's socket closes); as the init, the shell that `exec`s it has said
 * `ready` first. The protocol (`agentProtocol.ts`) runs on fd 4, a Unix socket to the host.
 *
 * An agent is reachable by processes of its own uid (it may be signalled or traced), so the host
 * treats everything it says as untrusted input.
 *
 * @internal
 */
import {
  attrsLength,
  headerLength,
  maxFrame,
  maxRead,
  Op,
  pooledRead,
  setAttrsLength,
  SetMask,
  Status,
  streamWindow
} from "./agentProtocol.js"

/** @internal */
export const agentFileName = "agent.cjs"

/** @internal */
export const agentSource = String.raw`"use strict"
// sandbox-ssh in-sandbox agent (generated; see src/internal/local/agentSource.ts)
const fs = require("node:fs")
const net = require("node:net")
const posix = require("node:path").posix

const Op = ${JSON.stringify(Op)}
const Status = ${JSON.stringify(Status)}
const SetMask = ${JSON.stringify(SetMask)}
const HEADER = ${headerLength}
const ATTRS = ${attrsLength}
const SETATTRS = ${setAttrsLength}
const MAX_READ = ${maxRead}
const POOLED = ${pooledRead}
const WINDOW = ${streamWindow}
const MAX_FRAME = 64 * 1024 * 1024 + 64
const MAX_REPLY = ${maxFrame - 64}
const O_NOCTTY = fs.constants.O_NOCTTY

process.on("uncaughtException", (error) => {
  // the agent is the sandbox's init: dying would end the sandbox
  try {
    process.stderr.write("sandbox-ssh agent: " + (error && error.stack || error) + "\n")
  } catch {}
})

// ---- input

const scratch = Buffer.allocUnsafe(64 * 1024)
let start = 0
let end = 0
let body = null
let bodyFill = 0
let bodyId = 0
let bodyOp = 0
const kept = (op) => op === Op.Write || op === Op.StreamData
function nextBuffer() {
  return body !== null ? body.subarray(bodyFill) : scratch.subarray(end)
}
function corrupt(length) {
  process.stderr.write("sandbox-ssh agent: bad frame length " + length + "\n")
  process.exit(70)
}
function received(length) {
  if (body !== null) {
    bodyFill += length
    if (bodyFill === body.length) {
      const complete = body
      body = null
      onFrame(bodyId, bodyOp, complete)
    }
    return
  }
  end += length
  while (end - start >= HEADER) {
    const frameLength = scratch.readUInt32LE(start)
    if (frameLength < 5 || frameLength > MAX_FRAME) return corrupt(frameLength)
    const id = scratch.readUInt32LE(start + 4)
    const op = scratch[start + 8]
    const size = frameLength - 5
    const from = start + HEADER
    if (end - from >= size) {
      start = from + size
      const view = scratch.subarray(from, from + size)
      onFrame(id, op, kept(op) ? Buffer.from(view) : view)
      continue
    }
    bodyId = id
    bodyOp = op
    body = Buffer.allocUnsafe(size)
    scratch.copy(body, 0, from, end)
    bodyFill = end - from
    start = end = 0
    return
  }
  if (start === end) {
    start = end = 0
  } else if (start > 0) {
    scratch.copyWithin(0, start, end)
    end -= start
    start = 0
  }
}

// Input is read with onread: headers and small frames into a scratch buffer (a frame there is handed
// out as a view, valid until the handler returns, except payloads kept across an asynchronous call
// (write data, stream data), which are copied); the rest of a large frame is read straight into a
// buffer of its own.
const host = new net.Socket({
  fd: 4,
  readable: true,
  writable: true,
  onread: {
    buffer: () => nextBuffer(),
    callback: (length) => {
      received(length)
      return true
    }
  }
})
const exit = () => process.exit(0)
host.on("error", exit)
host.on("close", exit)
process.stdin.on("error", exit)
process.stdin.on("end", exit)
process.stdin.on("close", exit)
process.stdin.resume()
process.stdout.on("error", () => {})

// ---- output: frames, batched per tick into one writev

let corked = false
const uncork = () => {
  corked = false
  host.uncork()
}
const send = (buffer, callback) => {
  if (!corked) {
    corked = true
    host.cork()
    process.nextTick(uncork)
  }
  host.write(buffer, callback)
}
const frame = (id, code, length) => {
  const buffer = Buffer.allocUnsafe(HEADER + length)
  buffer.writeUInt32LE(5 + length, 0)
  buffer.writeUInt32LE(id, 4)
  buffer[8] = code
  return buffer
}
// a header alone, for a payload sent as a separate buffer
const head = (id, code, length) => {
  const buffer = Buffer.allocUnsafe(HEADER)
  buffer.writeUInt32LE(5 + length, 0)
  buffer.writeUInt32LE(id, 4)
  buffer[8] = code
  return buffer
}
const ok = (id) => send(head(id, Status.Ok, 0))
const okString = (id, text) => {
  const bytes = Buffer.from(text, "utf8")
  send(head(id, Status.Ok, bytes.length))
  send(bytes)
}
const errorPayload = (error) => {
  const code = Buffer.from(String(error && typeof error.code === "string" ? error.code : "EIO"), "utf8")
  const message = Buffer.from(String(error && error.message || error), "utf8")
  const payload = Buffer.allocUnsafe(4 + code.length + message.length)
  payload.writeUInt32LE(code.length, 0)
  code.copy(payload, 4)
  message.copy(payload, 4 + code.length)
  return payload
}
const fail = (id, error) => {
  const payload = errorPayload(error)
  send(head(id, Status.Error, payload.length))
  send(payload)
}
const errno = (code, message) => Object.assign(new Error(message), { code })

const putAttrs = (buffer, offset, s) => {
  buffer.writeUInt32LE(s.mode >>> 0, offset)
  buffer.writeUInt32LE(s.uid >>> 0, offset + 4)
  buffer.writeUInt32LE(s.gid >>> 0, offset + 8)
  buffer.writeUInt32LE(s.nlink >>> 0, offset + 12)
  buffer.writeDoubleLE(s.size, offset + 16)
  buffer.writeDoubleLE(s.atimeMs, offset + 24)
  buffer.writeDoubleLE(s.mtimeMs, offset + 32)
}
// metadata calls run synchronously: no threadpool round trip, and they never block on a FIFO or a
// device (only open, read and write do)
const statReply = (id, f) => {
  let stats
  try {
    stats = f()
  } catch (error) {
    return fail(id, error)
  }
  attrsReply(id)(null, stats)
}
const attrsReply = (id) => (error, stats) => {
  if (error) return fail(id, error)
  const buffer = frame(id, Status.Ok, ATTRS)
  putAttrs(buffer, HEADER, stats)
  send(buffer)
}
const done = (id) => (error) => error ? fail(id, error) : ok(id)

// ---- payload fields

const rest = (payload, offset) => {
  if (offset > payload.length) throw errno("EINVAL", "truncated request")
  return payload.toString("utf8", offset)
}
// a length-prefixed string followed by a last one: [first, second]
const twoStrings = (payload, offset) => {
  const length = payload.readUInt32LE(offset)
  if (offset + 4 + length > payload.length) throw errno("EINVAL", "truncated request")
  return [payload.toString("utf8", offset + 4, offset + 4 + length), payload.toString("utf8", offset + 4 + length)]
}
const position = (value) => {
  if (!Number.isSafeInteger(value) || value < 0) throw errno("EINVAL", "bad offset " + value)
  return value
}

// ---- open files: handle → fd; a close waits for the operations in flight on the same handle

const handles = new Map()
let nextHandle = 1
const entryOf = (handle) => {
  const entry = handles.get(handle)
  if (entry === undefined) throw errno("EBADF", "unknown handle " + handle)
  return entry
}
const acquire = (handle) => {
  const entry = entryOf(handle)
  entry.busy++
  return entry
}
const release = (entry) => {
  entry.busy--
  if (entry.busy === 0 && entry.onIdle !== null) entry.onIdle()
}
const newHandle = (fd, regular) => {
  while (handles.has(nextHandle)) nextHandle = nextHandle >= 0xffffffff ? 1 : nextHandle + 1
  const handle = nextHandle
  nextHandle = nextHandle >= 0xffffffff ? 1 : nextHandle + 1
  handles.set(handle, { fd, regular, busy: 0, onIdle: null })
  return handle
}

// Reads and writes of regular files are synchronous, as in OpenSSH's sftp-server: a page-cache hit
// costs microseconds, while a threadpool round trip costs two thread wake-ups (small pipelined reads
// went ~1.7x faster). FIFOs, devices and sockets can block indefinitely: those go to the threadpool.
const syncCall = (f) => (fd, buffer, offset, length, position, callback) => {
  let n
  try {
    n = f(fd, buffer, offset, length, position)
  } catch (error) {
    return callback(error)
  }
  callback(null, n)
}
const readSync = syncCall(fs.readSync)
const writeSync = syncCall(fs.writeSync)

// ---- reply buffers for reads: pooled, returned once the socket has written them

const pool = []
const takeBuffer = (length) =>
  length <= POOLED ? (pool.pop() || Buffer.allocUnsafeSlow(HEADER + POOLED)) : Buffer.allocUnsafeSlow(HEADER + length)
const giveBack = (buffer) => {
  if (buffer.length === HEADER + POOLED && pool.length < 64) pool.push(buffer)
}

// ---- attributes

const setAttributes = (payload, offset, target, callback) => {
  if (offset + SETATTRS > payload.length) throw errno("EINVAL", "truncated request")
  const mask = payload.readUInt32LE(offset)
  const size = payload.readDoubleLE(offset + 4)
  const uid = payload.readUInt32LE(offset + 12)
  const gid = payload.readUInt32LE(offset + 16)
  const mode = payload.readUInt32LE(offset + 20)
  const atime = payload.readDoubleLE(offset + 24)
  const mtime = payload.readDoubleLE(offset + 32)
  const steps = []
  if (mask & SetMask.size) steps.push((next) => target.truncate(position(size), next))
  if (mask & SetMask.owner) {
    steps.push((next) => target.chown(uid === 0xffffffff ? -1 : uid, gid === 0xffffffff ? -1 : gid, next))
  }
  if (mask & SetMask.mode) steps.push((next) => target.chmod(mode & 0o7777, next))
  if (mask & (SetMask.atime | SetMask.mtime)) {
    steps.push((next) => {
      if ((mask & SetMask.atime) && (mask & SetMask.mtime)) return target.utimes(atime, mtime, next)
      target.stat((error, stats) => {
        if (error) return next(error)
        target.utimes(
          mask & SetMask.atime ? atime : stats.atimeMs / 1000,
          mask & SetMask.mtime ? mtime : stats.mtimeMs / 1000,
          next
        )
      })
    })
  }
  const run = (index) => {
    if (index === steps.length) return callback(null)
    try {
      steps[index]((error) => error ? callback(error) : run(index + 1))
    } catch (error) {
      callback(error)
    }
  }
  run(0)
}
const pathTarget = (path) => ({
  truncate: (size, k) => fs.truncate(path, size, k),
  chown: (uid, gid, k) => fs.chown(path, uid, gid, k),
  chmod: (mode, k) => fs.chmod(path, mode, k),
  utimes: (atime, mtime, k) => fs.utimes(path, atime, mtime, k),
  stat: (k) => fs.stat(path, k)
})
const fdTarget = (fd) => ({
  truncate: (size, k) => fs.ftruncate(fd, size, k),
  chown: (uid, gid, k) => fs.fchown(fd, uid, gid, k),
  chmod: (mode, k) => fs.fchmod(fd, mode, k),
  utimes: (atime, mtime, k) => fs.futimes(fd, atime, mtime, k),
  stat: (k) => fs.fstat(fd, k)
})

// ---- rename without replacing: link + unlink for what can be hard-linked (atomic against a
// concurrent creator of the target: link fails with EEXIST); directories (and files that cannot be
// hard-linked) fall back to lstat + rename, which never replaces what existed at the check

const renameNoReplace = (from, to, callback) =>
  fs.link(from, to, (error) => {
    if (!error) return fs.unlink(from, callback)
    if (error.code === "EEXIST" || error.code === "ENOENT" || error.code === "ENOTDIR") return callback(error)
    fs.lstat(to, (missing) => {
      if (!missing) return callback(errno("EEXIST", "file already exists, rename '" + from + "' -> '" + to + "'"))
      if (missing.code !== "ENOENT") return callback(missing)
      fs.rename(from, to, callback)
    })
  })

const readDirectory = (id, dir) =>
  fs.readdir(dir, (error, names) => {
    if (error) return fail(id, error)
    const base = dir.endsWith("/") ? dir : dir + "/"
    const stats = names.map((name) => {
      try {
        // removed meanwhile: left out
        return fs.lstatSync(base + name, { throwIfNoEntry: false }) || null
      } catch {
        return null
      }
    })
    const encoded = names.map((name) => Buffer.from(name, "utf8"))
    let length = 4
    let count = 0
    for (let i = 0; i < names.length; i++) {
      if (stats[i] === null) continue
      count++
      length += 4 + encoded[i].length + ATTRS
    }
    if (length > MAX_REPLY) {
      // the host refuses larger frames (as corrupt): this is the one reply that could grow so far
      return fail(id, errno("EOVERFLOW", "directory listing of " + count + " entries is larger than " + MAX_REPLY + " bytes"))
    }
    const buffer = frame(id, Status.Ok, length)
    buffer.writeUInt32LE(count, HEADER)
    let offset = HEADER + 4
    for (let i = 0; i < names.length; i++) {
      if (stats[i] === null) continue
      buffer.writeUInt32LE(encoded[i].length, offset)
      encoded[i].copy(buffer, offset + 4)
      offset += 4 + encoded[i].length
      putAttrs(buffer, offset, stats[i])
      offset += ATTRS
    }
    send(buffer)
  })

const realPath = (id, path) =>
  fs.realpath.native(path, (error, resolved) => {
    if (!error) return okString(id, resolved)
    if (error.code !== "ENOENT" || path === "/") return fail(id, error)
    // the last component may be missing
    const base = posix.basename(path)
    fs.realpath.native(posix.dirname(path), (error, parent) => {
      if (error) return fail(id, error)
      okString(id, parent === "/" ? "/" + base : parent + "/" + base)
    })
  })

const read = (id, payload) => {
  const entry = acquire(payload.readUInt32LE(0))
  const offset = payload.readDoubleLE(4)
  const length = Math.min(payload.readUInt32LE(12), MAX_READ)
  try {
    position(offset)
  } catch (error) {
    release(entry)
    throw error
  }
  const buffer = takeBuffer(length)
  ;(entry.regular ? readSync : fs.read)(entry.fd, buffer, HEADER, length, offset, (error, n) => {
    release(entry)
    if (error) {
      giveBack(buffer)
      return fail(id, error)
    }
    buffer.writeUInt32LE(5 + n, 0)
    buffer.writeUInt32LE(id, 4)
    buffer[8] = Status.Ok
    send(buffer.subarray(0, HEADER + n), () => giveBack(buffer))
  })
}

const write = (id, payload) => {
  const entry = acquire(payload.readUInt32LE(0))
  let offset
  try {
    offset = position(payload.readDoubleLE(4))
  } catch (error) {
    release(entry)
    throw error
  }
  const data = payload.subarray(12)
  let written = 0
  const step = () => {
    if (written === data.length) {
      release(entry)
      return ok(id)
    }
    ;(entry.regular ? writeSync : fs.write)(entry.fd, data, written, data.length - written, offset + written, (error, n) => {
      if (error) {
        release(entry)
        return fail(id, error)
      }
      written += n
      step()
    })
  }
  step()
}

const onHandle = (payload, f) => {
  const entry = acquire(payload.readUInt32LE(0))
  try {
    f(entry.fd, (k) => (error, value) => {
      release(entry)
      k(error, value)
    })
  } catch (error) {
    release(entry)
    throw error
  }
}

const close = (id, payload) => {
  const handle = payload.readUInt32LE(0)
  const entry = entryOf(handle)
  handles.delete(handle)
  const closeNow = () => fs.close(entry.fd, done(id))
  if (entry.busy === 0) closeNow()
  else entry.onIdle = closeNow
}

// ---- TCP streams

const streams = new Map()

const streamFrame = (id, code, data) => {
  send(head(id, code, data === undefined ? 0 : data.length))
  if (data !== undefined) send(data)
}

const connect = (id, payload) => {
  const port = payload.readUInt32LE(0)
  const address = rest(payload, 4)
  const socket = net.connect({ host: address, port, allowHalfOpen: true })
  const stream = { socket, unacked: 0, error: null, open: false }
  socket.on("error", (error) => {
    if (stream.open) stream.error = error
    else fail(id, error)
  })
  socket.once("connect", () => {
    socket.setNoDelay(true)
    stream.open = true
    streams.set(id, stream)
    ok(id)
  })
  socket.on("data", (data) => {
    if (streams.get(id) !== stream) return
    streamFrame(id, Status.StreamData, data)
    stream.unacked += data.length
    if (stream.unacked >= WINDOW) socket.pause()
  })
  socket.on("end", () => {
    if (streams.get(id) === stream) streamFrame(id, Status.StreamEnd)
  })
  socket.on("close", () => {
    if (streams.get(id) !== stream) return
    streams.delete(id)
    streamFrame(id, Status.StreamClose, stream.error === null ? undefined : errorPayload(stream.error))
  })
}

const onStream = (id, op, payload) => {
  const stream = streams.get(id)
  if (stream === undefined) return
  switch (op) {
    case Op.StreamData: {
      const length = payload.length
      stream.socket.write(payload, () => {
        if (streams.get(id) === stream) {
          const ack = frame(id, Status.StreamAck, 4)
          ack.writeUInt32LE(length, HEADER)
          send(ack)
        }
      })
      return
    }
    case Op.StreamEnd:
      stream.socket.end()
      return
    case Op.StreamClose:
      streams.delete(id)
      stream.socket.destroy()
      return
    case Op.StreamAck:
      stream.unacked -= payload.readUInt32LE(0)
      if (stream.unacked < WINDOW && stream.socket.isPaused()) stream.socket.resume()
      return
  }
}

// ---- requests

const dispatch = (id, op, p) => {
  switch (op) {
    case Op.Stat: {
      const path = rest(p, 0)
      return statReply(id, () => fs.statSync(path))
    }
    case Op.Lstat: {
      const path = rest(p, 0)
      return statReply(id, () => fs.lstatSync(path))
    }
    case Op.Open: {
      const flags = p.readUInt32LE(0)
      const mode = p.readUInt32LE(4)
      return fs.open(rest(p, 8), flags | O_NOCTTY, mode & 0o7777, (error, fd) => {
        if (error) return fail(id, error)
        let regular = false
        try {
          regular = fs.fstatSync(fd).isFile()
        } catch {}
        // the descriptor number lets the host reopen a regular file itself (see directFile.ts)
        const buffer = frame(id, Status.Ok, 8)
        buffer.writeUInt32LE(newHandle(fd, regular), HEADER)
        buffer.writeInt32LE(regular ? fd : -1, HEADER + 4)
        send(buffer)
      })
    }
    case Op.Read:
      return read(id, p)
    case Op.Write:
      return write(id, p)
    case Op.Fstat: {
      const fd = entryOf(p.readUInt32LE(0)).fd
      return statReply(id, () => fs.fstatSync(fd))
    }
    case Op.Fsetstat:
      return onHandle(p, (fd, k) => setAttributes(p, 4, fdTarget(fd), k(done(id))))
    case Op.Fsync:
      return onHandle(p, (fd, k) => fs.fsync(fd, k(done(id))))
    case Op.Close:
      return close(id, p)
    case Op.Readdir:
      return readDirectory(id, rest(p, 0))
    case Op.Mkdir:
      return fs.mkdir(rest(p, 4), { mode: p.readUInt32LE(0) & 0o7777 }, done(id))
    case Op.Rmdir:
      return fs.rmdir(rest(p, 0), done(id))
    case Op.Unlink:
      return fs.unlink(rest(p, 0), done(id))
    case Op.Rename: {
      const [from, to] = twoStrings(p, 4)
      return (p.readUInt32LE(0) & 1) === 1 ? fs.rename(from, to, done(id)) : renameNoReplace(from, to, done(id))
    }
    case Op.Realpath:
      return realPath(id, rest(p, 0))
    case Op.Readlink:
      return fs.readlink(rest(p, 0), (error, target) => error ? fail(id, error) : okString(id, target))
    case Op.Symlink: {
      const [target, path] = twoStrings(p, 0)
      return fs.symlink(target, path, done(id))
    }
    case Op.Link: {
      const [existing, path] = twoStrings(p, 0)
      return fs.link(existing, path, done(id))
    }
    case Op.Setstat:
      return setAttributes(p, 0, pathTarget(rest(p, SETATTRS)), done(id))
    case Op.Statfs:
      return fs.statfs(rest(p, 0), (error, s) => {
        if (error) return fail(id, error)
        const buffer = frame(id, Status.Ok, 7 * 8)
        const values = [s.type, s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree]
        values.forEach((value, i) => buffer.writeDoubleLE(Number(value), HEADER + i * 8))
        send(buffer)
      })
    case Op.Connect:
      return connect(id, p)
    default:
      throw errno("ENOSYS", "unknown operation " + op)
  }
}

const onFrame = (id, op, payload) => {
  if (op >= Op.StreamData) {
    try {
      onStream(id, op, payload)
    } catch {}
    return
  }
  try {
    dispatch(id, op, payload)
  } catch (error) {
    // a synchronous failure: a bad argument (NUL in a path, a bad handle or offset, a short payload)
    fail(id, error instanceof RangeError && error.code === undefined ? errno("EINVAL", error.message) : error)
  }
}

`
