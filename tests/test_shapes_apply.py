"""`Shapes.apply` in process: a transaction Postgres sends again (it does after a
replication restart, from the last acknowledged position) reaches no log twice, whether
the routing process kept running or restarted and restored its shapes from disk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import psycopg
import pytest

from conftest import fresh_database
from fusebox.streams.engine import StreamEngine
from fusebox.streams.framing import SEPARATOR
from fusebox.streams.model import StreamConfig
from fusebox.streams.store import FileStore
from fusebox.sync.changes import Change, Transaction
from fusebox.sync.replication.lsn import MAX_LSN, parse_lsn
from fusebox.sync.shape import ShapeDefinition
from fusebox.sync.shape_log import ShapeLog
from fusebox.sync.shapes import Shape, Shapes
from postgres import PostgresCluster

RELATION = ("public", "events")


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[str]:
    with fresh_database(postgres, "shapes_apply") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE events (id int PRIMARY KEY, tenant int NOT NULL)")
        yield url


def insert(xid: int, lsn: int, *rows: tuple[int, int]) -> Transaction:
    changes = [
        Change("insert", RELATION, {"id": str(id_), "tenant": str(tenant)}) for id_, tenant in rows
    ]
    return Transaction(xid, lsn, changes)


def items(shape: Shape) -> int:
    """Change items durable in the shape's log (the snapshot is empty)."""
    stream = shape.log.stream
    data = shape.log.engine.read_range(stream, stream.base, stream.durable.tail)
    return sum(1 for line in data.split(SEPARATOR)[:-1] if b'"operation"' in line)


async def open_shapes(database: str, data_dir: Path) -> tuple[StreamEngine, Shapes]:
    engine = StreamEngine(FileStore(data_dir))
    await engine.start()
    shapes = Shapes(engine, database)
    await shapes.load()
    return engine, shapes


async def close(engine: StreamEngine, shapes: Shapes) -> None:
    await shapes.connections.close()
    await engine.stop()


async def apply(shapes: Shapes, transaction: Transaction) -> None:
    for commit in shapes.apply(transaction):
        await commit


def test_a_resent_transaction_reaches_no_log_twice(database: str, tmp_path: Path) -> None:
    # Transaction ids far past the shapes' snapshots, which would otherwise hold them.
    first = insert(10**9, 1_000, (1, 1), (2, 2), (3, 1))
    second = insert(10**9 + 1, 2_000, (4, 2))

    async def scenario() -> None:
        engine, shapes = await open_shapes(database, tmp_path)
        one, two = [
            await shapes.get_or_create(ShapeDefinition("public", "events", where=f"tenant = {t}"))
            for t in (1, 2)
        ]
        for shape in (one, two):
            assert shape.snapshot is not None
            await shape.snapshot
        await apply(shapes, first)
        assert (items(one), items(two)) == (2, 1)
        await apply(shapes, first)  # sent again while running
        assert (items(one), items(two)) == (2, 1)
        await close(engine, shapes)

        engine, shapes = await open_shapes(database, tmp_path)
        one, two = shapes.get(one.handle), shapes.get(two.handle)
        assert one is not None and two is not None
        await apply(shapes, first)  # sent again after a restart
        assert (items(one), items(two)) == (2, 1)
        await apply(shapes, second)
        await apply(shapes, second)
        assert (items(one), items(two)) == (2, 2)
        await close(engine, shapes)

    asyncio.run(scenario())


def operations(shape: Shape) -> list[tuple[str, str]]:
    """(operation, key) of each change item durable in the shape's log."""
    stream = shape.log.stream
    data = shape.log.engine.read_range(stream, stream.base, stream.durable.tail)
    found = []
    for line in data.split(SEPARATOR)[:-1]:
        item = orjson.loads(line)
        if "operation" in item["headers"]:
            found.append((item["headers"]["operation"], item["key"]))
    return found


def test_an_exact_shape_routes_like_one_that_evaluates_its_clause(
    database: str, tmp_path: Path
) -> None:
    """`tenant = 1` is exactly its index hint, so inserts and deletes the router finds it
    for skip evaluation; `tenant = 1 AND id > 0` is evaluated for every change. Both must
    log the same items, updates moving rows in and out included."""
    changes = [
        Change("insert", RELATION, {"id": "1", "tenant": "1"}),
        Change("insert", RELATION, {"id": "2", "tenant": "2"}),
        Change("update", RELATION, {"id": "2", "tenant": "1"}, {"id": "2", "tenant": "2"}),
        Change("update", RELATION, {"id": "1", "tenant": "3"}, {"id": "1", "tenant": "1"}),
        Change("delete", RELATION, None, {"id": "2", "tenant": "1"}),
        Change("delete", RELATION, None, {"id": "1", "tenant": "3"}),
    ]

    async def scenario() -> None:
        engine, shapes = await open_shapes(database, tmp_path)
        exact, evaluated = [
            await shapes.get_or_create(ShapeDefinition("public", "events", where=where))
            for where in ("tenant = 1", "tenant = 1 AND id > 0")
        ]
        assert exact.exact and not evaluated.exact
        for shape in (exact, evaluated):
            assert shape.snapshot is not None
            await shape.snapshot
        for number, change in enumerate(changes):
            await apply(shapes, Transaction(10**9 + number, 1_000 * (number + 1), [change]))
        expected = [
            ("insert", '"public"."events"/"1"'),
            ("insert", '"public"."events"/"2"'),
            ("delete", '"public"."events"/"1"'),
            ("delete", '"public"."events"/"2"'),
        ]
        assert operations(exact) == operations(evaluated) == expected
        await close(engine, shapes)

    asyncio.run(scenario())


def test_snapshots_see_nothing_past_their_horizon(database: str, tmp_path: Path) -> None:
    """A snapshot's horizon is read after it is taken: whatever committed before the
    snapshot has its commit record below it. Routing asks a shape's visibility only for
    transactions below the highest horizon, and restored shapes keep theirs."""

    async def scenario() -> None:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO events VALUES (100, 9) ON CONFLICT DO NOTHING")
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            committed_before = parse_lsn(row[0])
        engine, shapes = await open_shapes(database, tmp_path)
        shape = await shapes.get_or_create(ShapeDefinition("public", "events", where="tenant = 9"))
        assert shape.snapshot is not None and shape.visibility is not None
        await shape.snapshot
        horizon = shape.visibility.horizon
        assert committed_before <= horizon < MAX_LSN
        assert items(shape) == 1  # row 100, in the snapshot
        # Seen by the snapshot (older than its xmin) and below the horizon: skipped.
        await apply(shapes, insert(3, horizon - 1, (101, 9)))
        assert items(shape) == 1
        await close(engine, shapes)

        engine, shapes = await open_shapes(database, tmp_path)
        restored = shapes.get(shape.handle)
        assert restored is not None and restored.visibility == shape.visibility
        await apply(shapes, insert(3, horizon - 1, (101, 9)))
        assert items(restored) == 1
        await apply(shapes, insert(10**9, horizon + 1, (102, 9)))
        assert items(restored) == 2
        await close(engine, shapes)

    asyncio.run(scenario())


def test_appends_in_one_batch_become_visible_in_order(tmp_path: Path) -> None:
    """A log's own appends and the appends it shares with other logs publish from their
    commits' callbacks; queued in one store batch, they must still publish in order."""

    async def scenario() -> None:
        engine = StreamEngine(FileStore(tmp_path))
        await engine.start()
        shapes = Shapes(engine, "postgresql:///unused")  # never connects
        logs = []
        for name in ("one", "two"):
            config = StreamConfig("application/json")
            stream, _ = await engine.create(f"/logs/{name}", config, b"", False)
            log = ShapeLog(engine, stream, 1 << 20)
            log.snapshot_done = log.snapshot_visible = True
            logs.append(log)
        one, two = logs

        def item(lsn: int) -> list[tuple[tuple[int, int], bytes]]:
            return [((lsn, 0), orjson.dumps({"headers": {"lsn": str(lsn), "last": True}}))]

        # All three before the batch is written: one commit, callbacks in this order.
        commits = [one.append_changes(item(1))]
        shared = [(SimpleNamespace(log=log), item(2)) for log in (one, two)]
        commits.append(shapes._append_staged(shared))  # type: ignore[arg-type]
        commits.append(one.append_changes(item(3)))
        assert len({id(commit) for commit in commits}) == 1
        await asyncio.gather(*commits)
        await asyncio.sleep(0)  # the done callbacks
        assert [offset for offset, _, _ in one.boundaries()] == [(1, 0), (2, 0), (3, 0)]
        assert one.last_offset == (3, 0) and one.visible_end == one.stream.durable.tail
        assert two.last_offset == (2, 0)
        await engine.stop()

    asyncio.run(scenario())
