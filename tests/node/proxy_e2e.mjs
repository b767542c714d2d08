// The official @electric-sql/client through examples/proxy.py, as a browser app would use
// it: only `table` in its params, no source_id and no secret. Run by
// tests/test_shape_proxy.py, which checks the JSON this prints: the initial rows, the rows
// after a live insert (over long-poll and over SSE), and every URL the client asked for.
import { Shape, ShapeStream } from "@electric-sql/client"
import pg from "pg"
import { byId, recordingFetch, waitFor, within } from "./helpers.mjs"

const { PROXY_URL, DATABASE_URL, TABLE } = process.env
for (const [name, value] of Object.entries({ PROXY_URL, DATABASE_URL, TABLE })) {
  if (!value) throw new Error(`${name} is not set`)
}

async function main() {
  const db = new pg.Client({ connectionString: DATABASE_URL })
  await db.connect()
  const { urls, fetchClient } = recordingFetch()
  try {
    const polling = new Shape(
      new ShapeStream({ url: PROXY_URL, params: { table: TABLE }, fetchClient }),
    )
    const sse = new Shape(
      new ShapeStream({ url: PROXY_URL, params: { table: TABLE }, liveSse: true, fetchClient }),
    )
    const initial = byId(await within(polling.rows, "the initial rows"))
    const initialSse = byId(await within(sse.rows, "the initial rows over SSE"))

    await db.query(`INSERT INTO ${TABLE} (id, title) VALUES (3, 'inserted live')`)
    await waitFor(() => polling.currentRows.length === 3, "the live insert (long-poll)")
    await waitFor(() => sse.currentRows.length === 3, "the live insert (SSE)")
    const result = {
      initial,
      initialSse,
      live: byId(polling.currentRows),
      liveSse: byId(sse.currentRows),
      urls,
    }
    polling.unsubscribeAll()
    sse.unsubscribeAll()
    console.log(JSON.stringify(result))
  } finally {
    await db.end()
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error?.stack ?? String(error))
    process.exit(1)
  },
)
