// The official @electric-sql/client against `fusebox serve`, as an app on Electric Cloud
// uses it: the shape endpoint with `source_id` and `secret` params. Run by
// tests/test_platform_e2e.py, which makes the source through the CLI and checks the JSON
// this prints: the initial rows, the rows after a live insert, and what a wrong secret gets.
import { Shape, ShapeStream } from "@electric-sql/client"
import pg from "pg"
import { byId, recordingFetch, waitFor, within } from "./helpers.mjs"

const { ELECTRIC_URL, SOURCE_ID, SOURCE_SECRET, DATABASE_URL, TABLE } = process.env
for (const [name, value] of Object.entries({ ELECTRIC_URL, SOURCE_ID, SOURCE_SECRET, DATABASE_URL, TABLE })) {
  if (!value) throw new Error(`${name} is not set`)
}


async function main() {
  const db = new pg.Client({ connectionString: DATABASE_URL })
  await db.connect()
  const { urls, fetchClient } = recordingFetch()
  try {
    const stream = new ShapeStream({
      url: ELECTRIC_URL,
      params: { table: TABLE, source_id: SOURCE_ID, secret: SOURCE_SECRET },
      fetchClient,
    })
    const shape = new Shape(stream)
    const initial = byId(await within(shape.rows, "the initial rows"))

    await db.query(`INSERT INTO ${TABLE} (id, title) VALUES (3, 'inserted live')`)
    await waitFor(() => shape.currentRows.length === 3, "the live insert")
    const live = byId(shape.currentRows)
    shape.unsubscribeAll()

    // A wrong secret: the client is told 401 and gets no rows.
    const refused = await within(
      new Promise((resolve) => {
        const wrong = new ShapeStream({
          url: ELECTRIC_URL,
          params: { table: TABLE, source_id: SOURCE_ID, secret: `${SOURCE_SECRET}x` },
          onError: (error) => {
            resolve({ status: error.status ?? null, message: String(error.message ?? error) })
          },
        })
        wrong.subscribe(
          (messages) => {
            if (messages.some((m) => "value" in m)) resolve({ status: 200, message: "rows!" })
          },
          () => {},
        )
      }),
      "the wrong secret's answer",
    )

    const shapeUrls = urls.map((u) => new URL(u))
    const result = {
      initial,
      live,
      refused,
      sourceIds: [...new Set(shapeUrls.map((u) => u.searchParams.get("source_id")))],
      livePolls: shapeUrls.filter((u) => u.searchParams.get("live") === "true").length,
    }
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
