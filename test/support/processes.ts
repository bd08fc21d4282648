import * as Effect from "effect/Effect"
import * as fs from "node:fs"

export interface ProcessInfo {
  readonly pid: number
  readonly ppid: number
  readonly args: string
}

const readProcess = (pid: number): ProcessInfo | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    if (state[0] === "Z") return undefined
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "").join(" ")
    return { pid, ppid: Number(state[1]), args }
  } catch {
    return undefined
  }
}

/** Every live (non-zombie) process on the host. */
export const allProcesses = (): Array<ProcessInfo> =>
  fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name)).map(Number).map(readProcess).filter(
    (p): p is ProcessInfo => p !== undefined
  )

/** Live descendants of `root`, read from /proc. */
export const descendants = (root: number): Effect.Effect<Array<ProcessInfo>> =>
  Effect.sync(() => {
    const all = allProcesses()
    const result: Array<ProcessInfo> = []
    const frontier = [root]
    while (frontier.length > 0) {
      const parent = frontier.pop()!
      for (const p of all) {
        if (p.ppid === parent) {
          result.push(p)
          frontier.push(p.pid)
        }
      }
    }
    return result
  })

/** Whether `pid` names a live, non-zombie process. */
export const processAlive = (pid: number): Effect.Effect<boolean> => Effect.sync(() => readProcess(pid) !== undefined)
