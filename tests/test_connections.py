"""Reuse of Postgres connections by a source (`sync/connections.py`) and the once-per-table
check that a table is published (`Replication.prepare_table`), against a real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from conftest import fresh_database
from fusebox.sync import service
from fusebox.sync.connections import Connections
from fusebox.sync.protocol import SyncStatus
from fusebox.sync.schema import inspect_table
from fusebox.sync.service import Replication, SyncSettings
from postgres import PostgresCluster


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[str]:
    with fresh_database(postgres, "connections") as url:
        yield url


def backend_pid(conn: psycopg.AsyncConnection) -> int:
    return conn.info.backend_pid


def test_connections_are_reused_clean_and_replaced_when_dead(database: str) -> None:
    async def scenario() -> None:
        pool = Connections(database, idle=2)
        async with pool.connection() as conn:
            first = backend_pid(conn)
            await conn.execute("SELECT 1")  # left inside a transaction
            # Electric's session settings on every connection.
            cursor = await conn.execute("SHOW extra_float_digits")
            assert (await cursor.fetchone()) == ("1",)
        async with pool.connection() as conn:
            assert backend_pid(conn) == first  # reused
            assert conn.info.transaction_status == TransactionStatus.IDLE  # rolled back
        # A connection killed while idle (say, Postgres restarted) is replaced.
        with psycopg.connect(database, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        async with pool.connection() as conn:
            assert backend_pid(conn) != first
            cursor = await conn.execute("SELECT 41 + 1")
            assert (await cursor.fetchone()) == (42,)
            second = backend_pid(conn)
        # One that saw an error inside the block is not kept.
        with pytest.raises(ZeroDivisionError):
            async with pool.connection() as conn:
                assert backend_pid(conn) == second
                raise ZeroDivisionError
        async with pool.connection() as conn:
            assert backend_pid(conn) != second
        # At most `idle` are kept.
        async with pool.connection() as a, pool.connection() as b, pool.connection() as c:
            held = {backend_pid(a), backend_pid(b), backend_pid(c)}
        assert len(pool._idle) == 2 and {backend_pid(c) for c in pool._idle} <= held
        await pool.close()
        assert not pool._idle

    asyncio.run(scenario())


def test_a_table_is_checked_for_the_publication_once_not_per_shape(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE published (id int PRIMARY KEY)")
    connects = []
    original = psycopg.connect

    def counting(*args, **kwargs):
        connects.append(args)
        return original(*args, **kwargs)

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database) as conn:
            table = await inspect_table(conn, "public", "published")
        settings = SyncSettings(database, tmp_path, stream_id="prepared_once")
        replication = Replication(settings, shapes=None, status=SyncStatus())  # type: ignore[arg-type]
        monkeypatch.setattr(service.psycopg, "connect", counting)
        # Concurrent creations of shapes of one table share one check.
        await asyncio.gather(*(replication.prepare_table(table) for _ in range(5)))
        await replication.prepare_table(table)
        assert len(connects) == 1
        monkeypatch.setattr(service, "PREPARED_SECONDS", 0.0)
        await replication.prepare_table(table)  # the check is due again
        assert len(connects) == 2
        monkeypatch.setattr(service.psycopg, "connect", original)
        with psycopg.connect(database) as conn:
            row = conn.execute(
                "SELECT relreplident FROM pg_class WHERE relname = 'published'"
            ).fetchone()
            published = conn.execute(
                "SELECT count(*) FROM pg_publication_tables"
                " WHERE pubname = %s AND tablename = 'published'",
                (replication.names.publication,),
            ).fetchone()
        assert row == ("f",) and published == (1,)

    asyncio.run(scenario())
