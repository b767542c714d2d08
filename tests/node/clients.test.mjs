// The official TypeScript client, @durable-streams/client, against the Fusebox server at
// STREAMS_URL (started by tests/test_ts_client.py): create, append, catch-up, long-poll,
// SSE (text, JSON and base64-encoded binary), streaming appends and idempotent producers.
import { randomUUID } from "node:crypto"
import { describe, expect, it } from "vitest"
import {
  DurableStream,
  IdempotentProducer,
  stream,
} from "@durable-streams/client"

const BASE = process.env.STREAMS_URL
if (!BASE) throw new Error("STREAMS_URL is not set")

const newUrl = (prefix = "ts") => `${BASE}/v1/stream/${prefix}-${randomUUID()}`
const bytes = (...values) => new Uint8Array(values)
const concat = (chunks) => {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0))
  let at = 0
  for (const chunk of chunks) {
    out.set(chunk, at)
    at += chunk.length
  }
  return out
}
/** A fetch that records the URL of every request it makes, to check which mode was used. */
function recordingFetch() {
  const urls = []
  const wrapped = (input, init) => {
    urls.push(String(input instanceof Request ? input.url : input))
    return fetch(input, init)
  }
  return { urls, fetch: wrapped }
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolve once `predicate()` holds, polling; rejects after `ms`. */
async function until(predicate, ms = 20000) {
  const deadline = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not reached")
    await sleep(20)
  }
}

describe("catch-up", () => {
  it("creates, appends bytes and reads them back exactly", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/octet-stream" })
    const all = new Uint8Array(256).map((_, i) => i)
    await handle.append(all.slice(0, 100))
    await handle.append(all.slice(100))
    await handle.append(bytes(0, 0, 255))
    const res = await handle.stream({ live: false })
    const body = await res.body()
    expect(Array.from(body)).toEqual([...Array.from(all), 0, 0, 255])
    expect(res.upToDate).toBe(true)
    const head = await handle.head()
    expect(head.exists).toBe(true)
    expect(head.offset).toBe(res.offset)
    expect(head.streamClosed).toBe(false)
  })

  it("resumes from a returned offset", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "text/plain" })
    await handle.append("first;")
    const middle = (await handle.head()).offset
    await handle.append("second;")
    await handle.append("third")
    const res = await stream({ url, offset: middle, live: false })
    expect(await res.text()).toBe("second;third")
    const whole = await stream({ url, live: false })
    expect(await whole.text()).toBe("first;second;third")
  })

  it("creates with an initial body and is idempotent for the same config", async () => {
    const url = newUrl()
    await DurableStream.create({ url, contentType: "text/plain", body: "hello" })
    await DurableStream.create({ url, contentType: "text/plain" })
    const conflict = await DurableStream.create({ url, contentType: "application/json" }).catch(
      (e) => e,
    )
    expect(conflict.status).toBe(409)
    const res = await stream({ url, live: false })
    expect(await res.text()).toBe("hello")
  })

  it("reads JSON streams as messages", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/json" })
    await handle.append(JSON.stringify({ id: 1, text: "one" }))
    await handle.append(JSON.stringify([1, 2]))
    await handle.append(JSON.stringify("multi\nline"))
    const res = await handle.stream({ live: false })
    expect(await res.json()).toEqual([{ id: 1, text: "one" }, [1, 2], "multi\nline"])
  })

  it("batches concurrent appends without losing or reordering any", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/json" })
    await Promise.all(Array.from({ length: 100 }, (_, i) => handle.append(JSON.stringify({ i }))))
    const items = await (await handle.stream({ live: false })).json()
    expect(items.map((m) => m.i)).toEqual(Array.from({ length: 100 }, (_, i) => i))
  })

  it("streams a chunked append body", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "text/plain" })
    async function* source() {
      for (let i = 0; i < 50; i++) yield `part ${i};`
    }
    await handle.appendStream(source())
    const text = await (await handle.stream({ live: false })).text()
    expect(text).toBe(Array.from({ length: 50 }, (_, i) => `part ${i};`).join(""))
  })

  it("deletes streams", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "text/plain" })
    await handle.delete()
    expect((await DurableStream.head({ url })).exists).toBe(false)
    const error = await stream({ url, live: false }).catch((e) => e)
    expect(error.status ?? error.code).toSatisfy((v) => v === 404 || v === "NOT_FOUND")
  })
})

describe("long-poll", () => {
  it("receives an append made while it waits", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "text/plain", body: "a|" })
    const tail = (await handle.head()).offset
    // stream() resolves with the first response, which the server holds until data arrives.
    const pending = stream({ url, offset: tail, live: "long-poll" })
    await sleep(300)
    await handle.append("during")
    const res = await pending
    const reader = res.textStream().getReader()
    const first = await reader.read()
    expect(first.value).toBe("during")
    res.cancel()
    expect(await (await stream({ url, live: false })).text()).toBe("a|during")
  })

  it("follows appends until the stream is closed", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/json" })
    const recorder = recordingFetch()
    const res = await stream({ url, offset: "-1", live: "long-poll", fetch: recorder.fetch })
    const seen = []
    res.subscribeJson((batch) => {
      seen.push(...batch.items)
    })
    for (let i = 0; i < 4; i++) {
      await handle.append(JSON.stringify({ i }))
      await until(() => seen.length === i + 1)
    }
    await handle.close({ body: JSON.stringify({ last: true }) })
    await res.closed
    expect(res.streamClosed).toBe(true)
    expect(seen).toEqual([{ i: 0 }, { i: 1 }, { i: 2 }, { i: 3 }, { last: true }])
    expect(recorder.urls.some((u) => u.includes("live=long-poll"))).toBe(true)
  })
})

describe("SSE", () => {
  it("delivers text, including lines that start with spaces, live until closed", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "text/plain" })
    await handle.append("line one\n  indented\n")
    const recorder = recordingFetch()
    const res = await stream({ url, offset: "-1", live: "sse", fetch: recorder.fetch })
    let text = ""
    res.subscribeText((chunk) => {
      text += chunk.text
    })
    await until(() => text === "line one\n  indented\n")
    await handle.append(" leading space")
    await until(() => text.endsWith(" leading space"))
    await handle.close()
    await res.closed
    expect(res.streamClosed).toBe(true)
    expect(text).toBe("line one\n  indented\n leading space")
    expect(recorder.urls.some((u) => u.includes("live=sse"))).toBe(true)
  })

  it("delivers binary streams base64-encoded and decodes them exactly", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/octet-stream" })
    const all = new Uint8Array(256).map((_, i) => i)
    await handle.append(all)
    // Raw bytes 0-255 (CR, LF and invalid UTF-8 among them) survive SSE only base64-encoded.
    const recorder = recordingFetch()
    const res = await stream({ url, offset: "-1", live: "sse", fetch: recorder.fetch })
    const chunks = []
    res.subscribeBytes((chunk) => {
      chunks.push(chunk.data)
    })
    await until(() => concat(chunks).length === 256)
    await handle.append(bytes(13, 10, 13, 0, 255))
    await until(() => concat(chunks).length === 261)
    await handle.close()
    await res.closed
    expect(Array.from(concat(chunks))).toEqual([...Array.from(all), 13, 10, 13, 0, 255])
    expect(recorder.urls.some((u) => u.includes("live=sse"))).toBe(true)
  })

  it("delivers JSON messages and the close", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/json" })
    await handle.append(JSON.stringify({ k: "v" }))
    const recorder = recordingFetch()
    const res = await stream({ url, offset: "-1", live: "sse", fetch: recorder.fetch })
    const items = []
    res.subscribeJson((batch) => {
      items.push(...batch.items)
    })
    await until(() => items.length === 1)
    await handle.append(JSON.stringify({ k: "w", text: "a\nb" }))
    await until(() => items.length === 2)
    await handle.close()
    await res.closed
    expect(items).toEqual([{ k: "v" }, { k: "w", text: "a\nb" }])
    expect(recorder.urls.some((u) => u.includes("live=sse"))).toBe(true)
  })
})

describe("idempotent producer", () => {
  it("writes every message exactly once and closes the stream", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "application/json" })
    const producer = new IdempotentProducer(handle, "producer-1", { lingerMs: 1, maxInFlight: 3 })
    for (let i = 0; i < 200; i++) producer.append(JSON.stringify({ i }))
    await producer.flush()
    await producer.close(JSON.stringify({ done: true }))
    const items = await (await stream({ url, live: false })).json()
    expect(items.length).toBe(201)
    expect(items.slice(0, 200).map((m) => m.i)).toEqual(Array.from({ length: 200 }, (_, i) => i))
    expect(items[200]).toEqual({ done: true })
    expect((await handle.head()).streamClosed).toBe(true)
    const error = await handle.append(JSON.stringify({ late: true })).catch((e) => e)
    expect(error).toBeInstanceOf(Error)
    // Closing again with a body is refused with 409 and Stream-Closed: true.
    const again = await handle.close({ body: JSON.stringify({ x: 1 }) }).catch((e) => e)
    expect(again.status).toBe(409)
    expect(again.headers["stream-closed"]).toBe("true")
    // A close without a body is idempotent.
    const closed = await handle.close()
    expect(closed.finalOffset).toBe((await handle.head()).offset)
  })

  it("fences a stale epoch", async () => {
    const url = newUrl()
    const handle = await DurableStream.create({ url, contentType: "text/plain" })
    const newer = new IdempotentProducer(handle, "p", { epoch: 2 })
    newer.append("from epoch 2;")
    await newer.flush()
    const errors = []
    const stale = new IdempotentProducer(handle, "p", {
      epoch: 1,
      onError: (e) => errors.push(e),
    })
    stale.append("zombie")
    await stale.flush().catch((e) => errors.push(e))
    expect(errors.length).toBeGreaterThan(0)
    expect(await (await stream({ url, live: false })).text()).toBe("from epoch 2;")
  })
})
