"""Initial snapshots: a shape's rows as of one consistent Postgres snapshot.

The rows are rendered as framed log items by Postgres itself (see
`log_items.snapshot_items_sql`), aggregated per range of heap pages and copied out in
binary COPY format, so Python handles a few large blocks, not a million rows. The snapshot's
visibility (`pg_current_snapshot()`: xmin, xmax, in-progress xids) decides which
replicated transactions the snapshot already contains; those are skipped, the rest follow
it in the log, so no change is lost or doubled between snapshot and log. The WAL position
read just after the snapshot bounds the question: a transaction that commits past it
cannot be in the snapshot, so routing stops asking once replication is past it.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from fusebox.sync.log_items import quote_ident, snapshot_items_sql
from fusebox.sync.replication.lsn import MAX_LSN, parse_lsn
from fusebox.sync.schema import Table

_BINARY_HEADER = 19  # signature (11) + flags (4) + header extension length (4)
_FIELD = struct.Struct("!hi")


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which transactions a snapshot can see, as 32-bit xids (what pgoutput carries)."""

    xmin: int
    xmax: int
    xip: frozenset[int]
    # The WAL insert position read just after the snapshot was taken. A transaction the
    # snapshot sees had its commit record written before then, so one whose commit LSN is
    # at or past this is never seen. Unknown (shapes recorded before it was kept): never.
    horizon: int = MAX_LSN

    @classmethod
    def parse(cls, text: str, horizon: int = MAX_LSN) -> Visibility:
        xmin, xmax, xip = text.split(":")
        xids = frozenset(int(x) for x in xip.split(",") if x)
        return cls(int(xmin), int(xmax), xids, horizon)

    def to_json(self) -> list:
        return [self.xmin, self.xmax, sorted(self.xip), self.horizon]

    @classmethod
    def from_json(cls, data: list) -> Visibility:
        """As `to_json` wrote it; without the horizon, as shapes recorded earlier were."""
        xmin, xmax, xip, *horizon = data
        return cls(xmin, xmax, frozenset(xip), *horizon)

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


# Heap bytes per aggregated group: with items 2-4x the heap size, COPY messages of a
# few hundred KiB. At most 16 pages, so that a group's text stays below Postgres's 1 GB
# limit even for pages full of highly compressed inline values (about 2 MiB of text per
# 8 KiB page at lz4's best ratio, times 6 if every character needs a \u escape).
_GROUP_HEAP_BYTES = 128 * 1024
_MAX_GROUP_PAGES = 16
_LAST_PAGE = 4294967295  # above every block number: the last group is open-ended


@dataclass(frozen=True, slots=True)
class Layout:
    """What decides how a snapshot is copied: see `snapshot_query`."""

    kind: str  # pg_class.relkind
    pages: int  # heap pages
    block_size: int
    toast_bytes: int  # out-of-line values (their TOAST relation's size)
    inherited: bool = False  # has child tables, whose pages the count leaves out

    @property
    def grouped(self) -> bool:
        return self.kind == "r" and self.toast_bytes == 0 and not self.inherited


async def table_layout(conn: psycopg.AsyncConnection, table: Table) -> Layout:
    """The table's layout, read inside the snapshot's transaction."""
    cursor = await conn.execute(
        "SELECT c.relkind::text, pg_relation_size(c.oid),"
        " current_setting('block_size')::int,"
        " coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0), c.relhassubclass"
        " FROM pg_class c WHERE c.oid = %s",
        (table.oid,),
    )
    row = await cursor.fetchone()
    if row is None:
        return Layout("?", 0, 8192, 0)
    kind, size, block_size, toast, inherited = row
    return Layout(kind, size // block_size, block_size, toast, inherited)


# Heap pages from which a grouped snapshot is split over several connections (32 MiB at
# 8 KiB pages): below that, opening and joining another connection costs more than it saves.
PARALLEL_MIN_PAGES = 4096


def snapshot_parts(layout: Layout, where_sql: str | None, connections: int) -> int:
    """Over how many connections to copy a snapshot (each copies one range of pages).

    Postgres renders the items on one core per connection: for a large table that is the
    longest part of a snapshot, longer than storing and serving them (docs/benchmarks.md,
    "Snapshot"), so rendering is split over `connections` that share one exported
    snapshot, as `pg_dump --jobs` does. Only grouped copies are split (see `snapshot_query`).
    """
    if where_sql or not layout.grouped or layout.pages < PARALLEL_MIN_PAGES:
        return 1
    return max(1, connections)


def snapshot_query(
    table: Table,
    columns: tuple[str, ...],
    where_sql: str | None,
    layout: Layout | None = None,
    part: tuple[int, int] = (0, 1),
) -> str:
    """The COPY of a shape's snapshot: each tuple is one or more framed items.

    Postgres renders every row as its framed item (`snapshot_items_sql`). Copied one row
    per message, reading the messages cost this process more than Postgres spent on
    them, so rows are aggregated (`string_agg`) per range of heap pages, read by TID range
    scans: 767 messages of about 300 KiB for the benchmark's million rows. Tables with
    out-of-line (TOAST) values, partitioned tables and tables with child tables are copied
    a row per message: there a group's text has no useful bound. So are shapes with a
    where clause: per page range the planner would scan every page, where one query can
    use an index for a selective clause.

    `part` (index, count) selects one of `count` consecutive runs of page groups, for
    snapshots copied over several connections (`snapshot_parts`).
    """
    source = f"{quote_ident(table.schema)}.{quote_ident(table.name)}"
    item = snapshot_items_sql(table, columns)
    if layout is None or not layout.grouped or where_sql:
        where = f" WHERE {where_sql}" if where_sql else ""
        return f"COPY (SELECT {item} FROM {source}{where}) TO STDOUT (FORMAT binary)"
    step = max(1, min(_MAX_GROUP_PAGES, _GROUP_HEAP_BYTES // layout.block_size))
    last = layout.pages
    index, count = part
    groups = last // step + 1  # one per page group from 0 to `last`, the last open-ended
    first_group, end_group = index * groups // count, (index + 1) * groups // count
    if first_group >= end_group:
        return "COPY (SELECT NULL::text WHERE false) TO STDOUT (FORMAT binary)"
    # Qualified names: the table's own columns must not shadow the page number.
    first = "_fusebox_pages.first_page"
    upper = f"CASE WHEN {first} + {step} > {last} THEN {_LAST_PAGE} ELSE {first} + {step} END"
    group = (
        f"SELECT string_agg({item}, '') FROM {source} AS _fusebox_rows"
        f" WHERE _fusebox_rows.ctid >= format('(%s,0)', {first})::tid"
        f" AND _fusebox_rows.ctid < format('(%s,0)', {upper})::tid"
    )
    return (
        f"COPY (SELECT ({group}) FROM generate_series({first_group * step},"
        f" {(end_group - 1) * step}, {step})"
        " AS _fusebox_pages(first_page)) TO STDOUT (FORMAT binary)"
    )


# Snapshot items are stored in blocks of about this size, each one append to the shape's
# log. At least the log store's `direct_bytes` (1 MiB), so that a block skips the WAL. Small
# enough to stay in the CPU caches between being joined, written and served: a 1M-row
# snapshot took 1.74x / 1.63x / 1.92x / 2.03x COPY with 1 / 2 / 4 / 10 MiB blocks.
BLOCK_BYTES = 2 * 1024 * 1024


async def begin_snapshot(conn: psycopg.AsyncConnection) -> Visibility:
    """Open the repeatable-read transaction the snapshot reads in; returns its visibility."""
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    # One statement: the snapshot is taken as it starts, the position read as it runs.
    cursor = await conn.execute(
        "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text"
    )
    row = await cursor.fetchone()
    assert row is not None
    return Visibility.parse(row[0], parse_lsn(row[1]))


async def export_snapshot(conn: psycopg.AsyncConnection) -> str:
    """Export the snapshot of `conn`'s open transaction for other connections to join."""
    cursor = await conn.execute("SELECT pg_export_snapshot()")
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def join_snapshot(conn: psycopg.AsyncConnection, snapshot_id: str) -> None:
    """Open a transaction on `conn` that reads exactly what the exporting one reads."""
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))


async def copy_items(
    conn: psycopg.AsyncConnection, query: str, batch_bytes: int
) -> AsyncIterator[bytes]:
    """Yield the snapshot's framed items in blocks of about `batch_bytes`.

    Each item's bytes are copied once, into the block: tuples are sliced out of psycopg's
    buffers as memoryviews, which keep those buffers alive until the join.
    """
    parts: list[memoryview] = []
    size = 0
    first = True
    async with conn.cursor().copy(query) as copy:
        async for block in copy:
            position = _BINARY_HEADER if first else 0
            first = False
            end = len(block)
            # Usually one tuple per message; a tuple is (field count, length, text).
            while position + 6 <= end:
                fields, length = _FIELD.unpack_from(block, position)
                if fields == -1:
                    break  # the trailer
                position += 6
                if length > 0:  # -1: a range of pages without rows
                    parts.append(block[position : position + length])
                    size += length
                    position += length
            if size >= batch_bytes:
                yield b"".join(parts)
                parts, size = [], 0
    if parts:
        yield b"".join(parts)
