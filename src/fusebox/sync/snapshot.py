"""Initial snapshots: a shape's rows as of one consistent Postgres snapshot.

The rows are rendered as log items by Postgres itself (see `log_items.snapshot_item_sql`)
and copied out in binary COPY format, so Python only slices bytes. The snapshot's
visibility (`pg_current_snapshot()`: xmin, xmax, in-progress xids) decides which
replicated transactions the snapshot already contains; those are skipped, the rest follow
it in the log, so no change is lost or doubled between snapshot and log.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg

from fusebox.sync.log_items import quote_ident, snapshot_item_sql
from fusebox.sync.schema import Table

_BINARY_HEADER = 19  # signature (11) + flags (4) + header extension length (4)
_FIELD = struct.Struct("!hi")


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which transactions a snapshot can see, as 32-bit xids (what pgoutput carries)."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Visibility:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def sees(self, xid: int) -> bool:
        """True when the transaction `xid` committed before the snapshot was taken."""
        xmin32 = self.xmin & 0xFFFFFFFF
        # Compare in modulo-2^32 space around xmin, as Postgres does for 32-bit xids.
        distance = (xid - xmin32) & 0xFFFFFFFF
        if distance >= 1 << 31:
            return True  # older than xmin
        span = (self.xmax - self.xmin) & 0xFFFFFFFF
        if distance >= span:
            return False
        return (self.xmin + distance) not in self.xip


def snapshot_query(table: Table, columns: tuple[str, ...], where_sql: str | None) -> str:
    source = f"{quote_ident(table.schema)}.{quote_ident(table.name)}"
    where = f" WHERE {where_sql}" if where_sql else ""
    item = snapshot_item_sql(table, columns)
    return f"COPY (SELECT {item} FROM {source}{where}) TO STDOUT (FORMAT binary)"


async def begin_snapshot(conn: psycopg.AsyncConnection) -> Visibility:
    """Open the repeatable-read transaction the snapshot reads in; returns its visibility."""
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    cursor = await conn.execute("SELECT pg_current_snapshot()::text")
    row = await cursor.fetchone()
    assert row is not None
    return Visibility.parse(row[0])


async def copy_rows(
    conn: psycopg.AsyncConnection, query: str, batch_bytes: int
) -> AsyncIterator[list[bytes]]:
    """Yield the snapshot's items in batches of about `batch_bytes`."""
    batch: list[bytes] = []
    size = 0
    first = True
    async with conn.cursor().copy(query) as copy:
        async for block in copy:
            data = bytes(block)
            if first:
                data = data[_BINARY_HEADER:]
                first = False
            position = 0
            end = len(data)
            while position + 2 <= end:
                fields, length = (
                    _FIELD.unpack_from(data, position) if position + 6 <= end else (-1, 0)
                )
                if fields == -1:
                    break  # the trailer
                start = position + 6
                batch.append(data[start : start + length])
                size += length
                position = start + length
            if size >= batch_bytes:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch
