"""A small Electric shape consumer for tests, following the protocol as the official client does.

    consumer = ShapeConsumer(server.url, {"table": "items", "where": "n > 3"}, secret="s")
    consumer.sync()                      # requests until up-to-date
    consumer.start()                     # or: follow live in a background thread
    consumer.wait_until(lambda rows: len(rows) == 10)
    consumer.stop()

The first request is `offset=-1`; after that every request carries the `handle` and the
`electric-offset` of the previous response, and once a response is up-to-date requests go
`live=true` with the last `electric-cursor`. Changes are applied to `rows`, a dict keyed by
message `key` (inserts set, updates merge, deletes remove). A 409 restarts from `-1` with
the handle the response names, clearing `rows`, as the official client does. A 503 is
retried after its Retry-After; a dropped connection (server killed) after a short pause,
with the same handle and offset. Every response and message is recorded, and so is every
change that does not fit the rows held (an insert of a key already there, an update or
delete of one that is not): each means a change was lost or delivered twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

Row = dict[str, str | None]


@dataclass
class Exchange:
    """One request and what came back (status, headers, messages); status 0 = no answer."""

    params: dict[str, str]
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)


class ShapeConsumer:
    def __init__(
        self,
        base_url: str,
        shape: dict[str, str],
        *,
        secret: str | None = "test-secret",
        max_retry_after: float = 5.0,
    ) -> None:
        self.url = f"{base_url}/v1/shape"
        self.shape = dict(shape)
        self.secret = secret
        self.max_retry_after = max_retry_after
        self.client = httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0))
        self.handle: str | None = None
        self.offset = "-1"
        self.cursor: str | None = None
        self.up_to_date = False
        self.rows: dict[str, Row] = {}
        self.messages: list[dict] = []
        self.exchanges: list[Exchange] = []
        self.refetches = 0
        # Inserts of keys already held, updates and deletes of keys not held.
        self.anomalies: list[str] = []
        self.lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.error: BaseException | None = None

    # -- one request --------------------------------------------------------------------

    def params(self) -> dict[str, str]:
        params = {**self.shape, "offset": self.offset}
        if self.secret is not None:
            params["secret"] = self.secret
        if self.handle is not None:
            params["handle"] = self.handle
        if self.up_to_date and self.offset != "-1":
            params["live"] = "true"
            if self.cursor is not None:
                params["cursor"] = self.cursor
        return params

    def step(self) -> Exchange:
        """Make one request and apply its answer; waits out a 503 or a lost connection."""
        params = self.params()
        try:
            response = self.client.get(self.url, params=params)
        except httpx.TransportError:
            exchange = Exchange(params, 0)
            self.exchanges.append(exchange)
            time.sleep(0.2)
            return exchange
        exchange = Exchange(params, response.status_code, dict(response.headers))
        self.exchanges.append(exchange)
        if response.status_code == 503:
            delay = float(response.headers.get("retry-after", "1"))
            time.sleep(min(delay, self.max_retry_after))
            return exchange
        if response.status_code == 409:
            exchange.messages = response.json()
            with self.lock:
                self.refetches += 1
                self.handle = response.headers.get("electric-handle")
                self.offset = "-1"
                self.cursor = None
                self.up_to_date = False
                self.rows.clear()
                self.lock.notify_all()
            return exchange
        if response.status_code != 200:
            raise AssertionError(f"{response.status_code} for {params}: {response.text}")
        exchange.messages = response.json()
        with self.lock:
            self.handle = response.headers["electric-handle"]
            self.offset = response.headers["electric-offset"]
            self.cursor = response.headers.get("electric-cursor", self.cursor)
            for message in exchange.messages:
                self._apply(message)
            self.lock.notify_all()
        return exchange

    def _apply(self, message: dict) -> None:
        self.messages.append(message)
        headers = message["headers"]
        if headers.get("control") == "up-to-date":
            self.up_to_date = True
            return
        operation = headers.get("operation")
        key = message.get("key")
        # A change that does not fit the rows held means one was lost or sent twice.
        held = key in self.rows
        if (operation == "insert" and held) or (operation in ("update", "delete") and not held):
            self.anomalies.append(
                f"{operation} of {'a held' if held else 'an absent'} key: {message}"
            )
        if operation == "insert":
            self.rows[key] = dict(message["value"])
        elif operation == "update":
            self.rows.setdefault(key, {}).update(message["value"])
        elif operation == "delete":
            self.rows.pop(key, None)

    # -- driving ------------------------------------------------------------------------

    def sync(self, timeout: float = 30.0) -> dict[str, Row]:
        """Request (non-live, then live) until a response ends up-to-date; returns rows."""
        deadline = time.monotonic() + timeout
        while True:
            exchange = self.step()
            if exchange.status == 200 and "electric-up-to-date" in exchange.headers:
                return self.rows
            if time.monotonic() > deadline:
                raise TimeoutError(f"not up-to-date after {timeout} s: {self.describe()}")

    def start(self) -> ShapeConsumer:
        """Follow the shape in a background thread until `stop()`."""

        def run() -> None:
            try:
                while not self._stopping.is_set():
                    self.step()
            except BaseException as exc:  # surfaced by wait_until and stop
                self.error = exc
                with self.lock:
                    self.lock.notify_all()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop_soon(self) -> None:
        """Ask the background thread to stop after its current request (see `stop`)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop following (waiting out a live request in flight); raises what failed it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self.client.close()
        if self.error is not None:
            raise self.error

    def wait_until(
        self, condition: Callable[[dict[str, Row]], bool], timeout: float = 30.0
    ) -> dict[str, Row]:
        """Wait (following in the background) until `condition(rows)` holds; returns a copy."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if self.error is not None:
                    raise self.error
                if condition(self.rows):
                    return {key: dict(row) for key, row in self.rows.items()}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met after {timeout} s: {self.describe()}")
                self.lock.wait(min(remaining, 0.5))

    def describe(self) -> str:
        last = self.exchanges[-3:]
        return (
            f"shape={self.shape} handle={self.handle} offset={self.offset} "
            f"rows={len(self.rows)} refetches={self.refetches} "
            f"last={[(e.status, e.params.get('offset')) for e in last]}"
        )

    def statuses(self) -> list[int]:
        return [exchange.status for exchange in self.exchanges]
