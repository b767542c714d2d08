"""The Durable Streams HTTP protocol over the log engine.

This module owns HTTP semantics: header parsing and validation, status codes, caching
headers, cursors, long-poll and SSE. It never touches files; state lives in the engine.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson

from fusebox.http.messages import Request, Response
from fusebox.streams import framing
from fusebox.streams.cursor import next_cursor
from fusebox.streams.engine import AppendOutcome, Chunk, ForkSpec, Producer, StreamEngine
from fusebox.streams.errors import (
    ConfigurationConflict,
    ContentTypeConflict,
    InvalidRequest,
    ProducerSequenceGap,
    SequenceConflict,
    StaleProducerEpoch,
    StreamClosed,
    StreamError,
    StreamGone,
    StreamNotFound,
)
from fusebox.streams.model import Stream, StreamConfig
from fusebox.streams.offsets import NOW, InvalidOffset, format_offset, parse_offset
from fusebox.streams.sse import sse_response

NEXT_OFFSET = "stream-next-offset"
UP_TO_DATE = "stream-up-to-date"
CLOSED = "stream-closed"
CURSOR = "stream-cursor"

_EXPOSED = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Content-Type"
)
_ALLOWED_HEADERS = (
    "Content-Type, Authorization, If-None-Match, Stream-TTL, Stream-Expires-At, "
    "Stream-Closed, Stream-Seq, Stream-Forked-From, Stream-Fork-Offset, "
    "Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq"
)
# Sent on every response, errors included.
BASE_HEADERS = [
    ("x-content-type-options", "nosniff"),
    ("cross-origin-resource-policy", "cross-origin"),
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", _EXPOSED),
]
_PREFLIGHT_HEADERS = [
    *BASE_HEADERS,
    ("access-control-allow-methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ("access-control-allow-headers", _ALLOWED_HEADERS),
    ("access-control-max-age", "86400"),
]
CACHEABLE = "public, max-age=60, stale-while-revalidate=300"
NO_STORE = "no-store"

_TTL = re.compile(r"\A(0|[1-9][0-9]{0,15})\Z")
_COUNTER = re.compile(r"\A(0|[1-9][0-9]{0,15})\Z")
_MAX_SAFE_INTEGER = 2**53 - 1
_RFC3339 = re.compile(r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    body = orjson.dumps({"error": {"status": status, "message": message}})
    return Response(
        status,
        [*BASE_HEADERS, ("content-type", "application/json"), *(headers or [])],
        body,
    )


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _counter(name: str, value: str) -> int:
    if not _COUNTER.match(value) or int(value) > _MAX_SAFE_INTEGER:
        raise InvalidRequest(f"{name} must be a non-negative integer no larger than 2^53-1")
    return int(value)


class StreamsProtocol:
    """Serves Durable Streams below `prefix`; each stream is keyed by its full path."""

    def __init__(
        self,
        engine: StreamEngine,
        *,
        prefix: str = "/v1/stream",
        long_poll_timeout: float = 30.0,
        sse_rotation: float = 60.0,
        extra_routes: Callable[[Request, str], Awaitable[Response | None]] | None = None,
    ) -> None:
        self.engine = engine
        self.prefix = prefix.rstrip("/")
        self.long_poll_timeout = long_poll_timeout
        self.sse_rotation = sse_rotation
        self._extra_routes = extra_routes
        self._reserved = f"{self.prefix}/__ds/"

    async def handle(self, request: Request) -> Response:
        path = request.path
        if not path.startswith(self.prefix + "/") or len(path) == len(self.prefix) + 1:
            return error(404, f"no route for {path}; streams live under {self.prefix}/<name>")
        # `__ds/` is the protocol's own namespace (subscriptions), never a stream name.
        if self._extra_routes is not None and path.startswith(self._reserved):
            routed = await self._extra_routes(request, path[len(self.prefix) + 1 :])
            if routed is not None:
                return routed
        method = request.method
        try:
            if method == "GET":
                return await self._get(request, path)
            if method == "POST":
                return await self._post(request, path)
            if method == "PUT":
                return await self._put(request, path)
            if method == "HEAD":
                return self._head(path)
            if method == "DELETE":
                await self.engine.delete(path)
                return Response(204, list(BASE_HEADERS))
            if method == "OPTIONS":
                return Response(204, list(_PREFLIGHT_HEADERS))
        except StreamError as exc:
            return _error_response(exc)
        return error(
            405,
            f"method {method} is not allowed on a stream",
            [("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS")],
        )

    # -- PUT: create ----------------------------------------------------------------------

    async def _put(self, request: Request, path: str) -> Response:
        headers = request.headers
        fork = _fork_spec(headers, self.prefix)
        if fork is not None and not _within(fork.source, self.prefix):
            # Only streams this protocol serves can be forked: the engine may hold others
            # (other tenants', shape logs) that no request here may reach.
            raise StreamNotFound(f"fork source {fork.source} does not exist")
        content_type = headers.get("content-type")
        config = None
        if content_type is not None or fork is None:
            config = StreamConfig(content_type or "application/octet-stream")
            _expiry(headers, config)
        elif "stream-ttl" in headers or "stream-expires-at" in headers:
            # A fork that sets its own expiry but inherits the content type.
            source = self.engine.lookup(fork.source, touch=False)
            config = StreamConfig(source.config.content_type)
            _expiry(headers, config)
        closed = _is_true(headers.get("stream-closed"))
        stream, created = await self.engine.create(path, config, request.body, closed, fork)
        response_headers = [
            *BASE_HEADERS,
            ("content-type", stream.config.content_type),
            (NEXT_OFFSET, format_offset(stream.durable.tail)),
        ]
        if stream.durable.closed:
            response_headers.append((CLOSED, "true"))
        if created:
            host = headers.get("host", "localhost")
            response_headers.append(("location", f"http://{host}{request.raw_path}"))
            return Response(201, response_headers)
        return Response(200, response_headers)

    # -- POST: append and close -----------------------------------------------------------

    async def _post(self, request: Request, path: str) -> Response:
        headers = request.headers
        producer = _producer(headers)
        close = _is_true(headers.get("stream-closed"))
        stream = self.engine.lookup(path)
        content_type = headers.get("content-type")
        if not request.body and not close:
            raise InvalidRequest("an append needs a body (or Stream-Closed: true to close)")
        outcome = await self.engine.append(
            stream,
            request.body,
            content_type,
            close=close,
            seq=headers.get("stream-seq"),
            producer=producer,
        )
        return _append_response(outcome, wrote=bool(request.body))

    # -- HEAD -----------------------------------------------------------------------------

    def _head(self, path: str) -> Response:
        stream = self.engine.lookup(path, touch=False)
        if stream.ready is not None:
            raise StreamNotFound(f"no stream at {path}")
        config = stream.config
        headers = [
            *BASE_HEADERS,
            ("content-type", config.content_type),
            (NEXT_OFFSET, format_offset(stream.durable.tail)),
            ("cache-control", NO_STORE),
        ]
        if config.ttl is not None:
            headers.append(("stream-ttl", str(config.ttl)))
        if config.expires_at is not None:
            headers.append(("stream-expires-at", config.expires_at))
        if stream.durable.closed:
            headers.append((CLOSED, "true"))
        return Response(200, headers)

    # -- GET: catch-up, long-poll, SSE ----------------------------------------------------

    async def _get(self, request: Request, path: str) -> Response:
        query = request.query
        offsets = query.get("offset")
        live_values = query.get("live")
        live = live_values[-1] if live_values else None
        if live is not None and live not in ("long-poll", "sse"):
            raise InvalidRequest(f"live must be long-poll or sse, not {live!r}")
        if offsets is None and live is not None:
            raise InvalidRequest(f"live={live} needs an offset")
        offset_text = _single_offset(offsets)
        stream = self.engine.lookup(path)
        await self.engine.ready(stream)
        now_requested = offset_text == NOW
        position = stream.durable.tail if now_requested else _position(offset_text)
        if live == "sse":
            if position > stream.durable.tail:  # refuse now: later, headers are already sent
                raise InvalidRequest("offset is beyond the end of the stream")
            cursors = query.get("cursor")
            return sse_response(
                self.engine,
                stream,
                position,
                cursor=cursors[-1] if cursors else None,
                rotation=self.sse_rotation,
                base_headers=BASE_HEADERS,
            )
        if live == "long-poll":
            cursors = query.get("cursor")
            return await self._long_poll(stream, position, cursors[-1] if cursors else None)
        if now_requested:
            return self._now(stream)
        chunk = self.engine.read(stream, position)
        etag = _etag(stream, position, chunk)
        if request.headers.get("if-none-match") == etag:
            return Response(304, [*BASE_HEADERS, ("etag", etag), ("cache-control", CACHEABLE)])
        headers = _chunk_headers(stream, chunk)
        headers.append(("etag", etag))
        headers.append(("cache-control", CACHEABLE))
        return Response(200, headers, _body(stream, chunk.data))

    def _now(self, stream: Stream) -> Response:
        tail = stream.durable.tail
        headers = [
            *BASE_HEADERS,
            ("content-type", stream.config.content_type),
            (NEXT_OFFSET, format_offset(tail)),
            (UP_TO_DATE, "true"),
            ("cache-control", NO_STORE),
        ]
        if stream.durable.closed:
            headers.append((CLOSED, "true"))
        return Response(200, headers, framing.EMPTY_ARRAY if stream.is_json else b"")

    async def _long_poll(self, stream: Stream, position: int, cursor: str | None) -> Response:
        chunk = self.engine.read(stream, position)
        if not chunk.data and not chunk.closed:
            await self.engine.wait(stream, position, self.long_poll_timeout)
            if stream.gone:
                raise StreamGone(f"stream {stream.path} was deleted")
            chunk = self.engine.read(stream, position)
        cursor_header = (CURSOR, next_cursor(cursor))
        if not chunk.data:
            headers = [
                *BASE_HEADERS,
                (NEXT_OFFSET, format_offset(chunk.next_position)),
                (UP_TO_DATE, "true"),
                ("cache-control", NO_STORE),
            ]
            if chunk.closed:
                headers.append((CLOSED, "true"))
            else:
                headers.append(cursor_header)
            return Response(204, headers)
        headers = _chunk_headers(stream, chunk)
        headers.append(("etag", _etag(stream, position, chunk)))
        headers.append(("cache-control", CACHEABLE))
        if not chunk.closed:
            headers.append(cursor_header)
        return Response(200, headers, _body(stream, chunk.data))


# -- helpers ------------------------------------------------------------------------------


def _single_offset(values: list[str] | None) -> str:
    if values is None:
        return "-1"
    if len(values) > 1:
        raise InvalidRequest("offset was given more than once")
    value = values[0]
    if not value:
        raise InvalidRequest("offset is empty; use -1 for the beginning or now for the tail")
    return value


def _position(offset: str) -> int:
    try:
        return parse_offset(offset)
    except InvalidOffset as exc:
        raise InvalidRequest(str(exc)) from None


def _expiry(headers: dict[str, str], config: StreamConfig) -> None:
    ttl = headers.get("stream-ttl")
    expires_at = headers.get("stream-expires-at")
    if ttl is not None and expires_at is not None:
        raise InvalidRequest("send Stream-TTL or Stream-Expires-At, not both")
    if ttl is not None:
        if not _TTL.match(ttl):
            raise InvalidRequest("Stream-TTL must be a whole number of seconds, like 3600")
        config.ttl = int(ttl)
    if expires_at is not None:
        config.expires_at = expires_at
        config.expires_ts = _parse_timestamp(expires_at)


def _parse_timestamp(text: str) -> float:
    if not _RFC3339.match(text):
        raise InvalidRequest("Stream-Expires-At must be an RFC 3339 timestamp")
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidRequest("Stream-Expires-At must be an RFC 3339 timestamp") from None


def _within(path: str, prefix: str) -> bool:
    segments = path[len(prefix) + 1 :].split("/")
    return path.startswith(prefix + "/") and not any(s in ("", ".", "..") for s in segments)


def _fork_spec(headers: dict[str, str], prefix: str) -> ForkSpec | None:
    source = headers.get("stream-forked-from")
    offset_text = headers.get("stream-fork-offset")
    sub_text = headers.get("stream-fork-sub-offset")
    if source is None:
        if offset_text is not None or sub_text is not None:
            raise InvalidRequest("fork offsets need Stream-Forked-From")
        return None
    source = source.strip()
    if "://" in source:
        source = "/" + source.split("://", 1)[1].partition("/")[2]
    if not source.startswith("/"):
        source = f"{prefix}/{source}"
    offset = None
    if offset_text is not None:
        if offset_text in ("-1", NOW):
            raise InvalidRequest("Stream-Fork-Offset must be an offset this server issued")
        offset = _position(offset_text)
    sub_offset = 0
    if sub_text is not None:
        sub_offset = _counter("Stream-Fork-Sub-Offset", sub_text.strip())
        if sub_offset and offset is None:
            raise InvalidRequest("Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
    return ForkSpec(source, offset, sub_offset)


def _producer(headers: dict[str, str]) -> Producer | None:
    producer_id = headers.get("producer-id")
    epoch = headers.get("producer-epoch")
    seq = headers.get("producer-seq")
    given = sum(value is not None for value in (producer_id, epoch, seq))
    if given == 0:
        return None
    if given != 3:
        raise InvalidRequest("Producer-Id, Producer-Epoch and Producer-Seq go together")
    assert producer_id is not None and epoch is not None and seq is not None
    if not producer_id.strip():
        raise InvalidRequest("Producer-Id must not be empty")
    return Producer(
        producer_id,
        _counter("Producer-Epoch", epoch.strip()),
        _counter("Producer-Seq", seq.strip()),
    )


def _append_response(outcome: AppendOutcome, wrote: bool) -> Response:
    headers = [*BASE_HEADERS, (NEXT_OFFSET, format_offset(outcome.next_position))]
    if outcome.closed:
        headers.append((CLOSED, "true"))
    producer = outcome.producer
    if producer is None:
        return Response(204, headers)
    headers.append(("producer-epoch", str(producer.epoch)))
    headers.append(("producer-seq", str(producer.seq)))
    # 200 says "your data was written"; duplicates and close-only requests wrote none.
    return Response(200 if wrote and not outcome.duplicate else 204, headers)


def _chunk_headers(stream: Stream, chunk: Chunk) -> list[tuple[str, str]]:
    headers = [
        *BASE_HEADERS,
        ("content-type", stream.config.content_type),
        (NEXT_OFFSET, format_offset(chunk.next_position)),
    ]
    if chunk.up_to_date:
        headers.append((UP_TO_DATE, "true"))
    if chunk.closed:
        headers.append((CLOSED, "true"))
    return headers


def _body(stream: Stream, data: bytes) -> bytes:
    return framing.as_array(data) if stream.is_json else data


def _etag(stream: Stream, position: int, chunk: Chunk) -> str:
    suffix = ":c" if chunk.closed else ""
    return f'"{stream.id}:{position}:{chunk.next_position}{suffix}"'


def _error_response(exc: StreamError) -> Response:
    if isinstance(exc, InvalidRequest):
        return error(400, exc.message)
    if isinstance(exc, StreamNotFound):
        return error(404, exc.message)
    if isinstance(exc, StreamGone):
        return error(410, exc.message)
    if isinstance(exc, StreamClosed):
        return error(
            409,
            exc.message,
            [(CLOSED, "true"), (NEXT_OFFSET, format_offset(exc.next_position))],
        )
    if isinstance(exc, StaleProducerEpoch):
        return error(403, exc.message, [("producer-epoch", str(exc.current_epoch))])
    if isinstance(exc, ProducerSequenceGap):
        return error(
            409,
            exc.message,
            [
                ("producer-expected-seq", str(exc.expected)),
                ("producer-received-seq", str(exc.received)),
            ],
        )
    if isinstance(exc, ConfigurationConflict | ContentTypeConflict | SequenceConflict):
        return error(409, exc.message)
    return error(400, exc.message)
