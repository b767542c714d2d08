"""`Shapes.apply` in process: a transaction Postgres sends again (it does after a
replication restart, from the last acknowledged position) reaches no log twice, whether
the routing process kept running or restarted and restored its shapes from disk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import fresh_database
from fusebox.streams.engine import StreamEngine
from fusebox.streams.framing import SEPARATOR
from fusebox.streams.store import FileStore
from fusebox.sync.changes import Change, Transaction
from fusebox.sync.shape import ShapeDefinition
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
