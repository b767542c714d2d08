// The official @electric-sql/client (ShapeStream and Shape) against `fusebox sync serve`.
// ELECTRIC_URL is the shape endpoint and DATABASE_URL the Postgres it replicates; both are
// set by tests/test_sync_client.py, which starts the server and a real Postgres.
import { Shape, ShapeStream } from "@electric-sql/client"
import pg from "pg"
import { afterAll, beforeAll, describe, expect, test } from "vitest"

const url = process.env.ELECTRIC_URL
const secret = process.env.ELECTRIC_SECRET
const db = new pg.Client({ connectionString: process.env.DATABASE_URL })
let tableNumber = 0

beforeAll(async () => {
  await db.connect()
})
afterAll(async () => {
  await db.end()
})

async function newTable(rows = []) {
  tableNumber += 1
  const name = `items_${Date.now()}_${tableNumber}`
  await db.query(
    `CREATE TABLE ${name} (id int PRIMARY KEY, title text NOT NULL, n int, tags text[], meta jsonb)`,
  )
  for (const [id, title, n] of rows) {
    await db.query(`INSERT INTO ${name} (id, title, n) VALUES ($1, $2, $3)`, [id, title, n])
  }
  return name
}

function stream(table, options = {}) {
  const { params = {}, ...rest } = options
  return new ShapeStream({ url, params: { table, secret, ...params }, ...rest })
}

async function waitFor(check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs
  let last
  while (Date.now() < deadline) {
    try {
      last = await check()
      if (last) return last
    } catch (error) {
      last = error
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`condition not met in time: ${last}`)
}

function rowsOf(shape) {
  return [...shape.currentRows].sort((a, b) => a.id - b.id)
}

describe(`ShapeStream and Shape against Fusebox`, () => {
  test(`initial sync returns every row with parsed types`, async () => {
    const table = await newTable([
      [1, `one`, 1],
      [2, `two`, 2],
      [3, `three`, null],
    ])
    const shape = new Shape(stream(table))
    const rows = await shape.rows
    expect(rows.sort((a, b) => a.id - b.id)).toEqual([
      { id: 1, title: `one`, n: 1, tags: null, meta: null },
      { id: 2, title: `two`, n: 2, tags: null, meta: null },
      { id: 3, title: `three`, n: null, tags: null, meta: null },
    ])
    shape.unsubscribeAll()
  })

  test(`live inserts, updates and deletes arrive`, async () => {
    const table = await newTable([[1, `one`, 1]])
    const shape = new Shape(stream(table))
    await shape.rows
    await db.query(`INSERT INTO ${table} (id, title, n, tags, meta) VALUES (2, 'two', 2, '{a,b}', '{"k": 1}')`)
    await db.query(`UPDATE ${table} SET title = 'uno' WHERE id = 1`)
    await waitFor(() => rowsOf(shape).length === 2 && rowsOf(shape)[0].title === `uno`)
    expect(rowsOf(shape)[1]).toEqual({ id: 2, title: `two`, n: 2, tags: [`a`, `b`], meta: { k: 1 } })
    await db.query(`DELETE FROM ${table} WHERE id = 1`)
    await waitFor(() => rowsOf(shape).length === 1)
    expect(rowsOf(shape)).toEqual([{ id: 2, title: `two`, n: 2, tags: [`a`, `b`], meta: { k: 1 } }])
    shape.unsubscribeAll()
  })

  test(`where with params: rows move in and out`, async () => {
    const table = await newTable([
      [1, `low`, 1],
      [2, `high`, 10],
    ])
    const shape = new Shape(stream(table, { params: { where: `n > $1`, params: { 1: `5` } } }))
    expect((await shape.rows).map((r) => r.id)).toEqual([2])
    await db.query(`UPDATE ${table} SET n = 7 WHERE id = 1`)
    await waitFor(() => rowsOf(shape).length === 2)
    await db.query(`UPDATE ${table} SET n = 0 WHERE id = 2`)
    await waitFor(() => rowsOf(shape).length === 1 && rowsOf(shape)[0].id === 1)
    await db.query(`INSERT INTO ${table} (id, title, n) VALUES (3, 'three', 3)`)
    await db.query(`INSERT INTO ${table} (id, title, n) VALUES (4, 'four', 40)`)
    await waitFor(() => rowsOf(shape).map((r) => r.id).join() === `1,4`)
    shape.unsubscribeAll()
  })

  test(`columns narrow the rows`, async () => {
    const table = await newTable([[1, `one`, 1]])
    const shape = new Shape(stream(table, { params: { columns: [`id`, `title`] } }))
    expect(await shape.rows).toEqual([{ id: 1, title: `one` }])
    await db.query(`UPDATE ${table} SET title = 'uno', n = 5 WHERE id = 1`)
    await waitFor(() => rowsOf(shape)[0].title === `uno`)
    expect(rowsOf(shape)).toEqual([{ id: 1, title: `uno` }])
    shape.unsubscribeAll()
  })

  test(`replica full sends whole rows and old values`, async () => {
    const table = await newTable([[1, `one`, 1]])
    const messages = []
    const shapeStream = stream(table, { params: { replica: `full` } })
    const unsubscribe = shapeStream.subscribe((batch) => messages.push(...batch))
    await waitFor(() => messages.some((m) => m.headers?.control === `up-to-date`))
    await db.query(`UPDATE ${table} SET n = 2 WHERE id = 1`)
    const update = await waitFor(() => messages.find((m) => m.headers?.operation === `update`))
    expect(update.value).toEqual({ id: 1, title: `one`, n: 2, tags: null, meta: null })
    expect(update.old_value).toEqual({ n: 1 })
    unsubscribe()
  })

  test(`SSE live mode delivers changes`, async () => {
    const table = await newTable([[1, `one`, 1]])
    const shape = new Shape(stream(table, { liveSse: true }))
    await shape.rows
    await db.query(`INSERT INTO ${table} (id, title, n) VALUES (2, 'two', 2)`)
    await waitFor(() => rowsOf(shape).length === 2)
    await db.query(`DELETE FROM ${table} WHERE id = 1`)
    await waitFor(() => rowsOf(shape).length === 1)
    shape.unsubscribeAll()
  })

  test(`resumes from a saved handle and offset`, async () => {
    const table = await newTable([[1, `one`, 1]])
    const first = stream(table)
    const seen = []
    const unsubscribe = first.subscribe((batch) => seen.push(...batch))
    await waitFor(() => seen.some((m) => m.headers?.control === `up-to-date`))
    unsubscribe()
    const handle = first.shapeHandle
    const offset = first.lastOffset
    expect(handle).toBeTruthy()
    await db.query(`INSERT INTO ${table} (id, title, n) VALUES (2, 'two', 2)`)
    const resumed = stream(table, { handle, offset })
    const later = []
    const stop = resumed.subscribe((batch) => later.push(...batch))
    await waitFor(() => later.some((m) => m.headers?.operation === `insert`))
    const inserts = later.filter((m) => m.headers?.operation === `insert`)
    expect(inserts.map((m) => m.value.id)).toEqual([2])
    stop()
  })

  test(`recovers from 409 must-refetch after a TRUNCATE`, async () => {
    const table = await newTable([
      [1, `one`, 1],
      [2, `two`, 2],
    ])
    const shape = new Shape(stream(table))
    expect((await shape.rows).length).toBe(2)
    await db.query(`TRUNCATE ${table}`)
    await db.query(`INSERT INTO ${table} (id, title, n) VALUES (3, 'three', 3)`)
    await waitFor(() => rowsOf(shape).map((r) => r.id).join() === `3`, 30000)
    shape.unsubscribeAll()
  })

  test(`many concurrent shapes each get their own rows`, async () => {
    const table = await newTable(Array.from({ length: 40 }, (_, i) => [i, `row ${i}`, i % 20]))
    const shapes = Array.from(
      { length: 20 },
      (_, k) => new Shape(stream(table, { params: { where: `n = ${k}` } })),
    )
    const all = await Promise.all(shapes.map((s) => s.rows))
    all.forEach((rows, k) => {
      expect(rows.map((r) => r.id).sort((a, b) => a - b)).toEqual([k, k + 20])
    })
    await db.query(`UPDATE ${table} SET n = 0 WHERE id = 1`)
    await waitFor(() => rowsOf(shapes[0]).length === 3 && rowsOf(shapes[1]).length === 1)
    shapes.forEach((s) => s.unsubscribeAll())
  })

  test(`subset snapshots (GET and POST) narrow, order and page the shape`, async () => {
    const table = await newTable(Array.from({ length: 10 }, (_, i) => [i, `row ${i}`, i]))
    const shapeStream = stream(table, { params: { where: `n >= 2` } })
    const seen = []
    const unsubscribe = shapeStream.subscribe((batch) => seen.push(...batch))
    await waitFor(() => seen.some((m) => m.headers?.control === `up-to-date`))
    for (const method of [`GET`, `POST`]) {
      const { metadata, data } = await shapeStream.fetchSnapshot({
        where: `n < $1`,
        params: { 1: `7` },
        orderBy: `id DESC`,
        limit: 3,
        offset: 1,
        method,
      })
      expect(data.map((m) => m.value.id)).toEqual([5, 4, 3])
      expect(typeof metadata.snapshot_mark).toBe(`number`)
      expect(data.every((m) => m.headers.operation === `insert`)).toBe(true)
    }
    unsubscribe()
  })
})
