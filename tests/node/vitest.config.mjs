import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    testTimeout: 30000,
    hookTimeout: 30000,
    // The suite's tests share one server; running files in one worker keeps load even.
    fileParallelism: false,
  },
})
