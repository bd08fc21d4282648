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
import * as Procfs from "../procfs.js"
import { signalName, signalNumber } from "../signals.js"

/** @internal */
export { signalName, signalNumber }

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

/**
 * SIGKILLs the group led by `pid` and every descendant of `pid` (including those that moved to
 * groups of their own). Never throws.
 *
 * @internal
 */
export const killTree = (pid: number): void => {
  if (pid <= 1) return
  const tree = Procfs.descendants(pid)
  trySignal(-pid, "SIGKILL")
  for (const p of tree) trySignal(p, "SIGKILL")
}

/** @internal */
export const startTime = Procfs.startTime

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

/** @internal */
export const groupHasMembers = Procfs.groupHasMembers

/** Whether `/proc/<pid>` of the daemon's processes is visible here (a daemon on this host). @internal */
export const visible = (pid: number): boolean => pid > 0 && Fs.existsSync(`/proc/${pid}`)
