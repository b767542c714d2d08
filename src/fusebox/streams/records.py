"""Log records: every change to stream state, as written to the write-ahead log.

Records are self-describing effects, decided when a request is validated: replaying them
needs no decisions, so recovery and the live path apply exactly the same changes.

Wire form of one record: u32 body length, u32 CRC-32 of the body, then the body:
u32 meta length, the meta as JSON, then the data bytes. A torn or corrupt tail fails its
CRC and ends replay there.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

CREATE = "c"
APPEND = "a"
DELETE = "d"

_HEADER = struct.Struct("<II")
_META_LEN = struct.Struct("<I")


@dataclass(slots=True)
class Record:
    kind: str
    stream_id: int
    meta: dict
    data: bytes = b""
    # Where `data` lands in the stream's own data file.
    file_position: int = 0

    def encode(self) -> bytes:
        meta = orjson.dumps(
            {"k": self.kind, "s": self.stream_id, "p": self.file_position, **self.meta}
        )
        body = b"".join((_META_LEN.pack(len(meta)), meta, self.data))
        return _HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_records(buffer: bytes) -> Iterator[tuple[Record, int]]:
    """Yield each intact record with the buffer position just past it; stop at a torn one."""
    position = 0
    end = len(buffer)
    while position + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(buffer, position)
        start = position + _HEADER.size
        if start + length > end:
            return
        body = buffer[start : start + length]
        if zlib.crc32(body) != crc or length < _META_LEN.size:
            return
        (meta_len,) = _META_LEN.unpack_from(body, 0)
        try:
            meta = orjson.loads(body[_META_LEN.size : _META_LEN.size + meta_len])
        except orjson.JSONDecodeError:
            return
        data = body[_META_LEN.size + meta_len :]
        kind = meta.pop("k")
        stream_id = meta.pop("s")
        file_position = meta.pop("p")
        position = start + length
        yield Record(kind, stream_id, meta, data, file_position), position
