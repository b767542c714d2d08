"""A small HTTP/1.1 server on a raw asyncio Protocol with httptools.

Why not an ASGI server: the data plane's hot path is one small append per request, and a
framework costs 2-2.5x the CPU per request of a raw Protocol (docs/benchmarks.md and the
measurements in ARCHITECTURE.md). This module knows HTTP framing only; what a request
means is decided by the handler it is given.

Per connection, requests are answered strictly in order (pipelining is allowed); a
request's handler task is cancelled when the client goes away, which is how long-polls
and SSE streams learn of a disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import httptools

from fusebox.http.messages import Request, Response

log = logging.getLogger("fusebox.http")

Handler = Callable[[Request], Awaitable[Response]]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_BODY_SLICE = 256 * 1024


# Most response headers repeat on every response (security headers, CORS, content
# types): their encoded lines are kept, up to a bound, so each is encoded once.
_header_lines: dict[tuple[str, str], bytes] = {}
_HEADER_CACHE_LIMIT = 4096


def _encode_header(header: tuple[str, str]) -> bytes:
    name, value = header
    line = b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
    if len(_header_lines) < _HEADER_CACHE_LIMIT:
        _header_lines[header] = line
    return line


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


class ServerLimits:
    """Limits that protect the server from a single client."""

    def __init__(self, max_body_bytes: int = 64 * 1024 * 1024, max_queued: int = 64) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_queued = max_queued


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_closing",
        "_current",
        "_handler",
        "_headers",
        "_limits",
        "_loop",
        "_on_close",
        "_on_open",
        "_oversize",
        "_parser",
        "_queue",
        "_reading_paused",
        "_rejected",
        "_transport",
        "_url",
        "_write_ready",
    )

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        on_open: Callable[[_Connection], None],
        on_close: Callable[[_Connection], None],
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Request | Response] = deque()
        self._current: asyncio.Task[None] | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._oversize = False
        self._closing = False
        self._rejected = False
        self._write_ready: asyncio.Event | None = None
        self._reading_paused = False
        self._on_open = on_open
        self._on_close = on_close

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._on_open(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._transport = None
        self._queue.clear()
        if self._current is not None:
            self._current.cancel()
        if self._write_ready is not None:
            self._write_ready.set()
        self._on_close(self)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # the connection is being closed after an error answer
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        if self._write_ready is None:
            self._write_ready = asyncio.Event()
        self._write_ready.clear()

    def resume_writing(self) -> None:
        if self._write_ready is not None:
            self._write_ready.set()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._oversize = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        # Repeated headers fold into one comma-separated value, as RFC 9110 allows.
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limits.max_body_bytes:
            self._oversize = True
        expects_continue = self._headers.get("expect", "").lower() == "100-continue"
        if expects_continue and not self._oversize and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._oversize:
            return
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            # Chunked bodies announce no length: the limit is enforced as they arrive.
            self._oversize = True
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._oversize:
            limit = self._limits.max_body_bytes
            self._queue.append(_error(413, f"request body exceeds the {limit}-byte limit"))
            self._schedule()
            return
        if self._parser.should_upgrade():
            return  # answered with 400 by the upgrade error that follows
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = self._parser.get_method().decode("ascii", "replace")
        request = Request(method, path, query, self._headers, body)
        if not self._parser.should_keep_alive():
            request.headers["connection"] = "close"
        self._queue.append(request)
        self._schedule()

    # -- request processing -----------------------------------------------------------

    def _schedule(self) -> None:
        if len(self._queue) >= self._limits.max_queued and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        if self._current is None:
            self._current = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue and self._transport is not None:
                item = self._queue.popleft()
                if isinstance(item, Response):
                    await self._send(item, head=False, close=True)
                    self._close()
                    return
                keep_alive = item.headers.get("connection", "").lower() != "close"
                try:
                    response = await self._handler(item)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("unhandled error answering %s %s", item.method, item.raw_path)
                    response = _error(500, "internal server error")
                await self._send(response, head=item.method == "HEAD", close=not keep_alive)
                if not keep_alive:
                    self._close()
                    return
                if self._reading_paused and self._transport is not None:
                    self._reading_paused = False
                    self._transport.resume_reading()
        except asyncio.CancelledError:
            pass
        finally:
            self._current = None

    async def _send(self, response: Response, head: bool, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        parts = [_status_line(response.status)]
        for header in response.headers:
            line = _header_lines.get(header)
            if line is None:
                line = _encode_header(header)
            parts.append(line)
        if close:
            parts.append(b"connection: close\r\n")
        status = response.status
        if response.stream is not None and not head:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
            transport.write(b"".join(parts))
            await self._send_stream(response)
            return
        if status not in _NO_BODY_STATUSES:
            parts.append(b"content-length: %d\r\n" % len(response.body))
        parts.append(b"\r\n")
        if head or status in _NO_BODY_STATUSES or not response.body:
            transport.write(b"".join(parts))
        elif len(response.body) < 65536:
            parts.append(response.body)
            transport.write(b"".join(parts))
        else:
            transport.write(b"".join(parts))
            # In slices, waiting while the transport is paused: what the socket does not take
            # at once is copied into the transport's buffer, and a body of megabytes written
            # whole was copied almost entirely (twice: sliced, then buffered).
            body = memoryview(response.body)
            for start in range(0, len(body), _BODY_SLICE):
                if self._transport is None:
                    return
                transport.write(body[start : start + _BODY_SLICE])
                if self._write_ready is not None and not self._write_ready.is_set():
                    await self._write_ready.wait()
        if self._write_ready is not None and not self._write_ready.is_set():
            await self._write_ready.wait()

    async def _send_stream(self, response: Response) -> None:
        assert response.stream is not None
        try:
            async for chunk in response.stream:
                if self._transport is None:
                    return
                if chunk:
                    self._transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self._write_ready is not None and not self._write_ready.is_set():
                    await self._write_ready.wait()
            if self._transport is not None:
                self._transport.write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            raise
        except Exception:
            # Headers are out: the only honest signal left is to cut the connection.
            log.exception("streaming response failed")
            self._close()
        finally:
            aclose = getattr(response.stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _reject(self, status: int, message: str) -> None:
        """Answer an unparseable request after those before it, then close."""
        self._rejected = True
        if self._transport is None:
            return
        self._queue = deque(item for item in self._queue if isinstance(item, Request))
        self._queue.append(_error(status, message))
        if self._current is None:
            self._current = self._loop.create_task(self._drain())

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def shutdown(self) -> None:
        """Close the connection now; used when the server stops."""
        if self._current is not None:
            self._current.cancel()
        self._close()


def _error(status: int, message: str) -> Response:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (
        HTTPStatus(status).name.encode(),
        message.replace('"', "'").encode(),
    )
    return Response(
        status,
        [("content-type", "application/json"), ("x-content-type-options", "nosniff")],
        body,
    )


class HttpServer:
    """Serves one handler on one address; `stop` closes every open connection."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self._handler = handler
        self._limits = limits or ServerLimits()
        self._connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int, backlog: int = 4096) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(
                self._handler, self._limits, self._connections.add, self._connections.discard
            ),
            host,
            port,
            backlog=backlog,
            reuse_address=True,
        )
        sock = self._server.sockets[0]
        return sock.getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.shutdown()
        if self._server is not None:
            await self._server.wait_closed()
