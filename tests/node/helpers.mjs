// Shared by the scripts that drive the official clients against a running server.

/** Resolve with `check()`'s first truthy value; reject after `ms`. */
export async function waitFor(check, what, ms = 30000) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function within(promise, what, ms = 30000) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export const byId = (rows) => [...rows].sort((a, b) => a.id - b.id)

/** A fetch that records every URL it is asked for, in `urls`. */
export function recordingFetch() {
  const urls = []
  const fetchClient = (input, init) => {
    urls.push(String(input instanceof Request ? input.url : input))
    return fetch(input, init)
  }
  return { urls, fetchClient }
}
