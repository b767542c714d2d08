"""Server-sent events for live reads.

Every data event is followed by a control event carrying the next offset (and the
cursor while the stream is open), so a client that reconnects after any event resumes
exactly. Text and JSON streams travel as UTF-8; anything else as base64, one
self-contained encoding per event. The connection is closed after `rotation` seconds so
that proxies and caches never hold one open indefinitely; clients reconnect from the
last control event.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import orjson

from fusebox.http.messages import Response
from fusebox.streams import framing
from fusebox.streams.cursor import next_cursor
from fusebox.streams.engine import StreamEngine
from fusebox.streams.model import Stream
from fusebox.streams.offsets import format_offset

# Sent while a connection waits, so that intermediaries do not time it out.
KEEPALIVE_SECONDS = 15.0


def _is_text(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type.startswith("text/") or framing.is_json(content_type)


def _data_event(payload: bytes) -> bytes:
    # Each line gets its own `data:` prefix; CR and CRLF count as line breaks in SSE,
    # so they are split on too, and no payload can inject an event of its own.
    lines = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    # A line that starts with a space gets one more: SSE parsers strip one after `data:`.
    fields = ((b"data: " if line[:1] == b" " else b"data:") + line + b"\n" for line in lines)
    return b"event: data\n" + b"".join(fields) + b"\n"


def _control_event(fields: dict) -> bytes:
    return b"event: control\ndata:" + orjson.dumps(fields) + b"\n\n"


def sse_response(
    engine: StreamEngine,
    stream: Stream,
    position: int,
    *,
    cursor: str | None,
    rotation: float,
    base_headers: list[tuple[str, str]],
) -> Response:
    text = _is_text(stream.config.content_type)
    headers = [
        *base_headers,
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
    ]
    if not text:
        headers.append(("stream-sse-data-encoding", "base64"))
    return Response(200, headers, stream=_events(engine, stream, position, cursor, rotation, text))


async def _events(
    engine: StreamEngine,
    stream: Stream,
    position: int,
    cursor: str | None,
    rotation: float,
    text: bool,
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + rotation
    first = True
    while True:
        if stream.gone:
            return
        chunk = engine.read(stream, position)
        position = chunk.next_position
        control: dict = {"streamNextOffset": format_offset(position)}
        if chunk.closed:
            control["streamClosed"] = True
        else:
            cursor = next_cursor(cursor)
            control["streamCursor"] = cursor
        if chunk.up_to_date:
            control["upToDate"] = True
        if chunk.data:
            if stream.is_json:
                payload = framing.as_array(chunk.data)
            elif text:
                payload = chunk.data
            else:
                payload = base64.b64encode(chunk.data)
            yield _data_event(payload) + _control_event(control)
        elif first or chunk.closed:
            yield _control_event(control)
        first = False
        if chunk.closed:
            return
        if chunk.up_to_date:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            woke = await engine.wait(stream, position, min(remaining, KEEPALIVE_SECONDS))
            if not woke:
                if time.monotonic() >= deadline:
                    return
                yield b": keepalive\n\n"
