"""Snapshot items rendered by Postgres (`log_items.snapshot_items_sql`, `snapshot.py`).

A snapshot item must be what `log_items.change_item` builds for an insert of the same row,
minus the lsn/op_position/txids headers, byte for byte: same key, same values (Postgres
text under Electric's settings), same escaping. Checked on awkward values, on both copy
layouts (rows aggregated per page range, and a row per COPY message), against the previous
`json_build_object` renderer, and by hypothesis on generated rows. The chunk cuts of
`ShapeLog.append_snapshot` are checked against `ShapeLog.rebuild`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fresh_database
from fusebox.streams.engine import StreamEngine
from fusebox.streams.framing import SEPARATOR
from fusebox.streams.model import StreamConfig
from fusebox.streams.store import FileStore
from fusebox.sync import snapshot as snapshot_module
from fusebox.sync.log_items import (
    build_key,
    change_item,
    control_item,
    key_prefix,
    quote_ident,
    snapshot_item_sql,
)
from fusebox.sync.schema import Table, inspect_table, session_options
from fusebox.sync.shape import ShapeDefinition
from fusebox.sync.shape_log import BEFORE_ALL, INFINITY, ShapeLog
from fusebox.sync.shapes import Shapes
from fusebox.sync.snapshot import (
    PARALLEL_MIN_PAGES,
    Layout,
    begin_snapshot,
    copy_items,
    export_snapshot,
    join_snapshot,
    snapshot_parts,
    snapshot_query,
    table_layout,
)
from postgres import PostgresCluster

_serial = iter(range(10**6))


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[str]:
    with fresh_database(postgres, "snapshot_items") as url:
        yield url


def execute(url: str, sql: str, params: tuple | list = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params or None)


def new_table(url: str, columns: str) -> str:
    name = f"s{next(_serial)}_{time.monotonic_ns() % 10**6}"
    execute(url, f"CREATE TABLE {name} ({columns})")
    return name


async def _snapshot(
    url: str, name: str, where: str | None, grouped: bool
) -> tuple[Table, list[bytes], list[bytes]]:
    """The table, its snapshot items (new renderer) and the old renderer's items."""
    async with await psycopg.AsyncConnection.connect(url, options=session_options()) as conn:
        table = await inspect_table(conn, "public", name)
        columns = tuple(c.name for c in table.columns)
        await conn.rollback()
        await begin_snapshot(conn)
        layout = await table_layout(conn, table)
        if grouped:
            assert layout.grouped
        else:
            layout = Layout(layout.kind, layout.pages, layout.block_size, 1)
        query = snapshot_query(table, columns, where, layout)
        blocks = [block async for block in copy_items(conn, query, 1000)]
        old_sql = f"SELECT {snapshot_item_sql(table, columns)} FROM {quote_ident(name)}"
        if where:
            old_sql += f" WHERE {where}"
        cursor = await conn.execute(old_sql)
        old = [row[0].encode() for row in await cursor.fetchall()]
        await conn.rollback()
    framed = b"".join(blocks)
    assert not blocks or all(block.endswith(SEPARATOR) for block in blocks)
    items = framed.split(SEPARATOR)
    assert items.pop() == b""
    return table, items, old


def snapshot(
    url: str, name: str, where: str | None = None, grouped: bool = True
) -> tuple[Table, list[bytes], list[bytes]]:
    return asyncio.run(_snapshot(url, name, where, grouped))


def expected_item(table: Table, row: dict[str, str | None]) -> bytes:
    """What a live insert of `row` carries, without lsn/op_position/txids."""
    key = build_key(key_prefix(table), row, table.primary_key)
    item = orjson.loads(change_item("insert", key, row, table.relation, 1, 0, 1))
    for header in ("lsn", "op_position", "txids"):
        del item["headers"][header]
    return orjson.dumps(item)


def check_items(table: Table, items: list[bytes], old: list[bytes]) -> list[dict]:
    """Each item is change_item's rendering of its row and agrees with the old renderer."""
    parsed = [orjson.loads(item) for item in items]
    for item, value in zip(items, parsed, strict=True):
        assert item == expected_item(table, value["value"])
    by_key = {value["key"]: value for value in parsed}
    assert len(by_key) == len(parsed)
    assert by_key == {value["key"]: value for value in map(orjson.loads, old)}
    return parsed


AWKWARD = [
    "plain",
    "",
    'quote " and backslash \\ and \\" both',
    "newline \n tab \t carriage \r",
    "controls \x01\x02\x07\x08\x0b\x0c\x1b\x1f\x7f",
    "unicode é ß 漢字 🎉 \u2028 \u2029",
    'slashes / // and a key-like /"x"/_',
    'json-ish {"a": [1, 2]}',
    "trailing spaces   ",
]


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "row-per-message"])
def test_awkward_values_render_as_change_items(database: str, grouped: bool) -> None:
    name = new_table(
        database,
        'id int PRIMARY KEY, t text, "Odd ""Name"", x" text, c char(6), vc varchar(40),'
        " ints int[], texts text[], j json, jb jsonb, b bytea, bo bool, f float8,"
        " n numeric(8, 2), ts timestamptz, d date, iv interval, u uuid, net inet,"
        " lsn pg_lsn, nothing text",
    )
    for index, text in enumerate(AWKWARD):
        execute(
            database,
            f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true,"
            " 1.5, 12.5, '2024-01-02 03:04:05+02', '2024-03-04', '1 day 2 hours',"
            " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.0/8', '0/16B3748', NULL)",
            (
                index,
                text,
                text[::-1],
                text[:6].rstrip(" "),
                text[:40],
                [index, None, 3],
                [text, None, "c d"],
                orjson.dumps({"v": text}).decode(),
                orjson.dumps({"v": text}).decode(),
                text.encode(),
            ),
        )
    execute(database, f"INSERT INTO {name} (id) VALUES (%s)", (len(AWKWARD),))
    table, items, old = snapshot(database, name, grouped=grouped)
    rows = {int(item["value"]["id"]): item["value"] for item in check_items(table, items, old)}
    assert len(rows) == len(AWKWARD) + 1
    for index, text in enumerate(AWKWARD):
        row = rows[index]
        assert row["t"] == text
        assert row['Odd "Name", x'] == text[::-1]
        assert row["c"] == text[:6].rstrip(" ").ljust(6)  # char(n) keeps its padding
        assert row["nothing"] is None
        assert row["bo"] == "true" and row["net"] == "10.0.0.0/8" and row["lsn"] == "0/16B3748"
        assert row["ts"] == "2024-01-02 01:04:05+00" and row["iv"] == "P1DT2H"
    assert rows[len(AWKWARD)] == {c.name: None for c in table.columns} | {"id": str(len(AWKWARD))}


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "row-per-message"])
def test_keys_of_composite_awkward_and_nullable_keys(database: str, grouped: bool) -> None:
    composite = new_table(
        database, 'a text, "B b" int, c char(3), v text, PRIMARY KEY (a, "B b", c)'
    )
    for index, text in enumerate(AWKWARD):
        execute(database, f"INSERT INTO {composite} VALUES (%s, %s, %s, 'v')", (text, index, "x"))
    table, items, old = snapshot(database, composite, grouped=grouped)
    parsed = check_items(table, items, old)
    keys = {item["key"] for item in parsed}
    prefix = key_prefix(table)
    assert f'{prefix}/"slashes // //// and a key-like //"x"//_"/"6"/"x  "' in keys
    # Without a primary key every column is the key, NULLs as `_`.
    keyless = new_table(database, "x int, y text, z inet")
    execute(database, f"INSERT INTO {keyless} VALUES (1, NULL, '10.0.0.0/8'), (NULL, 'a/b', NULL)")
    table, items, old = snapshot(database, keyless, grouped=grouped)
    keys = {item["key"] for item in check_items(table, items, old)}
    prefix = key_prefix(table)
    assert keys == {f'{prefix}/"1"/_/"10.0.0.0//8"', f'{prefix}/_/"a//b"/_'}
    # Keys of plain types go in without to_json; `/` in them is still doubled.
    networks = new_table(database, "net cidr, at pg_lsn, v text, PRIMARY KEY (net, at)")
    execute(database, f"INSERT INTO {networks} VALUES ('10.0.0.0/8', '0/16B3748', 'v')")
    table, items, old = snapshot(database, networks, grouped=grouped)
    keys = {item["key"] for item in check_items(table, items, old)}
    assert keys == {f'{key_prefix(table)}/"10.0.0.0//8"/"0//16B3748"'}
    # A plain integer key renders without to_json; a relation name needing escapes.
    odd = new_table(database, "id bigint PRIMARY KEY, v text")
    renamed = f'{odd}."x/y'
    execute(database, f"ALTER TABLE {odd} RENAME TO {quote_ident(renamed)}")
    execute(database, f"INSERT INTO {quote_ident(renamed)} VALUES (-5, NULL)")
    table, items, old = snapshot(database, renamed, grouped=grouped)
    assert table.name == renamed
    check_items(table, items, old)


def test_many_pages_and_a_where_clause_copied_by_one_query(database: str) -> None:
    # Columns named like the query's own names must not change which rows it reads.
    name = new_table(
        database, "id int PRIMARY KEY, pad text NOT NULL, g int, p int, first_page int"
    )
    execute(
        database,
        f"INSERT INTO {name} SELECT g, repeat('x', 200), g % 3, 0, 0"
        " FROM generate_series(1, 3000) g",
    )
    execute(database, f"DELETE FROM {name} WHERE id BETWEEN 200 AND 1200")
    table, items, old = snapshot(database, name)
    assert len(items) == 1999
    check_items(table, items, old)
    # A where clause: one query (a row per message), so that an index can serve it.
    table, items, old = snapshot(database, name, where='"g" = 1')
    assert (
        len(items)
        == len(old)
        == sum(1 for i in range(1, 3001) if i % 3 == 1 and not 200 <= i <= 1200)
    )
    check_items(table, items, old)
    columns = tuple(c.name for c in table.columns)
    layout = Layout("r", 100, 8192, 0)
    assert "string_agg" in snapshot_query(table, columns, None, layout)
    assert "string_agg" not in snapshot_query(table, columns, '"g" = 1', layout)


def test_out_of_line_values_and_child_tables_are_copied_a_row_per_message(database: str) -> None:
    name = new_table(database, "id int PRIMARY KEY, big text")
    execute(database, f"ALTER TABLE {name} ALTER COLUMN big SET STORAGE EXTERNAL")
    execute(database, f"INSERT INTO {name} VALUES (1, repeat('é', 100000)), (2, 'small')")

    async def layout() -> Layout:
        async with await psycopg.AsyncConnection.connect(database) as conn:
            return await table_layout(conn, await inspect_table(conn, "public", name))

    assert not asyncio.run(layout()).grouped
    table, items, old = snapshot(database, name, grouped=False)
    assert orjson.loads(items[0])["value"]["big"] == "é" * 100000
    check_items(table, items, old)
    # Child tables: the parent's page count says nothing about theirs.
    execute(database, f"UPDATE {name} SET big = 'small now'")
    execute(database, f"VACUUM FULL {name}")
    assert asyncio.run(layout()).grouped
    execute(database, f"CREATE TABLE {name}_child () INHERITS ({name})")
    assert not asyncio.run(layout()).grouped


# -- hypothesis: generated rows against change_item ----------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
rows = st.lists(
    st.tuples(
        texts,
        st.integers(-(2**63), 2**63 - 1),
        st.none() | texts,
        st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=5),
        st.none() | st.lists(st.none() | texts, max_size=3),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda row: (row[0], row[1]),
)


@settings(
    max_examples=int(os.environ.get("SNAPSHOT_ITEM_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(generated=rows, grouped=st.booleans())
def test_generated_rows_render_as_change_items(
    database: str, generated: list[tuple], grouped: bool
) -> None:
    name = new_table(database, "k text, n int8, t text, c char(5), a text[], PRIMARY KEY (k, n)")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.cursor().executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s)", generated)
    table, items, _ = snapshot(database, name, grouped=grouped)
    assert len(items) == len(generated)
    with psycopg.connect(database, options=session_options()) as conn:
        arrays = dict(conn.execute(f"SELECT k || '/' || n, a::text FROM {name}").fetchall())
    by_key = {orjson.loads(item)["key"]: item for item in items}
    for k, n, t, c, a in generated:
        row = {
            "k": k,
            "n": str(n),
            "t": t,
            "c": None if c is None else c.rstrip(" ").ljust(5),
            "a": arrays[f"{k}/{n}"] if a is not None else None,
        }
        expected = expected_item(table, row)
        assert by_key[orjson.loads(expected)["key"]] == expected
    execute(database, f"DROP TABLE {name}")


# -- chunk cuts -----------------------------------------------------------------------------


def _reference_cuts(items: list[bytes], chunk_bytes: int) -> list[int]:
    """Item by item: a cut after each item that takes its chunk to chunk_bytes or more."""
    cuts, position, start = [], 0, 0
    for item in items:
        position += len(item) + len(SEPARATOR)
        if position - start >= chunk_bytes:
            cuts.append(position)
            start = position
    return cuts


def test_offsets_and_positions_map_through_the_published_boundaries(tmp_path: Path) -> None:
    """A log's boundaries are kept as packed integers. Seeking any offset (a boundary's,
    one between two, one past all, `_inf`) and naming the offset at any position give what
    a plain search of the boundaries as tuples gives, also after a rebuild."""
    rng = random.Random(5)

    async def scenario() -> None:
        engine = StreamEngine(FileStore(tmp_path / "log"))
        await engine.start()
        stream, _ = await engine.create("/log", StreamConfig("application/json"), b"", False)
        shape_log = ShapeLog(engine, stream, 400)  # small chunks: cuts inside transactions
        await shape_log.append_snapshot(end=(1, 2, []))
        for lsn in range(100, 5000, rng.randrange(50, 150)):
            count = rng.randrange(1, 6)
            items = []
            for op in range(0, 2 * count, 2):
                headers = {"lsn": str(lsn), "op_position": op, "last": op == 2 * count - 2}
                body = {"headers": headers, "v": "x" * rng.randrange(90)}
                items.append(((lsn, op), orjson.dumps(body)))
            await shape_log.append_changes(items)
        rebuilt = ShapeLog(engine, stream, 400)
        rebuilt.rebuild()
        boundaries = shape_log.boundaries()
        assert rebuilt.boundaries() == boundaries and any(cut for _, _, cut in boundaries[1:])
        probes = {offset for offset, _, _ in boundaries}
        probes |= {(lsn + d, op) for (lsn, op), _, _ in boundaries for d in (-1, 1)}
        probes |= {(0, 0), (4999, INFINITY), (10**12, 0), (50, INFINITY)}
        for log in (shape_log, rebuilt):
            for probe in probes:
                before = [position for offset, position, _ in boundaries if offset <= probe]
                assert log.seek(probe) == (before[-1] if before else stream.base), probe
            assert log.seek(BEFORE_ALL) == stream.base
            for position in range(0, stream.durable.tail + 2, 7):
                at = [offset for offset, end, _ in boundaries if end <= position]
                assert log._offset_at(position) == (at[-1] if at else BEFORE_ALL), position
        await engine.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(6))
def test_snapshot_chunk_cuts_match_rebuild(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    chunk_bytes = rng.choice([1, 50, 300, 2000])
    items = [
        orjson.dumps({"key": str(i), "value": {"v": "x" * rng.randrange(0, 400)}})
        for i in range(rng.randrange(0, 300))
    ]
    framed = b"".join(item + SEPARATOR for item in items)

    async def scenario() -> None:
        engine = StreamEngine(FileStore(tmp_path / "log"))
        await engine.start()
        stream, _ = await engine.create("/log", StreamConfig("application/json"), b"", False)
        shape_log = ShapeLog(engine, stream, chunk_bytes)
        position = 0
        while position < len(framed):  # whole items, in blocks of random sizes
            end = framed.find(SEPARATOR, position + rng.randrange(0, 3000))
            end = len(framed) if end < 0 else end + len(SEPARATOR)
            await shape_log.append_snapshot(framed[position:end])
            position = end
        await shape_log.append_snapshot(end=(5, 9, [6, 7]))
        marker = control_item("snapshot-end", xmin="5", xmax="9", xip_list=["6", "7"])
        cuts = [*_reference_cuts(items, chunk_bytes), len(framed) + len(marker) + 2]
        assert shape_log._chunk_ends == [stream.base + cut for cut in cuts]
        offsets = [offset for offset, _, _ in shape_log.boundaries()]
        assert offsets == [(0, n) for n in range(len(shape_log._chunk_ends))]
        assert shape_log.snapshot_visible and shape_log.last_offset == offsets[-1]
        rebuilt = ShapeLog(engine, stream, chunk_bytes)
        rebuilt.rebuild()
        assert rebuilt.boundaries() == shape_log.boundaries()
        assert rebuilt._chunk_ends == shape_log._chunk_ends
        assert rebuilt.snapshot_done and rebuilt.visible_end == shape_log.visible_end
        await engine.stop()

    asyncio.run(scenario())


def test_parts_of_a_large_table_read_one_exported_snapshot(database: str) -> None:
    """Split over connections, the parts cover every page group exactly once, and helpers
    that join the exported snapshot do not see what committed after it."""
    name = new_table(database, "id int PRIMARY KEY, pad text NOT NULL")
    execute(
        database,
        f"INSERT INTO {name} SELECT g, repeat('x', 150) FROM generate_series(1, 4000) g",
    )

    async def scenario() -> None:
        options = session_options()
        async with await psycopg.AsyncConnection.connect(database, options=options) as conn:
            table = await inspect_table(conn, "public", name)
            columns = tuple(c.name for c in table.columns)
            await conn.rollback()
            await begin_snapshot(conn)
            layout = await table_layout(conn, table)
            assert layout.grouped and layout.pages > 40
            snapshot_id = await export_snapshot(conn)
            whole = b"".join(
                [
                    b
                    async for b in copy_items(
                        conn, snapshot_query(table, columns, None, layout), 1 << 20
                    )
                ]
            )
            # Committed after the snapshot: no part may see these.
            execute(database, f"DELETE FROM {name} WHERE id <= 1000")
            execute(database, f"INSERT INTO {name} VALUES (4001, 'late')")
            for count in (2, 3, 7):
                helpers = [
                    await psycopg.AsyncConnection.connect(database, options=options)
                    for _ in range(count - 1)
                ]
                try:
                    for helper in helpers:
                        await join_snapshot(helper, snapshot_id)
                    parts = []
                    for index, connection in enumerate([conn, *helpers]):
                        query = snapshot_query(table, columns, None, layout, (index, count))
                        parts.append(
                            b"".join([b async for b in copy_items(connection, query, 1 << 20)])
                        )
                finally:
                    for helper in helpers:
                        await helper.close()
                # A part per group of 16 pages at most: beyond that, parts are empty.
                assert sum(1 for part in parts if part) == min(count, layout.pages // 16 + 1)
                items = b"".join(parts).split(SEPARATOR)
                assert sorted(items) == sorted(whole.split(SEPARATOR))
                assert len(items) == 4001  # 4000 rows and the empty string after the last
            await conn.rollback()

    asyncio.run(scenario())
    small = Layout("r", PARALLEL_MIN_PAGES - 1, 8192, 0)
    large = Layout("r", PARALLEL_MIN_PAGES, 8192, 0)
    assert snapshot_parts(small, None, 4) == 1
    assert snapshot_parts(large, None, 4) == 4
    assert snapshot_parts(large, '"id" = 1', 4) == 1  # one query, so an index can serve it
    assert snapshot_parts(Layout("r", PARALLEL_MIN_PAGES, 8192, 1), None, 4) == 1  # TOAST
    assert snapshot_parts(large, None, 1) == 1


def test_a_shape_of_a_large_table_is_copied_over_several_connections(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `Shapes`: every row once in the shape's log, then the snapshot's end."""
    monkeypatch.setattr(snapshot_module, "PARALLEL_MIN_PAGES", 8)
    name = new_table(database, "id int PRIMARY KEY, pad text NOT NULL")
    execute(
        database,
        f"INSERT INTO {name} SELECT g, repeat('y', 150) FROM generate_series(1, 3000) g",
    )

    async def scenario() -> None:
        engine = StreamEngine(FileStore(tmp_path / "log"))
        await engine.start()
        shapes = Shapes(engine, database, chunk_bytes=32 * 1024, snapshot_connections=3)
        await shapes.load()
        shape = await shapes.get_or_create(ShapeDefinition("public", name))
        assert shape.snapshot is not None
        await shape.snapshot
        assert shape.failed is None and shape.log.snapshot_visible
        stream = shape.log.stream
        framed = engine.read_range(stream, stream.base, stream.durable.tail)
        lines = [orjson.loads(line) for line in framed.split(SEPARATOR)[:-1]]
        assert lines[-1]["headers"]["control"] == "snapshot-end"
        ids = sorted(int(line["value"]["id"]) for line in lines[:-1])
        assert ids == list(range(1, 3001))
        await engine.stop()

    asyncio.run(scenario())
