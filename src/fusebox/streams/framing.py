"""How messages of JSON streams are laid out in wire bytes.

A JSON stream stores each message as compact JSON followed by `,\\n`. Compact JSON never
holds a raw newline, so `,\\n` marks message boundaries exactly, and a run of whole
messages becomes a response body by slicing off the final `,\\n` and wrapping in `[ ]`:
no parse, no copy beyond the wrap. Byte streams are stored as they arrive.
"""

from __future__ import annotations

import json

import orjson

SEPARATOR = b",\n"
EMPTY_ARRAY = b"[]"


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class InvalidJson(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise InvalidJson(f"{name} is not valid JSON")


def _parse(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses integers beyond 64 bits, which JSON allows; the standard library
    # accepts them (and, unless told not to, NaN and Infinity, which JSON does not).
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidJson(f"body is not valid JSON: {exc}") from None


def _dump(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def frame_messages(body: bytes, *, allow_empty_array: bool) -> bytes:
    """Wire bytes for a JSON body; a top-level array is flattened one level."""
    value = _parse(body)
    if isinstance(value, list):
        if not value:
            if allow_empty_array:
                return b""
            raise InvalidJson("an empty JSON array appends nothing; send at least one message")
        return b"".join(_dump(item) + SEPARATOR for item in value)
    stripped = body.strip()
    if b"\n" not in stripped and b"\r" not in stripped:
        return stripped + SEPARATOR
    return _dump(value) + SEPARATOR


def as_array(framed: bytes) -> bytes:
    """A response body: the JSON array of the framed messages."""
    if not framed:
        return EMPTY_ARRAY
    return b"[" + framed[: -len(SEPARATOR)] + b"]"


def whole_messages(framed: bytes) -> int:
    """The length of the longest prefix of `framed` that ends on a message boundary."""
    cut = framed.rfind(SEPARATOR)
    return 0 if cut < 0 else cut + len(SEPARATOR)


def skip_messages(framed: bytes, count: int) -> int | None:
    """The byte length of the first `count` messages, or None if there are fewer."""
    position = 0
    for _ in range(count):
        found = framed.find(SEPARATOR, position)
        if found < 0:
            return None
        position = found + len(SEPARATOR)
    return position
