"""Fault tolerance of `fusebox sync serve`: consumers end with exactly the table's rows.

Several consumers (the whole table, a where clause, selected columns, replica full) follow
one table while a writer changes it, and the test breaks things under them:

- Postgres restarted mid-stream (changes right before the stop and after the start):
  meanwhile shape requests get 503 with Retry-After and `/v1/health` is not active; the
  shapes survive (no 409) and every consumer ends with exactly its rows;
- the sync server SIGKILLed mid-stream, twice, while the writer keeps writing: consumers
  resume with the same handle and offset (no 409) and end with exactly their rows;
- TRUNCATE and `ALTER TABLE ... ADD COLUMN`: consumers get 409, refetch and end with
  exactly their rows;
- the slot's `confirmed_flush_lsn` advances once changes are synced, but not past changes
  the server has not made durable: with the server's main process stopped (SIGSTOP) and
  then SIGKILLed, changes committed meanwhile are still delivered after a restart.

"Exactly their rows" is compared with a SELECT of the shape at the end. These tests run on
a Postgres cluster of their own, since they stop and restart it.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import SyncProcess
from fusebox.streams.records import decode_records
from postgres import PostgresCluster, create_cluster
from sync_client import ShapeConsumer

SHAPES = [
    {"table": "items"},
    {"table": "items", "where": "n >= 500"},
    {"table": "items", "columns": "id,name"},
    {"table": "items", "replica": "full", "where": "name LIKE 'a%'"},
]
SLOT = "electric_slot_default"


# -- environment --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own: the tests stop and restart it."""
    # The replication process reports its position every wal_sender_timeout / 3: the slot
    # test then sees a report soon after its changes.
    cluster = create_cluster(wal_sender_timeout="5s")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def database(cluster: PostgresCluster) -> Iterator[str]:
    name = f"faults_{os.getpid()}_{time.monotonic_ns()}"
    cluster.psql(f"CREATE DATABASE {name}")
    url = cluster.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, n int)")
        conn.execute(
            "INSERT INTO items SELECT g, chr(97 + g % 4) || '-' || g, (g * 37) % 1000 "
            "FROM generate_series(1, 60) g"
        )
    try:
        yield url
    finally:
        running = cluster._run("pg_ctl", "-D", str(cluster.data_dir), "status", check=False)
        if running.returncode != 0:  # a test failed while it was stopped
            cluster.start()
        # Slot names are per cluster: the next test's server needs this one gone.
        slots = f"FROM pg_replication_slots WHERE database = '{name}'"
        wait_for(lambda: cluster.psql(f"SELECT count(*) {slots} AND active") == "0")
        cluster.psql(f"SELECT pg_drop_replication_slot(slot_name) {slots}")
        cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def server(database: str, tmp_path: Path) -> Iterator[SyncProcess]:
    server = SyncProcess(database, tmp_path / "sync-data", extra_args=["--chunk-bytes", "4000"])
    try:
        yield server.start()
    finally:
        if server.process is not None:
            with_signal(server, signal.SIGCONT)
        server.stop()


@pytest.fixture
def consumers(server: SyncProcess) -> Iterator[list[ShapeConsumer]]:
    """One consumer per shape, following it in the background."""
    followers = [ShapeConsumer(server.url, shape) for shape in SHAPES]
    try:
        yield followers
    finally:
        errors = []
        for follower in followers:
            follower.stop_soon()
        for follower in followers:
            try:
                follower.stop()
            except BaseException as exc:  # report every consumer's failure, stop them all
                errors.append(exc)
        if errors:
            raise errors[0]


def with_signal(server: SyncProcess, signum: int) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signum)


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or condition}")
        time.sleep(0.1)


def health(server: SyncProcess) -> tuple[int, str]:
    try:
        response = httpx.get(f"{server.url}/v1/health", timeout=5)
    except httpx.TransportError:
        return 0, "unreachable"
    return response.status_code, response.json()["status"]


# -- the table and what each shape must hold ----------------------------------------------


def table_rows(url: str, shape: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """The rows a consumer of `shape` must hold, keyed as Electric keys them."""
    with psycopg.connect(url) as conn:
        if "columns" in shape:
            columns = shape["columns"].split(",")
        else:
            found = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'items'::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
            columns = [row[0] for row in found]
        select = ", ".join(f'"{column}"::text' for column in columns)
        where = f" WHERE {shape['where']}" if "where" in shape else ""
        rows = conn.execute(f"SELECT {select} FROM items{where}").fetchall()
    return {f'"public"."items"/"{row[0]}"': dict(zip(columns, row, strict=True)) for row in rows}


def converge(consumers: list[ShapeConsumer], url: str, timeout: float = 60.0) -> None:
    """Every consumer ends with exactly the rows of its shape, and saw no impossible change."""
    for consumer in consumers:
        assert not consumer.anomalies, f"{consumer.describe()}: {consumer.anomalies[:3]}"
        up_to_date_lsns_not_behind(consumer)
        expected = table_rows(url, consumer.shape)
        try:
            consumer.wait_until(lambda rows, e=expected: rows == e, timeout=timeout)
        except TimeoutError:
            got = consumer.rows
            missing = sorted(set(expected) - set(got))[:5]
            extra = sorted(set(got) - set(expected))[:5]
            wrong = [k for k in expected if k in got and got[k] != expected[k]][:5]
            raise AssertionError(
                f"{consumer.describe()}: missing {missing}, extra {extra}, "
                f"wrong {[(k, got[k], expected[k]) for k in wrong]}"
            ) from None


def up_to_date_lsns_not_behind(consumer: ShapeConsumer) -> None:
    """An up-to-date's `global_last_seen_lsn` is never behind the offset it comes with.

    Electric's client in SSE mode takes `<global_last_seen_lsn>_0` as its next offset.
    """
    for exchange in consumer.exchanges:
        if exchange.status != 200 or not exchange.messages:
            continue
        control = exchange.messages[-1]["headers"]
        if control.get("control") == "up-to-date":
            offset = offset_key(exchange.headers["electric-offset"])
            assert int(control["global_last_seen_lsn"]) >= offset[0], (exchange.params, control)


class Writer:
    """Random inserts, updates (in and out of the where clauses), key changes, deletes."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.random = random.Random(seed)
        self.next_id = 10_000 + seed * 100_000
        self.done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _statement(self, conn: psycopg.Connection) -> None:
        pick = self.random.random()
        ids = [row[0] for row in conn.execute("SELECT id FROM items ORDER BY id")]
        if pick < 0.35 or len(ids) < 10:
            self.next_id += 1
            name = self.random.choice("abcd") + f"-{self.next_id}"
            n = self.random.randrange(1000)
            conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (self.next_id, name, n))
        elif pick < 0.6:
            conn.execute(
                "UPDATE items SET n = %s WHERE id = %s",
                (self.random.randrange(1000), self.random.choice(ids)),
            )
        elif pick < 0.75:
            name = self.random.choice("abcd") + f"-renamed-{self.random.randrange(10**6)}"
            conn.execute(
                "UPDATE items SET name = %s WHERE id = %s", (name, self.random.choice(ids))
            )
        elif pick < 0.85:
            self.next_id += 1
            conn.execute(
                "UPDATE items SET id = %s WHERE id = %s", (self.next_id, self.random.choice(ids))
            )
        else:
            conn.execute("DELETE FROM items WHERE id = %s", (self.random.choice(ids),))

    def run(self, transactions: int) -> None:
        """Commit `transactions` transactions of one to three statements each."""
        with psycopg.connect(self.url) as conn:
            for _ in range(transactions):
                with conn.transaction():
                    for _ in range(self.random.randint(1, 3)):
                        self._statement(conn)
                self.done += 1

    def start(self, transactions: int) -> Writer:
        def loop() -> None:
            try:
                with psycopg.connect(self.url) as conn:
                    for _ in range(transactions):
                        if self._stop.is_set():
                            return
                        with conn.transaction():
                            for _ in range(self.random.randint(1, 3)):
                                self._statement(conn)
                        self.done += 1
                        time.sleep(0.01)
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=120)
        if self.error is not None:
            raise self.error

    def wait_done(self, count: int) -> None:
        wait_for(lambda: self.done >= count or self.error, what=f"{count} transactions")
        if self.error is not None:
            raise self.error


def no_server_errors(consumers: list[ShapeConsumer]) -> None:
    for consumer in consumers:
        bad = [s for s in consumer.statuses() if s >= 500 and s != 503]
        assert not bad, f"{consumer.describe()}: server errors {bad}"


def resumed_exactly(consumers: list[ShapeConsumer], url: str, handles: list[str | None]) -> None:
    """Every consumer ends with exactly its rows, under the handle it had, never refetching."""
    converge(consumers, url)
    assert [consumer.handle for consumer in consumers] == handles
    assert all(consumer.refetches == 0 for consumer in consumers)
    no_server_errors(consumers)


# -- tests --------------------------------------------------------------------------------


def test_postgres_restart_mid_stream(
    cluster: PostgresCluster,
    database: str,
    server: SyncProcess,
    consumers: list[ShapeConsumer],
) -> None:
    for consumer in consumers:
        consumer.start()
    converge(consumers, database)
    handles = [consumer.handle for consumer in consumers]
    whole = consumers[0]

    # Changes right before the stop: the server may not have all of them when it goes.
    Writer(database, seed=1).run(40)
    cluster.stop()

    wait_for(lambda: health(server)[1] != "active", what="health to leave active")
    # Postgres stays down through several reconnection attempts of the server. Meanwhile a
    # shape that exists (resumed from an offset) and a new one get 503 with Retry-After,
    # quickly (no hang), and health says it is not active.
    shape_url = f"{server.url}/v1/shape"
    resumed = {"table": "items", "offset": whole.offset, "handle": whole.handle}
    created = {"table": "items", "offset": "-1", "where": "n < 3"}
    down_until = time.monotonic() + 4
    while time.monotonic() < down_until:
        status, state = health(server)
        assert status == 202 and state in ("starting", "waiting"), (status, state)
        for params in (resumed, created):
            response = httpx.get(shape_url, params={**params, "secret": "test-secret"}, timeout=10)
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["code"] == "database_unreachable"
        time.sleep(0.25)

    cluster.start()
    wait_for(lambda: health(server) == (200, "active"), timeout=60, what="active again")
    Writer(database, seed=2).run(40)

    resumed_exactly(consumers, database, handles)


def test_server_starts_while_postgres_is_down(
    cluster: PostgresCluster,
    database: str,
    server: SyncProcess,
    consumers: list[ShapeConsumer],
) -> None:
    """A restart with shapes on disk and Postgres down: the server comes up answering 503,
    restores its shapes when Postgres is back, and clients resume where they were."""
    for consumer in consumers:
        consumer.start()
    converge(consumers, database)
    handles = [consumer.handle for consumer in consumers]
    whole = consumers[0]

    server.stop()
    cluster.stop()
    try:
        server.start(wait_active=False)
        shape_url = f"{server.url}/v1/shape"
        resumed = {"table": "items", "offset": whole.offset, "handle": whole.handle}
        for _ in range(3):
            assert health(server) == (202, "starting")
            response = httpx.get(shape_url, params={**resumed, "secret": "test-secret"}, timeout=10)
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
            time.sleep(0.5)
    finally:
        cluster.start()
    wait_for(lambda: health(server) == (200, "active"), timeout=60, what="active after start")
    Writer(database, seed=5).run(20)

    resumed_exactly(consumers, database, handles)


def test_database_refusing_connections_is_503_not_500(
    cluster: PostgresCluster, database: str, server: SyncProcess
) -> None:
    """Replication stays up, but a new shape cannot reach the database: 503, then fine."""
    name = database.rsplit("/", 1)[1]
    params = {"table": "items", "offset": "-1", "where": "n < 10", "secret": "test-secret"}
    cluster.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    try:
        response = httpx.get(f"{server.url}/v1/shape", params=params, timeout=30)
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
        assert health(server) == (200, "active")
    finally:
        cluster.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    response = httpx.get(f"{server.url}/v1/shape", params=params, timeout=30)
    assert response.status_code == 200


def test_sync_server_sigkill_mid_stream(
    database: str, server: SyncProcess, consumers: list[ShapeConsumer]
) -> None:
    for consumer in consumers:
        consumer.start()
    converge(consumers, database)
    handles = [consumer.handle for consumer in consumers]

    writer = Writer(database, seed=3).start(100)
    for round_ in (1, 2):
        writer.wait_done(35 * round_)
        offsets = [consumer.offset for consumer in consumers]
        server.kill()
        writer.wait_done(35 * round_ + 10)  # changes while the server is gone
        server.start()
        # Each consumer resumes where it was: same handle, an offset at least as far.
        for consumer, handle, before in zip(consumers, handles, offsets, strict=True):
            consumer.wait_until(lambda _, c=consumer: c.exchanges[-1].status == 200)
            assert consumer.handle == handle
            assert offset_key(consumer.offset) >= offset_key(before)
    writer.join()

    converge(consumers, database)
    for consumer, handle in zip(consumers, handles, strict=True):
        assert consumer.handle == handle
        assert consumer.refetches == 0, consumer.describe()
        assert 409 not in consumer.statuses()
        assert 0 in consumer.statuses()  # it did see the server go away
    no_server_errors(consumers)


def test_a_snapshot_stored_outside_the_wal_survives_sigkill(
    database: str, server: SyncProcess
) -> None:
    """A snapshot block of 1 MiB or more skips the WAL: it is synced in the shape's data file
    and only its length is logged. After SIGKILL, the client that read it resumes with the
    same handle, and a new client reads the whole snapshot back from the data files."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO items SELECT g, repeat('s', 200) || g, g % 1000"
            " FROM generate_series(1000, 7000) g"
        )
    first = ShapeConsumer(server.url, {"table": "items"})
    first.start()
    converge([first], database)
    handle = first.handle
    wal = sorted((server.data_dir / "log" / "wal").glob("*.wal"))
    records = [r for path in wal for r, _ in decode_records(path.read_bytes())]
    assert any(r.external >= 1024 * 1024 for r in records), "the snapshot went through the WAL"

    server.kill()
    Writer(database, seed=8).run(10)  # changes while the server is gone
    server.start()
    Writer(database, seed=9).run(10)
    second = ShapeConsumer(server.url, {"table": "items"})
    second.start()
    try:
        converge([first, second], database)
        assert first.handle == second.handle == handle
        assert first.refetches == second.refetches == 0
        no_server_errors([first, second])
    finally:
        for consumer in (first, second):
            consumer.stop_soon()
        for consumer in (first, second):
            consumer.stop()


def offset_key(offset: str) -> tuple[int, int]:
    if offset == "-1":
        return (-1, 0)
    tx, _, op = offset.partition("_")
    return (int(tx), 2**63 if op == "inf" else int(op))


@pytest.mark.parametrize(
    "change",
    [
        "TRUNCATE items; INSERT INTO items VALUES (1, 'a-after', 900), (2, 'b-after', 10)",
        "ALTER TABLE items ADD COLUMN extra text DEFAULT 'x'; "
        "UPDATE items SET n = n + 1 WHERE id % 5 = 0",
    ],
    ids=["truncate", "add-column"],
)
def test_schema_change_or_truncate_refetches_to_the_exact_rows(
    database: str, server: SyncProcess, consumers: list[ShapeConsumer], change: str
) -> None:
    for consumer in consumers:
        consumer.start()
    converge(consumers, database)
    handles = [consumer.handle for consumer in consumers]
    Writer(database, seed=4).run(10)

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(change)
    Writer(database, seed=5).run(10)

    for consumer in consumers:
        consumer.wait_until(lambda _, c=consumer: c.refetches >= 1)
    converge(consumers, database)
    for consumer, handle in zip(consumers, handles, strict=True):
        assert consumer.handle != handle
        refetch = next(e for e in consumer.exchanges if e.status == 409)
        assert refetch.messages == [{"headers": {"control": "must-refetch"}}]
    if "extra" in change:
        assert all(row["extra"] == "x" for row in consumers[0].rows.values())
    no_server_errors(consumers)


# -- acknowledgement of the WAL position --------------------------------------------------


def slot_lsn(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots "
            "WHERE slot_name = %s AND database = current_database()",
            (SLOT,),
        ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def test_slot_advances_only_past_durable_changes(
    database: str, server: SyncProcess, consumers: list[ShapeConsumer]
) -> None:
    whole = consumers[0]
    whole.sync()

    # Synced changes are acknowledged: the slot moves past their commit.
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (9001, 'a-acked', 1)")
    whole.sync()
    synced_lsn = max(int(m["headers"]["lsn"]) for m in whole.messages if "lsn" in m["headers"])
    wait_for(lambda: slot_lsn(database) > synced_lsn, what="confirmed_flush_lsn to advance")

    # The server's main process stops (its replication process goes on): changes committed
    # now reach the replication process but are never made durable, so they must not be
    # acknowledged, and after a crash and restart they are delivered.
    with_signal(server, signal.SIGSTOP)
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (9002, 'a-pending', 2)")
            conn.execute("UPDATE items SET name = 'a-pending-update' WHERE id = 9001")
            commit_lsn = int(
                conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()[0]
            )
            sent_at = conn.execute("SELECT now()").fetchone()[0]

            def replied() -> bool:
                row = conn.execute(
                    "SELECT r.sent_lsn - '0/0', r.reply_time FROM pg_stat_replication r "
                    "JOIN pg_replication_slots s ON s.active_pid = r.pid "
                    "WHERE s.slot_name = %s AND s.database = current_database()",
                    (SLOT,),
                ).fetchone()
                return row is not None and row[0] >= commit_lsn and row[1] > sent_at

            # The replication process received them and has reported its position since.
            wait_for(replied, timeout=60, what="a standby status update after the changes")
        assert slot_lsn(database) < commit_lsn
        server.kill()
    finally:
        if server.process is not None:
            with_signal(server, signal.SIGCONT)
    server.start()

    whole.start()
    converge([whole], database)
    assert whole.refetches == 0
    assert whole.rows['"public"."items"/"9001"']["name"] == "a-pending-update"
    assert '"public"."items"/"9002"' in whole.rows
    wait_for(lambda: slot_lsn(database) >= commit_lsn, what="the slot to pass the changes")


# -- shapes created under load ------------------------------------------------------------


def test_shapes_created_while_rows_change(
    database: str, server: SyncProcess, consumers: list[ShapeConsumer]
) -> None:
    """A new shape's snapshot and the changes around it join without a gap or a replay.

    The table is large enough that each snapshot takes a while, and a writer keeps
    inserting and updating rows, so transactions arrive before a new shape's snapshot
    visibility is known, while it copies, and while it hands over to the log.
    """
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO items SELECT g, 'a-' || repeat('x', 200), g "
            "FROM generate_series(61, 6000) g"
        )
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with psycopg.connect(database, autocommit=True) as conn:
                step = 0
                while not stop.is_set():
                    step += 1
                    conn.execute(
                        "INSERT INTO items VALUES (%s, %s, %s)", (20_000 + step, f"a-{step}", step)
                    )
                    conn.execute("UPDATE items SET n = n + 1 WHERE id IN (1, 2)")
                    time.sleep(0.002)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    followers = []
    try:
        for limit in range(100_000, 100_005):
            follower = ShapeConsumer(server.url, {"table": "items", "where": f"id < {limit}"})
            consumers.append(follower)  # stopped by the fixture
            followers.append(follower.start())
            follower.wait_until(lambda _, f=follower: f.up_to_date, timeout=60)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures
    converge(followers, database)
