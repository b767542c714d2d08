// The Node reference server, @durable-streams/server 0.3.7, file-backed, for benchmarks.
//
//   node bench/node_reference_server.mjs --port 4438 --data-dir /tmp/ds --long-poll-timeout-ms 120000
//
// The package is resolved from tests/node/node_modules (run `npm ci` in tests/node first).
//
// Fairness change: DurableStreamTestServer builds its FileBackedStreamStore with the default
// pool of 100 file handles and offers no option to change it. With appends spread over
// 1,000 streams, handles are evicted between the write and the fdatasync, the sync fails
// ("Cannot fsync: handle not found") and the server answers 404 to most appends. So the
// server is constructed in-memory and its store is swapped, before start(), for
// `new FileBackedStreamStore({dataDir, maxFileHandles: 2000})`. Everything else (routing,
// long-poll, reads, LMDB metadata, fdatasync per append) is the package's own code.
//
// Prints one line `READY <url> <pid>` on stdout once listening; stops on SIGTERM/SIGINT.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "tests", "node", "package.json"));
const { DurableStreamTestServer, FileBackedStreamStore } = require("@durable-streams/server");

function parseArgs(argv) {
  const options = { port: 4438, host: "127.0.0.1", dataDir: null, longPollTimeoutMs: 30000 };
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    const value = argv[i + 1];
    if (name === "--port") options.port = Number(value);
    else if (name === "--host") options.host = value;
    else if (name === "--data-dir") options.dataDir = value;
    else if (name === "--long-poll-timeout-ms") options.longPollTimeoutMs = Number(value);
    else throw new Error(`unknown argument ${name}`);
    i += 1;
  }
  if (!options.dataDir) throw new Error("--data-dir is required");
  if (options.host !== "127.0.0.1" && options.host !== "localhost" && options.host !== "::1") {
    throw new Error("benchmarks only listen on loopback");
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
const server = new DurableStreamTestServer({
  port: options.port,
  host: options.host,
  longPollTimeout: options.longPollTimeoutMs,
});
// Swap the in-memory store for a file-backed one with a large enough handle pool.
server.store = new FileBackedStreamStore({ dataDir: options.dataDir, maxFileHandles: 2000 });
server.options.dataDir = options.dataDir;

const url = await server.start();
process.stdout.write(`READY ${url} ${process.pid}\n`);

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  // server.stop() waits for every keep-alive connection to end; do not wait forever.
  const timer = setTimeout(() => process.exit(0), 5000);
  try {
    if ("cancelAllWaits" in server.store) server.store.cancelAllWaits();
    server.server?.closeAllConnections?.();
    await server.stop();
  } catch (err) {
    process.stderr.write(`stop failed: ${err}\n`);
  }
  clearTimeout(timer);
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
