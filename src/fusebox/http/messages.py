"""Request and response values passed between the HTTP server and protocol code.

Protocol modules (streams, sync) speak only in these two types, so that the server
binding underneath can change without touching protocol semantics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote


class Request:
    __slots__ = ("_query", "body", "headers", "method", "path", "query_string", "raw_path")

    def __init__(
        self,
        method: str,
        raw_path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = unquote(raw_path)
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        """Every value of every query parameter, in order (duplicates matter to protocols)."""
        if self._query is None:
            parsed: dict[str, list[str]] = {}
            for key, value in parse_qsl(self.query_string, keep_blank_values=True):
                parsed.setdefault(key, []).append(value)
            self._query = parsed
        return self._query


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # A streaming body is written with chunked transfer encoding as it is produced.
    stream: AsyncIterator[bytes] | None = None
