import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "examples/**/*.test.ts"],
    // The Docker suite needs a private engine: `npm run test:docker` starts one and sets the socket.
    exclude: process.env.SANDBOX_SSH_DOCKER_SOCKET ? ["**/node_modules/**"] : ["**/node_modules/**", "test/docker/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    fileParallelism: true,
    maxWorkers: 2
  }
})
