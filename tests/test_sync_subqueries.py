"""Shapes whose where clause has `column IN (SELECT ...)`, over real HTTP and replication.

The shape's rows must always end up exactly what `SELECT ... WHERE <clause>` gives:
changes to the shape's table are judged against the subquery's current result, and a
change to the subquery's table that lets a value in or out invalidates the shape (409,
the client refetches), as does a restart (the results are not kept on disk).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import SyncProcess, fresh_database
from postgres import PostgresCluster
from sync_client import ShapeConsumer

SECRET = "test-secret"
WHERE = "project_id IN (SELECT id FROM {projects} WHERE owner = $1)"
_serial = iter(range(10**6))


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[str]:
    with fresh_database(postgres, "sync_subqueries") as url:
        yield url


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sync-subqueries") / "data"


@pytest.fixture(scope="module")
def server(database: str, data_dir: Path) -> Iterator[SyncProcess]:
    server = SyncProcess(database, data_dir, extra_args=["--replication-stream-id", "subq"])
    try:
        yield server.start()
    finally:
        server.stop()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def tables(url: str) -> tuple[str, str]:
    """A projects table and a tasks table of this test's own."""
    suffix = f"{next(_serial)}_{time.monotonic_ns() % 10**6}"
    projects, tasks = f"projects{suffix}", f"tasks{suffix}"
    execute(
        url,
        f"CREATE TABLE {projects} (id int PRIMARY KEY, owner text, note text);"
        f"CREATE TABLE {tasks} (id int PRIMARY KEY, project_id int, title text);"
        f"INSERT INTO {projects} VALUES (1, 'alice', ''), (2, 'bob', ''), (3, 'alice', ''),"
        " (4, NULL, '');"
        f"INSERT INTO {tasks} SELECT i, i % 6, 't' || i FROM generate_series(1, 24) i;",
    )
    return projects, tasks


def expected(url: str, table: str, where: str) -> dict[str, dict[str, str | None]]:
    """The rows Postgres selects, keyed and valued as the shape's messages are."""
    with psycopg.connect(url) as conn:
        result = conn.execute(f"SELECT id, project_id, title FROM {table} WHERE {where}").pgresult
    assert result is not None
    rows = {}
    for r in range(result.ntuples):
        values = [result.get_value(r, c) for c in range(3)]
        row = dict(
            zip(
                ("id", "project_id", "title"),
                (None if v is None else bytes(v).decode() for v in values),
                strict=True,
            )
        )
        rows[f'"public"."{table}"/"{row["id"]}"'] = row
    return rows


def settle(consumer: ShapeConsumer, url: str, table: str, where: str, timeout: float = 30) -> None:
    """Follow until up to date with exactly Postgres's rows for the clause."""
    want = expected(url, table, where)
    deadline = time.monotonic() + timeout
    while not (consumer.up_to_date and consumer.rows == want):
        assert time.monotonic() < deadline, (consumer.describe(), consumer.rows, want)
        consumer.step()
    assert not consumer.anomalies, consumer.anomalies


def test_subquery_forms_are_checked_with_electrics_error_shape(
    server: SyncProcess, database: str
) -> None:
    projects, tasks = tables(database)
    for where, field, fragment in [
        (f"project_id IN (SELECT id, owner FROM {projects})", "where", "exactly one column"),
        (f"project_id IN (SELECT id FROM {projects} LIMIT 1)", "where", "plain `SELECT"),
        (f"project_id IN (SELECT owner FROM {projects})", "where", "has type integer but"),
        (f"project_id IN (SELECT id FROM {projects} WHERE title = 'x')", "where", "title"),
        (f"EXISTS (SELECT 1 FROM {projects})", "where", "only `value IN (SELECT ...)`"),
        ("project_id IN (SELECT id FROM nowhere_at_all)", "table", "does not exist"),
    ]:
        response = httpx.get(
            f"{server.url}/v1/shape",
            params={"table": tasks, "where": where, "offset": "-1", "secret": SECRET},
        )
        assert response.status_code == 400, (where, response.text)
        body = response.json()
        assert body["message"] == "Invalid request", body
        assert fragment in body["errors"][field][0], body


def test_changes_follow_the_subquery_and_moves_make_clients_refetch(
    server: SyncProcess, database: str
) -> None:
    projects, tasks = tables(database)
    where = WHERE.format(projects=projects)
    literal = where.replace("$1", "'alice'")
    consumer = ShapeConsumer(server.url, {"table": tasks, "where": where, "params[1]": "alice"})
    consumer.sync()
    assert consumer.rows == expected(database, tasks, literal)
    assert {row["project_id"] for row in consumer.rows.values()} == {"1", "3"}
    handle = consumer.handle

    # The subquery's table is published with the whole old row, like the shape's own.
    with psycopg.connect(database) as conn:
        (identity,) = conn.execute(
            "SELECT relreplident FROM pg_class WHERE relname = %s", [projects]
        ).fetchone()
        published = conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE tablename = %s", [projects]
        ).fetchall()
    assert identity == "f" and published

    # Rows of the shape's table: judged against the current result.
    execute(
        database,
        f"INSERT INTO {tasks} VALUES (100, 2, 'bob''s'), (101, 3, 'in'), (102, NULL, 'none');"
        f"UPDATE {tasks} SET project_id = 2 WHERE id = 1;"  # moves out
        f"UPDATE {tasks} SET project_id = 1 WHERE id = 2",  # moves in
    )
    settle(consumer, database, tasks, literal)
    # Changes to the subquery's table that leave its result as it was: no refetch.
    execute(
        database,
        f"UPDATE {projects} SET note = 'x' WHERE id = 1;"
        f"INSERT INTO {projects} VALUES (5, 'bob', ''), (6, 'alice', '');"
        f"DELETE FROM {projects} WHERE id = 6;"
        f"INSERT INTO {projects} VALUES (7, 'alice', '');"
        f"UPDATE {projects} SET id = 8 WHERE id = 7;"
        f"DELETE FROM {projects} WHERE id = 8",
    )
    execute(database, f"INSERT INTO {tasks} VALUES (103, 1, 'marker')")
    settle(consumer, database, tasks, literal)
    assert consumer.refetches == 0 and consumer.handle == handle

    # A value enters the result: tasks of project 2 move in, through a refetch.
    execute(database, f"UPDATE {projects} SET owner = 'alice' WHERE id = 2")
    settle(consumer, database, tasks, literal)
    assert consumer.refetches == 1
    assert {row["project_id"] for row in consumer.rows.values()} == {"1", "2", "3"}
    # A value leaves it: by delete, then by an update moving the row out of its where.
    execute(database, f"DELETE FROM {projects} WHERE id = 1")
    settle(consumer, database, tasks, literal)
    execute(database, f"UPDATE {projects} SET owner = 'carol' WHERE id = 3")
    settle(consumer, database, tasks, literal)
    assert consumer.refetches == 3
    assert {row["project_id"] for row in consumer.rows.values()} == {"2"}
    # Truncating the subquery's table empties the result.
    execute(database, f"TRUNCATE {projects}")
    settle(consumer, database, tasks, literal)
    assert consumer.rows == {} and consumer.refetches == 4


def test_not_in_with_nulls_and_nested_subqueries(server: SyncProcess, database: str) -> None:
    projects, tasks = tables(database)
    teams = f"teams_{projects}"
    execute(database, f"CREATE TABLE {teams} (id int PRIMARY KEY, name text);")
    execute(database, f"INSERT INTO {teams} VALUES (1, 'a'); ALTER TABLE {projects} ADD team int")
    execute(database, f"UPDATE {projects} SET team = 1 WHERE id IN (1, 2)")
    # The result holds a NULL (project 4 has no owner): NOT IN selects nothing.
    not_in = f"project_id NOT IN (SELECT id FROM {projects} WHERE owner IS NULL OR id > 2)"
    nested = (
        f"project_id IN (SELECT id FROM {projects} WHERE team IN "
        f"(SELECT id FROM {teams} WHERE name = 'a'))"
    )
    consumers = {
        where: ShapeConsumer(server.url, {"table": tasks, "where": where})
        for where in (not_in, nested)
    }
    for where, consumer in consumers.items():
        consumer.sync()
        assert consumer.rows == expected(database, tasks, where), where
    assert {r["project_id"] for r in consumers[nested].rows.values()} == {"1", "2"}
    # The innermost result changes: the outer shape is refetched.
    execute(database, f"INSERT INTO {teams} VALUES (2, 'a'); UPDATE {projects} SET team = 2")
    execute(database, f"UPDATE {projects} SET id = 40 WHERE id = 4")
    for where, consumer in consumers.items():
        settle(consumer, database, tasks, where)
    assert {r["project_id"] for r in consumers[nested].rows.values()} == {"1", "2", "3"}
    assert consumers[nested].refetches == 1 and consumers[not_in].refetches == 1


def test_restart_keeps_the_rows_right(database: str, data_dir: Path, server: SyncProcess) -> None:
    projects, tasks = tables(database)
    where = WHERE.format(projects=projects)
    literal = where.replace("$1", "'alice'")
    consumer = ShapeConsumer(server.url, {"table": tasks, "where": where, "params[1]": "alice"})
    consumer.sync()
    plain = ShapeConsumer(server.url, {"table": tasks})
    plain.sync()
    server.stop()
    try:
        # While the server is down, the subquery's result changes.
        execute(database, f"UPDATE {projects} SET owner = 'alice' WHERE id = 2")
        execute(database, f"INSERT INTO {tasks} VALUES (200, 2, 'new')")
    finally:
        server.start()
    settle(consumer, database, tasks, literal)
    assert consumer.refetches == 1
    # Shapes without subqueries resume as before.
    settle(plain, database, tasks, "true")
    assert plain.refetches == 0
    execute(database, f"INSERT INTO {tasks} VALUES (201, 2, 'after')")
    settle(consumer, database, tasks, literal)
    assert consumer.refetches == 1


def test_changes_only_shapes_follow_the_subquery_too(server: SyncProcess, database: str) -> None:
    projects, tasks = tables(database)
    where = WHERE.format(projects=projects)
    consumer = ShapeConsumer(
        server.url,
        {"table": tasks, "where": where, "params[1]": "alice", "log": "changes_only"},
    )
    consumer.sync()
    assert consumer.rows == {}
    execute(database, f"INSERT INTO {tasks} VALUES (300, 1, 'in'), (301, 2, 'out')")
    deadline = time.monotonic() + 30
    while f'"public"."{tasks}"/"300"' not in consumer.rows:
        assert time.monotonic() < deadline, consumer.describe()
        consumer.step()
    assert set(consumer.rows) == {f'"public"."{tasks}"/"300"'}
