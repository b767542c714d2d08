"""Electric's HTTP API for shapes: `/v1/shape` and `/v1/health`.

Status codes, headers and cache-control values follow Electric's sync service, so that
`@electric-sql/client` and CDNs in front behave exactly as they do against Electric.
"""

from __future__ import annotations

import hmac
import logging
import random
import time
from collections.abc import AsyncIterator

import orjson
import psycopg

from fusebox.http.messages import Request, Response
from fusebox.sync.log_items import control_item
from fusebox.sync.schema import schema_header
from fusebox.sync.shape import (
    ShapeDefinition,
    ShapeError,
    choice,
    parse_identifiers,
    parse_params,
    parse_table,
)
from fusebox.sync.shape_log import BEFORE_ALL, INFINITY, format_offset, parse_offset
from fusebox.sync.shapes import Shape, Shapes
from fusebox.sync.subset import parse_subset, query_subset

_CURSOR_EPOCH = 1728432000  # 2024-10-09T00:00:00Z
_EXPOSED = (
    "electric-cursor, electric-handle, electric-has-data, electric-offset, electric-schema, "
    "electric-up-to-date, electric-internal-known-error, electric-snapshot, retry-after, etag"
)
_BASE = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", _EXPOSED),
    ("x-content-type-options", "nosniff"),
]
_JSON = ("content-type", "application/json; charset=utf-8")
_INITIAL_CACHE = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
_LIVE_CACHE = "public, max-age=5, stale-while-revalidate=5"
_SSE_KEEPALIVE = 21.0

log = logging.getLogger("fusebox.sync")


class SyncStatus:
    """What `/v1/health` reports: starting, waiting (another instance replicates) or active."""

    def __init__(self) -> None:
        self.state = "starting"
        self.reason: str | None = None


def _error(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> Response:
    extra = [("cache-control", "no-store"), ("surrogate-control", "no-store")]
    return Response(status, [*_BASE, _JSON, *extra, *(headers or [])], orjson.dumps(body))


def invalid(field: str, message: str) -> Response:
    return _error(400, {"message": "Invalid request", "errors": {field: [message]}})


def _must_refetch(handle: str | None) -> Response:
    headers = [*_BASE, _JSON]
    headers.append(("cache-control", f"public, max-age={60 if handle else 1}, must-revalidate"))
    if handle:
        headers.append(("electric-handle", handle))
    return Response(409, headers, b'[{"headers":{"control":"must-refetch"}}]')


# `0_inf`: just before the first change, whatever the snapshot's length.
SNAPSHOT_END = (0, INFINITY)


class ShapeProtocol:
    def __init__(
        self,
        shapes: Shapes,
        status: SyncStatus,
        *,
        secret: str | None,
        long_poll_timeout: float = 20.0,
        sse_timeout: float = 60.0,
        allow_shape_deletion: bool = False,
        max_age: int = 60,
        stale_age: int = 300,
    ) -> None:
        self.shapes = shapes
        self.status = status
        self._secret = secret.encode() if secret else None
        self.long_poll_timeout = long_poll_timeout
        self.sse_timeout = sse_timeout
        self.allow_shape_deletion = allow_shape_deletion
        self._cache = f"public, max-age={max_age}, stale-while-revalidate={stale_age}"

    async def handle(self, request: Request) -> Response:
        # Normalise the route so `//v1/shape` or `/v1/shape/` cannot bypass the secret check.
        route = "/" + "/".join(part for part in request.path.split("/") if part)
        method = request.method
        if route == "/v1/health":
            return self._health()
        if route == "/":
            return Response(200, [*_BASE], b"")
        if route != "/v1/shape":
            return _error(404, {"message": "Not found"})
        if method == "OPTIONS":
            return Response(
                204,
                [
                    *_BASE,
                    ("access-control-allow-methods", "GET, POST, HEAD, DELETE, OPTIONS"),
                    ("access-control-allow-headers", "*"),
                    ("access-control-max-age", "86400"),
                ],
            )
        if not self._authorized(request):
            return _error(401, {"message": "Unauthorized - Invalid API secret"})
        if self.status.state != "active":
            return _error(
                503,
                {"message": "Stack not ready", "code": "database_unreachable"},
                [("retry-after", "5")],
            )
        try:
            if method in ("GET", "HEAD", "POST"):
                return await self._get(request)
            if method == "DELETE":
                return await self._delete(request)
        except ShapeError as exc:
            detail = getattr(exc, "detail", None)
            if detail is not None:
                return _error(400, {"message": "Invalid request", "errors": {exc.field: detail}})
            return invalid(exc.field, exc.message)
        except psycopg.OperationalError as exc:
            # Postgres went away before replication noticed (or refuses connections):
            # a shape cannot be created or queried now, but may be soon.
            log.warning("database unreachable while serving %s: %s", request.path, exc)
            return _error(
                503,
                {"message": "Database unreachable", "code": "database_unreachable"},
                [("retry-after", "5")],
            )
        return _error(405, {"message": f"Method {method} not allowed"})

    def _health(self) -> Response:
        status = 200 if self.status.state == "active" else 202
        body = orjson.dumps({"status": self.status.state})
        return Response(status, [*_BASE, _JSON, ("cache-control", "no-store")], body)

    def _authorized(self, request: Request) -> bool:
        if self._secret is None:
            return True
        query = request.query
        given = (query.get("secret") or query.get("api_secret") or [""])[-1].encode()
        return hmac.compare_digest(given, self._secret)

    # -- GET ----------------------------------------------------------------------------

    def _definition(self, query: dict[str, list[str]]) -> ShapeDefinition:
        schema, table = parse_table((query.get("table") or [""])[-1])
        where = (query.get("where") or [None])[-1] or None
        columns = None
        if "columns" in query:
            text = query["columns"][-1]
            if not text.strip():
                raise ShapeError("columns", "columns can't be blank")
            columns = tuple(sorted(set(parse_identifiers(text, "columns", ","))))
        return ShapeDefinition(
            schema=schema,
            table=table,
            where=where,
            params=parse_params(query),
            columns=columns,
            replica=choice(query, "replica", ("default", "full")),
            log_mode=choice(query, "log", ("full", "changes_only")),
        )

    async def _get(self, request: Request) -> Response:
        query = request.query
        offset_text = (query.get("offset") or [None])[-1]
        if offset_text is None:
            raise ShapeError("offset", "offset can't be blank")
        live_values = query.get("live")
        live = live_values is not None and live_values[-1] != "false"
        sse = (
            live
            and (query.get("live_sse") or query.get("experimental_live_sse") or ["false"])[-1]
            == "true"
        )
        now = offset_text == "now"
        if now:
            offset = BEFORE_ALL
        else:
            try:
                offset = parse_offset(offset_text)
            except ValueError as exc:
                raise ShapeError("offset", str(exc)) from None
        if live and (offset == BEFORE_ALL or now):
            raise ShapeError("live", "can't be true when offset is -1 or now")
        handle = (query.get("handle") or [None])[-1]
        if handle is None and offset != BEFORE_ALL and not now:
            raise ShapeError("handle", "can't be blank when offset != -1")
        definition = self._definition(query)
        if handle is not None and not now and offset != BEFORE_ALL:
            shape = self.shapes.get(handle)
            if shape is None or shape.definition != definition:
                if shape is not None:
                    return invalid(
                        "handle",
                        "The specified shape definition and handle do not match.",
                    )
                current = self.shapes.find(definition)
                if current is None:
                    await self.shapes.validate(definition)
                    current = await self.shapes.get_or_create(definition)
                return _must_refetch(current.handle)
        else:
            shape = await self.shapes.get_or_create(definition)
            if handle is not None and handle != shape.handle and not now:
                return _must_refetch(shape.handle)
        subset = _subset_options(request)
        if subset is not None:
            return await self._subset(shape, subset)
        cursor = (query.get("cursor") or [None])[-1]
        if now:
            return self._now(shape, live, cursor)
        if not await self._within_log(shape, offset):
            return invalid("offset", "out of bounds for this shape")
        if sse:
            return self._sse(shape, offset, cursor, request)
        return await self._log(request, shape, offset, live, cursor)

    async def _within_log(self, shape: Shape, offset: tuple) -> bool:
        """False for an offset past the end of the log that stays so for half a long-poll.

        We only hand out offsets of published items, so such an offset comes from
        somewhere else (another server, a hand-made URL). Like Electric, give the log
        a moment to reach it, then refuse it rather than answer up-to-date forever.
        """
        log = shape.log
        if not log.snapshot_visible or offset == SNAPSHOT_END or offset <= log.last_offset:
            return True
        deadline = time.monotonic() + self.long_poll_timeout / 2
        while offset > log.last_offset and not shape.deleted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await log.wait(log.visible_end, remaining)
        return True

    async def _subset(self, shape: Shape, options: dict) -> Response:
        subset = parse_subset(options, shape.table, shape.columns)
        where_sql = shape.where.sql if shape.where is not None else None
        body = await query_subset(
            self.shapes.connections, shape.table, shape.columns, where_sql, subset
        )
        headers = [
            *_BASE,
            _JSON,
            ("cache-control", "no-cache"),
            ("electric-snapshot", "true"),
            ("electric-handle", shape.handle),
            ("electric-schema", schema_header(shape.table, shape.columns)),
            ("electric-offset", format_offset(shape.log.last_offset)),
        ]
        return Response(200, headers, body)

    def _headers(self, shape: Shape, live: bool, cursor: str | None, offset: tuple) -> list:
        headers = [*_BASE, _JSON, ("electric-handle", shape.handle)]
        if live:
            headers.append(("electric-cursor", self._next_cursor(cursor)))
            headers.append(("cache-control", _LIVE_CACHE))
        else:
            headers.append(("electric-schema", schema_header(shape.table, shape.columns)))
            headers.append(
                ("cache-control", _INITIAL_CACHE if offset == BEFORE_ALL else self._cache)
            )
        return headers

    def _up_to_date(self, shape: Shape) -> bytes:
        # Never behind the shape's own log: after a restart no transaction has been seen
        # yet, and Electric then falls back to the shape's latest offset.
        lsn = max(self.shapes.last_seen_lsn, shape.log.last_offset[0])
        return control_item("up-to-date", global_last_seen_lsn=str(lsn))

    def _now(self, shape: Shape, live: bool, cursor: str | None) -> Response:
        headers = self._headers(shape, live, cursor, (0, 0))
        headers += [
            ("electric-offset", format_offset(shape.log.last_offset)),
            ("electric-up-to-date", ""),
            ("electric-has-data", "false"),
        ]
        return Response(200, headers, b"[" + self._up_to_date(shape) + b"]")

    async def _log(
        self, request: Request, shape: Shape, offset: tuple, live: bool, cursor: str | None
    ) -> Response:
        shape_log = shape.log
        start = shape_log.seek(offset)
        data, end, resume = shape_log.chunk(start)
        if not data and not shape_log.snapshot_visible:
            # The snapshot is still being copied: wait for its first chunk to close.
            while not shape.deleted and not shape_log.snapshot_visible:
                await shape_log.wait(start, self.long_poll_timeout)
                data, end, resume = shape_log.chunk(start)
                if data:
                    break
        if not data and live:
            await shape_log.wait(start, self.long_poll_timeout)
            if shape.deleted:
                return _must_refetch(None)
            data, end, resume = shape_log.chunk(start)
        if shape.deleted:
            return _must_refetch(None)
        up_to_date = (
            offset != BEFORE_ALL and end >= shape_log.visible_end and shape_log.snapshot_visible
        )
        resume_text = format_offset(resume if data else offset)
        headers = self._headers(shape, live, cursor, offset)
        headers.append(("electric-offset", resume_text))
        etag = f"{shape.handle}:{format_offset(offset)}:{resume_text}"
        if not data:
            # An empty answer is only valid now: make its tag unique so no cache reuses it.
            etag = f"{etag}:{time.monotonic_ns()}"
        headers.append(("etag", f'"{etag}"'))
        matches = request.headers.get("if-none-match", "")
        if etag in {tag.strip().strip('"') for tag in matches.split(",") if tag}:
            return Response(304, headers)
        headers.append(("electric-has-data", "true" if data else "false"))
        parts: list[bytes | memoryview] = [b"["]
        if data:
            parts.append(memoryview(data)[:-2])  # without the last `,\n`; not copied twice
        if up_to_date:
            headers.append(("electric-up-to-date", ""))
            if data:
                parts.append(b",")
            parts.append(self._up_to_date(shape))
        parts.append(b"]")
        return Response(200, headers, b"".join(parts))

    def _next_cursor(self, cursor: str | None) -> str:
        interval = self.long_poll_timeout if self.long_poll_timeout >= 1 else 1
        elapsed = time.time() - _CURSOR_EPOCH
        value = int(-(-elapsed // interval) * interval)
        if cursor and cursor.isdigit() and value <= int(cursor):
            value = int(cursor) + random.randint(1, 3600)
        return str(value)

    # -- SSE ----------------------------------------------------------------------------

    def _sse(self, shape: Shape, offset: tuple, cursor: str | None, request: Request) -> Response:
        headers = [
            *_BASE,
            ("content-type", "text/event-stream"),
            ("electric-handle", shape.handle),
            ("electric-cursor", self._next_cursor(cursor)),
            ("electric-offset", format_offset(max(offset, shape.log.last_offset))),
            ("cache-control", f"public, max-age={max(1, int(self.sse_timeout) - 1)}"),
        ]
        return Response(200, headers, stream=self._events(shape, offset))

    async def _events(self, shape: Shape, offset: tuple) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + self.sse_timeout
        position = shape.log.seek(offset)
        while not shape.deleted:
            data, end, _ = shape.log.chunk(position)
            if data:
                for item in data[:-2].split(b",\n"):
                    yield b"data: " + item + b"\n\n"
                position = end
                continue
            yield b"data: " + self._up_to_date(shape) + b"\n\n"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            while not await shape.log.wait(position, min(remaining, _SSE_KEEPALIVE)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or shape.deleted:
                    return
                yield b": keep-alive\n\n"
        yield b'data: {"headers":{"control":"must-refetch"}}\n\n'

    # -- DELETE -------------------------------------------------------------------------

    async def _delete(self, request: Request) -> Response:
        if not self.allow_shape_deletion:
            return _error(405, {"message": "Shape deletion is disabled"})
        query = request.query
        handle = (query.get("handle") or [None])[-1]
        shape = self.shapes.get(handle) if handle else None
        if shape is None and "table" in query:
            shape = self.shapes.find(self._definition(query))
        if shape is None:
            return _error(404, {"message": "Shape not found"})
        await self.shapes.delete(shape)
        return Response(202, [*_BASE, _JSON, ("cache-control", "no-cache")], b"[]")


def _subset_options(request: Request) -> dict | None:
    """Subset options from `subset__*` query parameters or a POST body; None if neither."""
    options: dict = {}
    for key, values in request.query.items():
        if key.startswith("subset__"):
            options[key[len("subset__") :]] = values[-1]
    if request.method == "POST" and request.body.strip():
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise ShapeError("body", "the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ShapeError("body", "the request body must be a JSON object")
        known = ("where", "params", "limit", "offset", "order_by")
        options.update({k: v for k, v in body.items() if k in known})
    if "where_expr" in options:
        options.pop("where_expr")
    return options or None
