"""How messages of JSON streams are laid out in wire bytes.

A JSON stream stores each message as its JSON text, with line breaks removed, followed by
`,\\n`. JSON strings cannot hold a raw line break, so the ones in a message are whitespace
between tokens and dropping them changes nothing; after that `,\\n` marks message
boundaries exactly, and a run of whole messages becomes a response body by slicing off
the final `,\\n` and wrapping in `[ ]`: no parse, no copy beyond the wrap.

Messages keep the client's own text (no parse-and-reprint), so numbers beyond 64 bits,
escapes and key order arrive exactly as sent. Byte streams are stored as they arrive.
"""

from __future__ import annotations

import json
import re

import orjson

SEPARATOR = b",\n"
EMPTY_ARRAY = b"[]"
_WHITESPACE = b" \t\r\n"
# Strings (with escapes) and the structural characters that matter for splitting.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class InvalidJson(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise InvalidJson(f"{name} is not valid JSON")


def validate(body: bytes) -> None:
    """Raise InvalidJson unless `body` is one JSON value."""
    try:
        orjson.loads(body)
        return
    except orjson.JSONDecodeError:
        pass
    # orjson refuses some valid JSON (lone surrogate escapes, for one); the standard
    # library accepts those, and NaN and Infinity too, which JSON does not.
    try:
        json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidJson(f"body is not valid JSON: {exc}") from None


def _one_line(text: bytes) -> bytes:
    text = text.strip(_WHITESPACE)
    if b"\n" in text or b"\r" in text:
        text = text.replace(b"\r", b"").replace(b"\n", b"")
    return text


def _elements(array: bytes) -> list[bytes]:
    """The top-level elements of a valid JSON array, as their own text."""
    elements = []
    depth = 0
    start = 0
    for match in _TOKENS.finditer(array):
        token = match.group()
        if token[0] == 0x22:  # a string: nothing inside it is structure
            continue
        if token in (b"[", b"{"):
            depth += 1
            if depth == 1:
                start = match.end()
        elif token in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                last = _one_line(array[start : match.start()])
                if last:
                    elements.append(last)
        elif depth == 1:
            elements.append(_one_line(array[start : match.start()]))
            start = match.end()
    return elements


def frame_messages(body: bytes, *, allow_empty_array: bool) -> bytes:
    """Wire bytes for a JSON body; a top-level array is flattened one level."""
    validate(body)
    text = body.strip(_WHITESPACE)
    if text[:1] == b"[":
        elements = _elements(text)
        if not elements:
            if allow_empty_array:
                return b""
            raise InvalidJson("an empty JSON array appends nothing; send at least one message")
        return b"".join(element + SEPARATOR for element in elements)
    return _one_line(text) + SEPARATOR


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
