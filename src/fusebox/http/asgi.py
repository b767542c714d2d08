"""Serving an ASGI application (the admin API) from the raw HTTP server.

The data plane and the admin API share one port. The admin API is a FastAPI app; this
adapter runs it per request with a buffered body, which is all an API of small JSON
documents needs. Lifespan events are run by `AsgiMount.startup` / `shutdown`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fusebox.http.messages import Request, Response

log = logging.getLogger("fusebox.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class AsgiMount:
    def __init__(self, app: App, server: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.app = app
        self.server = server
        self._lifespan: asyncio.Task[None] | None = None
        self._lifespan_queue: asyncio.Queue[Message] = asyncio.Queue()

    async def handle(self, request: Request) -> Response:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ]
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.raw_path.encode("latin-1"),
            "query_string": request.query_string.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "server": self.server,
            "client": ("127.0.0.1", 0),
        }
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect signal: the request is buffered
            return {"type": "http.disconnect"}

        status = 500
        response_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    key = name.decode("latin-1").lower()
                    if key not in ("content-length", "transfer-encoding", "connection"):
                        response_headers.append((key, value.decode("latin-1")))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        except Exception:
            # Starlette sends its own 500 and then re-raises; answer with what it sent (or a
            # 500 of our own), and do not let the error reach the HTTP server a second time.
            log.exception("admin API error on %s %s", request.method, request.path)
            if not response_headers:
                return Response(
                    500,
                    [("content-type", "application/json")],
                    b'{"error":{"code":"internal_error","message":"internal server error"}}',
                )
        return Response(status, response_headers, b"".join(chunks))

    async def startup(self) -> None:
        """Run the app's lifespan startup, if it has one."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        async def receive() -> Message:
            return await self._lifespan_queue.get()

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete" and not started.done():
                started.set_result(None)
            elif kind == "lifespan.startup.failed" and not started.done():
                started.set_exception(RuntimeError(message.get("message", "startup failed")))

        async def run() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
            except Exception:
                # Apps without lifespan support raise here; that is not a failure.
                if not started.done():
                    started.set_result(None)

        self._lifespan = loop.create_task(run())
        await self._lifespan_queue.put({"type": "lifespan.startup"})
        await started

    async def shutdown(self) -> None:
        if self._lifespan is None:
            return
        await self._lifespan_queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._lifespan, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            self._lifespan.cancel()
