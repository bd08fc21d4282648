/**
 * Process-tree helpers over the host's `/proc`. All pids here are host pids.
 *
 * @internal
 */
import * as Fs from "node:fs"

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

/** The process and all its descendants, parents first. @internal */
export const descendants = (pid: number): Array<number> => {
  const seen = new Set<number>()
  const queue = [pid]
  while (queue.length > 0) {
    const next = queue.shift()!
    if (seen.has(next)) continue
    seen.add(next)
    queue.push(...children(next))
  }
  return [...seen]
}

/** `[pgid, sid]` of a process, or undefined when it is gone. @internal */
export const groupOf = (pid: number): readonly [pgid: number, sid: number] | undefined => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // the command name may contain spaces and parentheses: fields start after the last ")"
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return [Number(fields[2]), Number(fields[3])]
  } catch {
    return undefined
  }
}

const ownGroup = groupOf(process.pid)?.[0] ?? process.pid

/** @internal */
export const isAlive = (pid: number): boolean => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

const trySignal = (target: number, signal: NodeJS.Signals): boolean => {
  try {
    process.kill(target, signal)
    return true
  } catch {
    return false
  }
}

/**
 * Signals a process, every descendant still attached to it, and every process group any of them
 * leads or belongs to (except the host program's own group). Never throws.
 *
 * @internal
 */
export const signalTree = (pid: number, signal: NodeJS.Signals): void => {
  const pids = descendants(pid)
  const groups = new Set<number>()
  for (const p of pids) {
    const group = groupOf(p)
    if (group !== undefined && group[0] > 1 && group[0] !== ownGroup) groups.add(group[0])
  }
  for (const group of groups) trySignal(-group, signal)
  for (const p of pids) trySignal(p, signal)
}

/** Signals a process group, or the process alone when it leads none. @internal */
export const signalGroup = (pid: number, signal: NodeJS.Signals): boolean =>
  trySignal(-pid, signal) || trySignal(pid, signal)

/** Start time of a process in clock ticks since boot, or undefined when it is gone. @internal */
export const startTime = (pid: number): number | undefined => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19])
  } catch {
    return undefined
  }
}

/**
 * Kills (SIGKILL) every process of the given process groups (`pgid → start time of its leader`)
 * that started no earlier than its leader. A group id is not reused while any process is in the
 * group; callers forget groups that emptied, so only a group that emptied and had its id reused
 * within the sandbox's lifetime (a pid wrap-around) could be hit by mistake. Never throws.
 *
 * @internal
 */
export const killGroups = (groups: ReadonlyMap<number, number>): void => {
  if (groups.size === 0) return
  let entries: Array<string>
  try {
    entries = Fs.readdirSync("/proc")
  } catch {
    return
  }
  for (const entry of entries) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || entry === "") continue
    const group = groupOf(pid)
    if (group === undefined || group[0] === ownGroup) continue
    const since = groups.get(group[0])
    if (since === undefined) continue
    const started = startTime(pid)
    if (started !== undefined && started >= since) trySignal(pid, "SIGKILL")
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
