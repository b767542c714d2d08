"""Log records: every change to stream state, as written to the write-ahead log.

Records are self-describing effects, decided when a request is validated: replaying them
needs no decisions, so recovery and the live path apply exactly the same changes.

Wire form of one record: u32 body length, u32 CRC-32 of the body, then the body:
u32 meta length, the meta as JSON, then the data bytes. A torn or corrupt tail fails its
CRC and ends replay there. An append whose bytes went straight to the stream's data file
(`external`) carries only their length, under the meta key `ext`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from fusebox.streams.model import Stream

CREATE = "c"
APPEND = "a"
DELETE = "d"
# Appends to many streams at once: meta `parts` lists [stream id, file position, length] for
# each, and the data is their bytes in that order (`Record.parts`).
APPEND_MANY = "m"

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
    # Non-zero: this many bytes were written to the data file directly, not to the log.
    # Replayed records know only the length (`data` is empty).
    external: int = 0
    # Live APPEND_MANY records only, never written: the streams its parts name, in order,
    # so that making it durable need not look thousands of them up by id.
    streams: list[Stream] | None = None

    def parts(self) -> Iterator[tuple[int, int, memoryview]]:
        """Each stream's share of an APPEND_MANY record: (stream id, file position, bytes)."""
        view = memoryview(self.data)
        offset = 0
        for stream_id, position, length in self.meta["parts"]:
            yield stream_id, position, view[offset : offset + length]
            offset += length

    @property
    def size(self) -> int:
        """How many bytes the record appends to its stream."""
        return self.external or len(self.data)

    def encode(self) -> bytes:
        head = {"k": self.kind, "s": self.stream_id, "p": self.file_position}
        if self.external:
            head["ext"] = self.external
        meta = orjson.dumps({**head, **self.meta})
        data = b"" if self.external else self.data
        body = b"".join((_META_LEN.pack(len(meta)), meta, data))
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
        external = meta.pop("ext", 0)
        position = start + length
        yield Record(kind, stream_id, meta, data, file_position, external), position
