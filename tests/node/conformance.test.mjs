// The official Durable Streams server conformance suite, against the server at
// CONFORMANCE_TEST_URL (started by tests/run_conformance.py).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL,
  longPollTimeoutMs: Number(process.env.CONFORMANCE_LONG_POLL_MS ?? 500),
  subscriptions: process.env.CONFORMANCE_SUBSCRIPTIONS !== "0",
})
