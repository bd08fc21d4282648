/**
 * Signals to processes of a container, sent from this host. The Engine API has no way to signal
 * an exec'd process (only the container's main process), but it reports the exec's host pid
 * (`/exec/{id}/json` → `Pid`), and runc starts every exec'd process as a session and process
 * group leader, so the command's whole group can be signalled from here. This needs the daemon
 * to run on this host's kernel and this process to be allowed to signal its processes (root, or
 * the daemon's own user for rootless Docker).
 *
 * @internal
 */
import * as Fs from "node:fs"
import * as Os from "node:os"

/** @internal */
export const signalNumber = (name: string): number | undefined =>
  (Os.constants.signals as Record<string, number | undefined>)[`SIG${name}`]

/** @internal */
export const signalName = (number: number): string | undefined => {
  for (const [name, value] of Object.entries(Os.constants.signals)) {
    if (value === number) return name.replace(/^SIG/, "")
  }
  return undefined
}

/** Outcome of a signal: delivered, the target is gone, or we may not signal it. @internal */
export type SignalResult = "sent" | "gone" | "denied"

const trySignal = (target: number, signal: NodeJS.Signals): SignalResult => {
  try {
    process.kill(target, signal)
    return "sent"
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM" ? "denied" : "gone"
  }
}

/**
 * Signals the process group led by `pid`, or the process alone when it leads none.
 *
 * @internal
 */
export const signalGroup = (pid: number, signal: NodeJS.Signals): SignalResult => {
  if (pid <= 1) return "gone"
  const group = trySignal(-pid, signal)
  return group === "gone" ? trySignal(pid, signal) : group
}

/** @internal */
export const children = (pid: number): Array<number> => {
  const result: Array<number> = []
  let tasks: Array<string>
  try {
    tasks = Fs.readdirSync(`/proc/${pid}/task`)
  } catch {
    return result
  }
  for (const task of tasks) {
    try {
      for (const child of Fs.readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ")) {
        const n = Number(child)
        if (child !== "" && Number.isInteger(n)) result.push(n)
      }
    } catch {
      // the task ended meanwhile
    }
  }
  return result
}

/**
 * SIGKILLs the group led by `pid` and every descendant of `pid` (including those that moved to
 * groups of their own). Never throws.
 *
 * @internal
 */
export const killTree = (pid: number): void => {
  if (pid <= 1) return
  const seen = new Set<number>()
  const queue = [pid]
  while (queue.length > 0) {
    const next = queue.shift()!
    if (seen.has(next)) continue
    seen.add(next)
    queue.push(...children(next))
  }
  trySignal(-pid, "SIGKILL")
  for (const p of seen) trySignal(p, "SIGKILL")
}

/** Start time in clock ticks since boot, or undefined when the process is gone. @internal */
export const startTime = (pid: number): number | undefined => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19])
  } catch {
    return undefined
  }
}

/**
 * SIGKILLs the groups we started (`pgid → start time of its leader`) if the leader is still the
 * process we started. Members that outlived their leader are reached through the group id. Never
 * throws.
 *
 * @internal
 */
export const killGroups = (groups: ReadonlyMap<number, number>): void => {
  for (const [group, started] of groups) {
    // started < 0: the leader had ended before we looked; its group id is not reused while the
    // group has members
    const now = startTime(group)
    if (now === undefined || started < 0 || now === started) trySignal(-group, "SIGKILL")
  }
}

/** Whether any process is in the process group. @internal */
export const groupHasMembers = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Whether `/proc/<pid>` of the daemon's processes is visible here (a daemon on this host). @internal */
export const visible = (pid: number): boolean => pid > 0 && Fs.existsSync(`/proc/${pid}`)
