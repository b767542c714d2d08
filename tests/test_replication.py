"""The replication layer against a real Postgres: decoding, slots, feedback, restarts, lock.

Each test uses its own slot and publication (dropped at the end) in a database of this
module's own. Tests that restart the server or invalidate slots use a private cluster,
so that nothing else sharing the session's cluster is disturbed.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from fusebox.sync.replication import (
    DEFAULT_NAMES,
    AsyncReplicationStream,
    ConnectionLost,
    ReplicationConnection,
    ReplicationLock,
    ReplicationNames,
    ReplicationStream,
    ServerError,
    SlotInUse,
    SlotInvalidated,
    SlotMissing,
    SystemIdChanged,
    SystemIdentity,
    TableNotFound,
    TimelineChanged,
    add_table,
    check_identity,
    ensure_publication,
    format_lsn,
    parse_lsn,
    published_tables,
    remove_table,
)
from fusebox.sync.replication.lsn import InvalidLsn
from fusebox.sync.replication.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    DecodeError,
    Decoder,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputMessage,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)
from postgres import PostgresCluster, create_cluster

WAIT = 60.0  # a guard against hanging, never a timing assertion


# -- helpers -------------------------------------------------------------------------


def unique() -> str:
    return uuid.uuid4().hex[:10]


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def collect(
    stream: ReplicationStream, done: Callable[[list[PgOutputMessage]], bool]
) -> list[PgOutputMessage]:
    got: list[PgOutputMessage] = []
    deadline = time.monotonic() + WAIT
    while not done(got):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last messages: {got[-5:]}")
        got.extend(stream.poll(timeout=0.5))
    return got


def commits(count: int) -> Callable[[list[PgOutputMessage]], bool]:
    return lambda got: sum(isinstance(m, Commit) for m in got) >= count


def transactions(messages: list[PgOutputMessage]) -> list[list[PgOutputMessage]]:
    """Begin..Commit groups, without the Relation and Type messages inside them."""
    groups: list[list[PgOutputMessage]] = []
    current: list[PgOutputMessage] | None = None
    for message in messages:
        if isinstance(message, Begin):
            current = [message]
        elif current is not None and not isinstance(message, Relation | Type):
            current.append(message)
            if isinstance(message, Commit):
                groups.append(current)
                current = None
    return groups


def inserted(messages: list[PgOutputMessage]) -> list[str | None]:
    return [m.new_tuple[0] for m in messages if isinstance(m, Insert)]  # type: ignore[misc]


def slot_row(conn: psycopg.Connection, slot: str) -> tuple | None:
    return conn.execute(
        "SELECT confirmed_flush_lsn::text, wal_status, active_pid"
        " FROM pg_replication_slots WHERE slot_name = %s",
        [slot],
    ).fetchone()


def confirmed_flush(conn: psycopg.Connection, slot: str) -> int:
    row = slot_row(conn, slot)
    assert row is not None
    return parse_lsn(row[0])


def drop_slot(conn: psycopg.Connection, slot: str) -> None:
    """Drop a slot even while a walsender of a closed client is still exiting."""
    deadline = time.monotonic() + WAIT
    while True:
        row = slot_row(conn, slot)
        if row is None:
            return
        if row[2] is not None:
            conn.execute("SELECT pg_terminate_backend(%s)", [row[2]])
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[str]:
    name = f"repl_{unique()}"
    postgres.psql(f"CREATE DATABASE {name}")
    yield name
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def url(postgres: PostgresCluster, database: str) -> str:
    return postgres.url(database)


@pytest.fixture
def admin(url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def names(admin: psycopg.Connection) -> Iterator[ReplicationNames]:
    suffix = unique()
    names = ReplicationNames(f"pub_{suffix}", f"slot_{suffix}")
    yield names
    drop_slot(admin, names.slot)
    admin.execute(f"DROP PUBLICATION IF EXISTS {names.publication}")


@pytest.fixture
def table(admin: psycopg.Connection, names: ReplicationNames) -> str:
    """A published table `(id int primary key, value text)` with its slot created."""
    name = f"items_{unique()}"
    admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, value text)")
    ensure_publication(admin, names.publication)
    add_table(admin, names.publication, name)
    return name


@pytest.fixture
def connections(url: str) -> Iterator[Callable[..., ReplicationConnection]]:
    """Opens replication connections and closes whatever the test left open."""
    opened: list[ReplicationConnection] = []

    def open_(names: ReplicationNames, **kwargs: Any) -> ReplicationConnection:
        expected = kwargs.pop("expected", None)
        conn = ReplicationConnection(url, names, **kwargs)
        opened.append(conn)
        conn.open(expected)
        return conn

    yield open_
    for conn in opened:
        conn.close()


@pytest.fixture(scope="module")
def scratch() -> Iterator[PostgresCluster]:
    """A private cluster for tests that restart it or change server-wide settings."""
    cluster = create_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


# -- pure units ----------------------------------------------------------------------


def test_lsn_text_round_trip() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn("16/b374d848") == 0x16B374D848
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    assert format_lsn((1 << 64) - 1) == "FFFFFFFF/FFFFFFFF"
    for value in (1, 0xFFFFFFFF, 1 << 32, 0x123456789ABCDEF0):
        assert parse_lsn(format_lsn(value)) == value
    for bad in ("", "0", "0/", "/0", "G/0", "0/123456789", " 0/0", "0/0 "):
        with pytest.raises(InvalidLsn):
            parse_lsn(bad)
    with pytest.raises(InvalidLsn):
        format_lsn(-1)


def test_names() -> None:
    assert (
        ReplicationNames("electric_publication_default", "electric_slot_default") == DEFAULT_NAMES
    )
    assert ReplicationNames.for_stream("abc").slot == "electric_slot_abc"
    for bad in ("", "Upper", "with-dash", "x" * 64, "quote'"):
        with pytest.raises(ValueError):
            ReplicationNames("pub", bad)


def test_check_identity() -> None:
    seen = SystemIdentity("7000", 1, 100, "db")
    check_identity(seen, None)
    check_identity(SystemIdentity("7000", 1, 200, "db"), seen)  # only the position moved
    with pytest.raises(SystemIdChanged) as raised:
        check_identity(SystemIdentity("7001", 1, 100, "db"), seen)
    assert (raised.value.expected, raised.value.actual) == ("7000", "7001")
    with pytest.raises(TimelineChanged):
        check_identity(SystemIdentity("7000", 2, 100, "db"), seen)


# Builders for hand-made pgoutput messages, written from the protocol docs.


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(*values: Any) -> bytes:
    out = struct.pack(">H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(value, bytes):
            out += b"b" + struct.pack(">I", len(value)) + value
        else:
            encoded = value.encode()
            out += b"t" + struct.pack(">I", len(encoded)) + encoded
    return out


def xid_prefix(xid: int | None) -> bytes:
    return b"" if xid is None else struct.pack(">I", xid)


def relation_message(relid: int, xid: int | None = None) -> bytes:
    columns = [(1, "id", 23, -1), (0, "name", 1043, 68), (0, "doc", 25, -1)]
    out = b"R" + xid_prefix(xid) + struct.pack(">I", relid) + cstr("public") + cstr("things")
    out += b"d" + struct.pack(">H", len(columns))
    for flags, name, type_oid, typmod in columns:
        out += bytes([flags]) + cstr(name) + struct.pack(">Ii", type_oid, typmod)
    return out


def test_decoder_on_hand_built_messages() -> None:
    decoder = Decoder()
    decode = decoder.decode

    assert decode(b"B" + struct.pack(">QqI", 0x1000, 12345, 77)) == Begin(0x1000, 12345, 77)
    assert decode(b"C" + struct.pack(">BQQq", 0, 0x1000, 0x1030, 12345)) == Commit(
        0, 0x1000, 0x1030, 12345
    )
    assert decode(b"O" + struct.pack(">Q", 0x99) + cstr("upstream")) == Origin(0x99, "upstream")
    assert decode(b"Y" + struct.pack(">I", 16400) + cstr("public") + cstr("mood")) == Type(
        16400, "public", "mood"
    )

    relation = decode(relation_message(16384))
    assert isinstance(relation, Relation)
    assert (relation.relation_id, relation.namespace, relation.name) == (16384, "public", "things")
    assert relation.replica_identity == "d"
    assert relation.column_names == ("id", "name", "doc")
    assert [c.is_key for c in relation.columns] == [True, False, False]
    assert [(c.type_oid, c.type_modifier) for c in relation.columns] == [
        (23, -1),
        (1043, 68),
        (25, -1),
    ]
    assert decoder.relations[16384] is relation

    head = struct.pack(">I", 16384)
    insert = decode(b"I" + head + b"N" + tuple_data("1", "naïve ☃", None))
    assert insert == Insert(relation, ("1", "naïve ☃", None))
    assert insert.relation_id == 16384
    assert relation.as_dict(insert.new_tuple) == {"id": "1", "name": "naïve ☃", "doc": None}
    binary = decode(b"I" + head + b"N" + tuple_data("2", b"\x00\xff", None))
    assert binary.new_tuple == ("2", b"\x00\xff", None)
    assert decode(b"I" + head + b"N" + tuple_data("3", "", None)).new_tuple == ("3", "", None)

    plain = decode(b"U" + head + b"N" + tuple_data("1", "x", UNCHANGED_TOAST))
    assert plain == Update(relation, ("1", "x", UNCHANGED_TOAST), None, None)
    assert plain.new_tuple[2] is UNCHANGED_TOAST and plain.new_tuple[2] is not None
    keyed = decode(
        b"U" + head + b"K" + tuple_data("1", None, None) + b"N" + tuple_data("2", "x", None)
    )
    assert (keyed.old_kind, keyed.old_tuple, keyed.new_tuple) == (
        "K",
        ("1", None, None),
        ("2", "x", None),
    )
    full = decode(b"U" + head + b"O" + tuple_data("1", "a", "d") + b"N" + tuple_data("1", "b", "d"))
    assert (full.old_kind, full.old_tuple) == ("O", ("1", "a", "d"))

    assert decode(b"D" + head + b"K" + tuple_data("1", None, None)) == Delete(
        relation, "K", ("1", None, None)
    )
    assert decode(b"D" + head + b"O" + tuple_data("1", "a", None)).old_kind == "O"

    decode(relation_message(16390))
    truncate = decode(b"T" + struct.pack(">IBII", 2, 3, 16384, 16390))
    assert isinstance(truncate, Truncate)
    assert truncate.relation_ids == (16384, 16390)
    assert truncate.cascade and truncate.restart_identity
    only_cascade = decode(b"T" + struct.pack(">IBI", 1, 1, 16390))
    assert (only_cascade.cascade, only_cascade.restart_identity) == (True, False)

    message = decode(
        b"M" + struct.pack(">BQ", 1, 0x2000) + cstr("app") + struct.pack(">I", 3) + b"a\0b"
    )
    assert message == Message(True, 0x2000, "app", b"a\0b")
    assert decode(
        b"M" + struct.pack(">BQ", 0, 0x2000) + cstr("") + struct.pack(">I", 0)
    ) == Message(False, 0x2000, "", b"")

    # Protocol 2: inside Stream Start/Stop, these messages lead with the xid.
    assert decode(b"S" + struct.pack(">IB", 900, 1)) == StreamStart(900, True)
    assert decoder.in_stream
    xid = struct.pack(">I", 900)
    streamed_relation = decode(relation_message(16384, xid=900))
    assert streamed_relation.xid == 900 and decoder.relations[16384] is streamed_relation
    assert decode(b"Y" + xid + struct.pack(">I", 16400) + cstr("public") + cstr("mood")).xid == 900
    assert decode(b"I" + xid + head + b"N" + tuple_data("5", None, None)).xid == 900
    assert decode(b"U" + xid + head + b"N" + tuple_data("5", "y", None)).xid == 900
    assert decode(b"D" + xid + head + b"K" + tuple_data("5", None, None)).xid == 900
    assert decode(b"T" + xid + struct.pack(">IBI", 1, 0, 16384)).xid == 900
    streamed_message = decode(
        b"M" + xid + struct.pack(">BQ", 1, 1) + cstr("p") + struct.pack(">I", 0)
    )
    assert streamed_message.xid == 900
    assert decode(b"E") == StreamStop()
    assert not decoder.in_stream
    assert decode(b"S" + struct.pack(">IB", 900, 0)) == StreamStart(900, False)
    decode(b"E")
    assert decode(b"c" + struct.pack(">IBQQq", 900, 0, 0x3000, 0x3030, 555)) == StreamCommit(
        900, 0, 0x3000, 0x3030, 555
    )
    assert decode(b"A" + struct.pack(">II", 901, 902)) == StreamAbort(901, 902)
    assert decode(b"A" + struct.pack(">IIQq", 901, 901, 0x4000, 666)) == StreamAbort(
        901, 901, 0x4000, 666
    )
    # Outside a stream, an Insert has no xid: the same bytes must not parse.
    with pytest.raises(DecodeError):
        decode(b"I" + xid + head + b"N" + tuple_data("5", None, None))

    # The payload may sit at an offset in a larger buffer (the client skips the header).
    assert decode(b"w" * 25 + b"B" + struct.pack(">QqI", 1, 2, 3), 25) == Begin(1, 2, 3)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"Z",  # unknown message type
        b"b" + b"\0" * 40,  # two-phase Begin Prepare: never requested
        b"B" + b"\0" * 10,  # truncated
        b"B" + b"\0" * 21,  # trailing byte
        b"I" + struct.pack(">I", 424242) + b"N" + tuple_data("1"),  # unknown relation
        b"I" + struct.pack(">I", 16384) + b"X" + tuple_data("1"),  # not a new tuple
        b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", 1) + b"q",  # bad kind
        b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", 1) + b"t\0\0\0\x09ab",  # short
        b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", 1) + b"t\0\0\0\x02\xff\xfe",
        b"D" + struct.pack(">I", 16384) + b"N" + tuple_data("1"),  # delete needs K or O
        b"O" + struct.pack(">Q", 1) + b"no terminator",
    ],
)
def test_decoder_rejects_malformed(payload: bytes) -> None:
    decoder = Decoder()
    decoder.decode(relation_message(16384))
    with pytest.raises(DecodeError):
        decoder.decode(payload)


def test_unchanged_toast_is_one_object_across_pickling() -> None:
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    decoder = Decoder()
    relation = decoder.decode(relation_message(1))
    update = decoder.decode(
        b"U" + struct.pack(">I", 1) + b"N" + tuple_data("1", UNCHANGED_TOAST, None)
    )
    copy = pickle.loads(pickle.dumps(update))
    assert copy.new_tuple[1] is UNCHANGED_TOAST
    assert copy.relation == relation


# -- publication and lock ------------------------------------------------------------


def test_publication_management(admin: psycopg.Connection, names: ReplicationNames) -> None:
    name = f"pubtest_{unique()}"
    admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    assert ensure_publication(admin, names.publication) is True
    assert ensure_publication(admin, names.publication) is False
    assert published_tables(admin, names.publication) == []

    assert add_table(admin, names.publication, name) is True
    assert add_table(admin, names.publication, f"public.{name}") is False
    assert published_tables(admin, names.publication) == [("public", name)]
    identity = admin.execute(f"SELECT relreplident FROM pg_class WHERE oid = '{name}'::regclass")
    assert identity.fetchone() == ("f",)

    # Already published but with the default identity: only the identity changes.
    admin.execute(f"ALTER TABLE {name} REPLICA IDENTITY DEFAULT")
    assert add_table(admin, names.publication, ("public", name)) is True
    identity = admin.execute(f"SELECT relreplident FROM pg_class WHERE oid = '{name}'::regclass")
    assert identity.fetchone() == ("f",)

    assert remove_table(admin, names.publication, name) is True
    assert remove_table(admin, names.publication, name) is False
    assert published_tables(admin, names.publication) == []
    with pytest.raises(TableNotFound):
        add_table(admin, names.publication, "no_such_table")

    # A publication made by hand that publishes less than all four operations is fixed.
    admin.execute(f"ALTER PUBLICATION {names.publication} SET (publish = 'insert')")
    assert ensure_publication(admin, names.publication) is False
    row = admin.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication"
        " WHERE pubname = %s",
        [names.publication],
    ).fetchone()
    assert row == (True, True, True, True)


def waiting_for_advisory_lock(admin: psycopg.Connection, pid: int | None) -> bool:
    row = admin.execute(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND NOT granted",
        [pid],
    ).fetchone()
    return row is not None


def test_advisory_lock_makes_a_second_instance_wait(url: str, admin: psycopg.Connection) -> None:
    slot = f"slot_{unique()}"
    first = ReplicationLock(url, slot)
    second = ReplicationLock(url, slot)
    third = ReplicationLock(url, slot)
    try:
        assert first.try_acquire() is True
        assert first.try_acquire() is True  # idempotent while held
        assert second.try_acquire() is False
        assert second.acquire(timeout=0.2) is False  # lock_timeout ran out

        # The lock Electric takes: an advisory lock on hashtext(slot name).
        holder = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = (hashtext(%s)::bigint & 4294967295)::oid",
            [slot],
        ).fetchone()
        assert holder == (first.backend_pid,)

        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(second.acquire()))
        waiter.start()
        eventually(lambda: waiting_for_advisory_lock(admin, second.backend_pid), "second waits")
        assert result == [] and not second.held  # blocked inside Postgres, not done

        first.release()
        waiter.join(WAIT)
        assert result == [True] and second.held
        assert first.try_acquire() is False

        # A blocked acquire can be cancelled from another thread.
        cancelled: list[bool] = []
        waiter = threading.Thread(target=lambda: cancelled.append(third.acquire()))
        waiter.start()
        eventually(lambda: waiting_for_advisory_lock(admin, third.backend_pid), "third waits")
        third.cancel()
        waiter.join(WAIT)
        assert cancelled == [False] and not third.held

        # Closing the holder's connection releases the lock (once its backend has exited).
        second.close()
        eventually(first.try_acquire, "the lock to be free")
        assert first.is_alive()
    finally:
        for lock in (first, second, third):
            lock.close()


# -- live replication ----------------------------------------------------------------


def test_identify_system_and_identity_checks(
    url: str, names: ReplicationNames, connections: Callable[..., ReplicationConnection]
) -> None:
    conn = connections(names)
    identity = conn.identity
    assert identity is not None
    assert identity.system_id.isdigit() and identity.timeline >= 1 and identity.xlogpos > 0
    assert identity.dbname == url.rsplit("/", 1)[1]

    # Same cluster and timeline: fine, even though the WAL position moved on.
    connections(names, expected=SystemIdentity(identity.system_id, identity.timeline, 0, None))
    other_system = SystemIdentity("1" + identity.system_id, identity.timeline, 0, None)
    with pytest.raises(SystemIdChanged):
        connections(names, expected=other_system)
    other_timeline = SystemIdentity(identity.system_id, identity.timeline + 1, 0, None)
    with pytest.raises(TimelineChanged):
        connections(names, expected=other_timeline)


def test_live_stream_decodes_every_message_kind(
    admin: psycopg.Connection,
    names: ReplicationNames,
    connections: Callable[..., ReplicationConnection],
) -> None:
    suffix = unique()
    plain, full, toast, mood = (
        f"plain_{suffix}",
        f"full_{suffix}",
        f"toast_{suffix}",
        f"mood_{suffix}",
    )
    origin = f"origin_{suffix}"
    admin.execute(f"CREATE TYPE {mood} AS ENUM ('happy', 'sad')")
    admin.execute(f"CREATE TABLE {plain} (id int PRIMARY KEY, name text, score int)")
    admin.execute(f"CREATE TABLE {full} (id int PRIMARY KEY, name text, feeling {mood})")
    admin.execute(f"CREATE TABLE {toast} (id int PRIMARY KEY, big text, small int)")
    # EXTERNAL: stored out of line uncompressed, so a large value really is TOASTed.
    admin.execute(f"ALTER TABLE {toast} ALTER COLUMN big SET STORAGE EXTERNAL")
    ensure_publication(admin, names.publication)
    add_table(admin, names.publication, full)  # REPLICA IDENTITY FULL
    # Published by hand, so they keep the default identity (the primary key).
    admin.execute(f"ALTER PUBLICATION {names.publication} ADD TABLE {plain}, {toast}")
    admin.execute("SELECT pg_replication_origin_create(%s)", [origin])

    conn = connections(names)
    slot = conn.ensure_slot()
    assert slot.created
    stream = conn.start(messages=True)
    assert stream.proto_version == 2

    def transaction(*statements: str) -> None:
        with admin.transaction():
            for statement in statements:
                admin.execute(statement)

    big = "x" * 100_000
    transaction(f"INSERT INTO {plain} VALUES (1, 'one', NULL), (2, NULL, 5)")
    transaction(f"UPDATE {plain} SET name = 'uno' WHERE id = 1")
    transaction(f"UPDATE {plain} SET id = 10 WHERE id = 1")
    transaction(f"DELETE FROM {plain} WHERE id = 2")
    transaction(
        f"INSERT INTO {full} VALUES (1, 'a', 'happy')",
        f"UPDATE {full} SET name = 'b' WHERE id = 1",
        f"DELETE FROM {full} WHERE id = 1",
    )
    transaction(f"INSERT INTO {toast} VALUES (1, '{big}', 1)")
    transaction(f"UPDATE {toast} SET small = 2 WHERE id = 1")
    transaction(f"TRUNCATE {plain}, {full} RESTART IDENTITY CASCADE")
    transaction("SELECT pg_logical_emit_message(true, 'fusebox', 'in a transaction')")
    admin.execute("SELECT pg_logical_emit_message(false, 'fusebox', '\\x0001'::bytea)")
    with psycopg.connect(admin.info.dsn, autocommit=True) as tagged:
        with tagged.transaction():
            tagged.execute("SELECT pg_replication_origin_session_setup(%s)", [origin])
            tagged.execute(f"INSERT INTO {plain} VALUES (3, 'replicated', NULL)")
        tagged.execute("SELECT pg_replication_origin_session_reset()")
    admin.execute("SELECT pg_logical_emit_message(false, 'done', '')")

    got = collect(
        stream, lambda got: any(isinstance(m, Message) and m.prefix == "done" for m in got)
    )
    admin.execute("SELECT pg_replication_origin_drop(%s)", [origin])
    txns = transactions(got)
    assert len(txns) == 10

    relations: dict[str, Relation] = {}
    for message in got:
        if isinstance(message, Relation):
            relations.setdefault(message.name, message)  # the first: later ones replace it
    assert relations[plain].replica_identity == "d"
    assert [(c.name, c.type_oid, c.is_key) for c in relations[plain].columns] == [
        ("id", 23, True),
        ("name", 25, False),
        ("score", 23, False),
    ]
    assert relations[full].replica_identity == "f"
    types = [m for m in got if isinstance(m, Type)]
    # Sent again, with the Relation, after an invalidation (the TRUNCATE causes one).
    assert {(t.namespace, t.name) for t in types} == {("public", mood)}
    assert relations[full].columns[2].type_oid == types[0].type_oid

    def body(index: int) -> list[PgOutputMessage]:
        begin, *changes, commit = txns[index]
        assert isinstance(begin, Begin) and isinstance(commit, Commit)
        assert begin.final_lsn == commit.commit_lsn and begin.commit_ts == commit.commit_ts
        assert commit.end_lsn > commit.commit_lsn
        return changes

    inserts = body(0)
    assert [(type(m), m.new_tuple) for m in inserts] == [
        (Insert, ("1", "one", None)),
        (Insert, ("2", None, "5")),
    ]
    assert inserts[0].relation is relations[plain] and inserts[0].xid is None
    [update] = body(1)
    assert (update.new_tuple, update.old_kind, update.old_tuple) == (("1", "uno", None), None, None)
    [key_change] = body(2)
    assert key_change.new_tuple == ("10", "uno", None)
    assert (key_change.old_kind, key_change.old_tuple) == ("K", ("1", None, None))
    [delete] = body(3)
    assert (type(delete), delete.old_kind, delete.old_tuple) == (Delete, "K", ("2", None, None))

    full_insert, full_update, full_delete = body(4)
    assert full_insert.new_tuple == ("1", "a", "happy")
    assert (full_update.old_kind, full_update.old_tuple) == ("O", ("1", "a", "happy"))
    assert full_update.new_tuple == ("1", "b", "happy")
    assert (full_delete.old_kind, full_delete.old_tuple) == ("O", ("1", "b", "happy"))

    [toast_insert] = body(5)
    assert toast_insert.new_tuple == ("1", big, "1")
    [toast_update] = body(6)
    assert toast_update.new_tuple == ("1", UNCHANGED_TOAST, "2")
    assert toast_update.new_tuple[1] is UNCHANGED_TOAST

    [truncate] = body(7)
    assert isinstance(truncate, Truncate)
    assert {r.name for r in truncate.relations} == {plain, full}
    assert truncate.cascade and truncate.restart_identity

    [in_txn] = body(8)
    assert in_txn == Message(True, in_txn.lsn, "fusebox", b"in a transaction")
    loose = [m for m in got if isinstance(m, Message) and not m.transactional]
    assert [(m.prefix, m.content) for m in loose] == [("fusebox", b"\x00\x01"), ("done", b"")]

    origin_message, origin_insert = body(9)
    assert isinstance(origin_message, Origin) and origin_message.name == origin
    assert origin_insert.new_tuple == ("3", "replicated", None)


def test_large_transactions_stream_in_protocol_2(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    # A tiny decoding budget makes the walsender stream transactions before they commit.
    conn = connections(names, settings={"logical_decoding_work_mem": "64kB"})
    conn.ensure_slot()
    stream = conn.start(messages=True)
    assert stream.proto_version == 2
    rows = 3000
    admin.execute(
        f"INSERT INTO {table} SELECT g, repeat('y', 100) FROM generate_series(1, {rows}) g"
    )
    with admin.transaction():
        admin.execute(f"INSERT INTO {table} SELECT g, 'gone' FROM generate_series(-{rows}, -1) g")
        raise psycopg.Rollback()
    with admin.transaction():
        admin.execute(f"INSERT INTO {table} VALUES (0, 'kept')")
        with pytest.raises(psycopg.errors.UniqueViolation), admin.transaction():
            # A subtransaction large enough to be streamed, then rolled back.
            admin.execute(
                f"INSERT INTO {table} SELECT g, 'sub'"
                f" FROM generate_series({rows + 1}, {2 * rows}) g"
            )
            admin.execute(f"INSERT INTO {table} VALUES (0, 'duplicate')")
    admin.execute("SELECT pg_logical_emit_message(false, 'done', '')")
    got = collect(
        stream, lambda got: any(isinstance(m, Message) and m.prefix == "done" for m in got)
    )

    assert not any(isinstance(m, Begin | Commit) for m in got)  # everything was streamed
    starts = [m for m in got if isinstance(m, StreamStart)]
    stream_commits = [m for m in got if isinstance(m, StreamCommit)]
    aborts = [m for m in got if isinstance(m, StreamAbort)]
    assert len(stream_commits) == 2
    assert len(aborts) == 2
    first_xid, aborted_xid, sub_parent_xid = (
        stream_commits[0].xid,
        aborts[0].xid,
        stream_commits[1].xid,
    )
    # The rolled-back transaction: the whole thing (xid = subxact xid).
    assert aborts[0].subxact_xid == aborted_xid
    # The rolled-back subtransaction: its own xid, under the transaction that committed.
    assert aborts[1].xid == sub_parent_xid and aborts[1].subxact_xid != sub_parent_xid
    assert {s.xid for s in starts} == {first_xid, aborted_xid, sub_parent_xid}
    assert sum(s.first_segment for s in starts) == 3  # one first segment per transaction
    assert len(starts) > 3  # and at least one of them came in several segments

    # Start/Stop bracket the chunks, and every change inside names its transaction: the
    # top-level one, or for changes made in the subtransaction, the subtransaction.
    subxact_xid = aborts[1].subxact_xid
    current = None
    for message in got:
        if isinstance(message, StreamStart):
            assert current is None
            current = message.xid
        elif isinstance(message, StreamStop):
            assert current is not None
            current = None
        elif isinstance(message, Relation):
            assert current is not None and message.xid == current
        elif isinstance(message, Insert):
            assert current is not None
            if message.new_tuple[1] == "sub":
                assert current == sub_parent_xid and message.xid == subxact_xid
            else:
                assert message.xid == current
        elif isinstance(message, StreamCommit | StreamAbort):
            assert current is None
    committed = [m for m in got if isinstance(m, Insert) and m.xid == first_xid]
    assert [m.new_tuple[0] for m in committed] == [str(i) for i in range(1, rows + 1)]
    assert stream_commits[0].end_lsn > stream_commits[0].commit_lsn
    kept = [m.new_tuple for m in got if isinstance(m, Insert) and m.new_tuple[1] == "kept"]
    assert kept == [("0", "kept")]


def test_protocol_1_sends_large_transactions_whole(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names, settings={"logical_decoding_work_mem": "64kB"})
    conn.ensure_slot()
    stream = conn.start(proto_versions=(1,))
    assert stream.proto_version == 1
    admin.execute(f"INSERT INTO {table} SELECT g, 'v' FROM generate_series(1, 2000) g")
    got = collect(stream, commits(1))
    assert not any(isinstance(m, StreamStart | StreamStop | StreamCommit) for m in got)
    [txn] = transactions(got)
    assert len(txn) == 2002 and all(m.xid is None for m in txn[1:-1])


def test_unsupported_protocol_version_falls_back(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    conn.ensure_slot()
    with pytest.raises(ServerError) as refused:
        conn.start(proto_versions=(99,))
    assert refused.value.sqlstate == "0A000"
    # The refusal leaves the connection usable; the next version on the list is tried.
    stream = conn.start(proto_versions=(99, 2))
    assert stream.proto_version == 2
    admin.execute(f"INSERT INTO {table} VALUES (1, 'after fallback')")
    assert inserted(collect(stream, commits(1))) == ["1"]


def test_acknowledged_lsn_is_exactly_what_the_slot_confirms(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    slot = conn.ensure_slot()
    stream = conn.start()
    assert confirmed_flush(admin, names.slot) == slot.confirmed_flush_lsn
    admin.execute(f"INSERT INTO {table} VALUES (1, 'first')")
    admin.execute(f"INSERT INTO {table} VALUES (2, 'second')")
    first, second = [m for m in collect(stream, commits(2)) if isinstance(m, Commit)]

    # Received but not acknowledged: the server has our status (it shows what we wrote)
    # and still has not moved the slot.
    stream.send_status()

    def server_saw_receipt() -> bool:
        stream.poll(timeout=0.05)
        row = admin.execute(
            "SELECT write_lsn::text FROM pg_stat_replication WHERE pid = %s",
            [conn.backend_pid],
        ).fetchone()
        return row is not None and row[0] is not None and parse_lsn(row[0]) >= second.commit_lsn

    eventually(server_saw_receipt, "a status update showing receipt")
    assert confirmed_flush(admin, names.slot) == slot.confirmed_flush_lsn

    def slot_reaches(lsn: int) -> Callable[[], bool]:
        def check() -> bool:
            stream.poll(timeout=0.05)
            return confirmed_flush(admin, names.slot) >= lsn

        return check

    stream.acknowledge(first.end_lsn)
    eventually(slot_reaches(first.end_lsn), "the first acknowledgement")
    assert confirmed_flush(admin, names.slot) == first.end_lsn
    assert stream.flushed_lsn == first.end_lsn

    stream.acknowledge(first.commit_lsn)  # lower than before: ignored
    assert stream.flushed_lsn == first.end_lsn

    stream.acknowledge(second.end_lsn)
    eventually(slot_reaches(second.end_lsn), "the second acknowledgement")
    assert confirmed_flush(admin, names.slot) == second.end_lsn


def test_acknowledge_from_another_thread_wakes_a_blocked_poll(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    conn.ensure_slot()
    stream = conn.start(status_interval=3600)
    admin.execute(f"INSERT INTO {table} VALUES (1, 'x')")
    [commit] = [m for m in collect(stream, commits(1)) if isinstance(m, Commit)]

    poller = threading.Thread(target=stream.poll)  # blocks: no timeout, no traffic
    poller.start()
    eventually(lambda: stream._waiting, "the poll to block")
    stream.acknowledge(commit.end_lsn)
    poller.join(WAIT)
    assert not poller.is_alive()
    eventually(lambda: confirmed_flush(admin, names.slot) == commit.end_lsn, "the slot to move")


def test_resume_after_reconnect_delivers_what_was_not_acknowledged(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    conn.ensure_slot()
    stream = conn.start()
    admin.execute(f"INSERT INTO {table} VALUES (1, 'before')")
    got = collect(stream, commits(1))
    assert inserted(got) == ["1"]
    stream.acknowledge(transactions(got)[0][-1].end_lsn)
    conn.close()  # sends the acknowledgement on the way out

    # While nobody listens.
    admin.execute(f"INSERT INTO {table} VALUES (2, 'while away')")
    admin.execute(f"INSERT INTO {table} VALUES (3, 'while away')")

    conn = connections(names)
    slot = conn.ensure_slot()
    assert not slot.created
    stream = conn.start()
    got = collect(stream, commits(2))
    assert inserted(got) == ["2", "3"]
    # Not acknowledged this time: a new session sees both again.
    conn.close()

    conn = connections(names)
    stream = conn.start()
    got = collect(stream, commits(2))
    assert inserted(got) == ["2", "3"]
    stream.acknowledge(transactions(got)[-1][-1].end_lsn)
    conn.close()

    conn = connections(names)
    stream = conn.start()
    admin.execute(f"INSERT INTO {table} VALUES (4, 'new')")
    assert inserted(collect(stream, commits(1))) == ["4"]


def test_slot_missing_and_in_use(
    names: ReplicationNames, table: str, connections: Callable[..., ReplicationConnection]
) -> None:
    conn = connections(names)
    with pytest.raises(SlotMissing):
        conn.start()
    conn.ensure_slot()
    conn.start()
    other = connections(names)
    with pytest.raises(SlotInUse):
        other.start(slot_busy_timeout=0.2)


def test_temporary_slot_lives_as_long_as_its_session(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    slot = conn.ensure_slot(temporary=True)
    assert slot.created and slot.temporary
    with conn.start() as stream:
        admin.execute(f"INSERT INTO {table} VALUES (1, 'temporary')")
        assert inserted(collect(stream, commits(1))) == ["1"]
    conn.close()
    eventually(lambda: slot_row(admin, names.slot) is None, "the slot to go with its session")


def test_replies_to_keepalives_that_ask_for_one(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    # With a 1 s wal_sender_timeout the server asks for a reply every 0.5 s of silence
    # and drops us after 1 s without one. Unsolicited updates are turned off, so only
    # the replies keep the connection alive.
    conn = connections(names, settings={"wal_sender_timeout": "1s"})
    conn.ensure_slot()
    stream = conn.start()
    stream.status_interval = 3600

    def enough_requests() -> bool:
        stream.poll(timeout=0.1)  # raises ConnectionLost if the server gave up on us
        return stream.replies_requested >= 4

    eventually(enough_requests, "keepalives asking for replies")
    assert stream.status_updates_sent >= stream.replies_requested
    admin.execute(f"INSERT INTO {table} VALUES (1, 'still here')")
    assert inserted(collect(stream, commits(1))) == ["1"]


def test_sends_status_updates_unasked(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    conn.ensure_slot()
    stream = conn.start(status_interval=0.2)
    pid = conn.backend_pid

    def reply_time() -> Any:
        stream.poll(timeout=0.05)
        row = admin.execute("SELECT reply_time FROM pg_stat_replication WHERE pid = %s", [pid])
        return row.fetchone()[0]

    first = eventually(reply_time, "a first status update")
    eventually(lambda: reply_time() > first, "a later status update")
    assert stream.replies_requested == 0  # the server (timeout 60 s) never had to ask


def test_async_wrapper(
    admin: psycopg.Connection,
    names: ReplicationNames,
    table: str,
    connections: Callable[..., ReplicationConnection],
) -> None:
    conn = connections(names)
    conn.ensure_slot()
    stream = AsyncReplicationStream(conn.start())

    async def main() -> list[PgOutputMessage]:
        blocked = asyncio.create_task(stream.poll())
        await asyncio.sleep(0.05)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        await asyncio.to_thread(admin.execute, f"INSERT INTO {table} VALUES (1, 'async')")
        got: list[PgOutputMessage] = []
        deadline = time.monotonic() + WAIT
        while not commits(1)(got):
            assert time.monotonic() < deadline
            got.extend(await stream.poll(timeout=0.5))
        stream.acknowledge(transactions(got)[0][-1].end_lsn)
        await stream.close()
        return got

    got = asyncio.run(main())
    assert inserted(got) == ["1"]
    assert stream.stream.closed
    commit = transactions(got)[0][-1]
    eventually(lambda: confirmed_flush(admin, names.slot) == commit.end_lsn, "the close-time ack")


# -- server restarts and lost slots (private cluster) --------------------------------


def setup_scratch(scratch: PostgresCluster, names: ReplicationNames) -> str:
    name = f"items_{unique()}"
    with psycopg.connect(scratch.url(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, value text)")
        ensure_publication(conn, names.publication)
        add_table(conn, names.publication, name)
    return name


def test_postgres_restart_surfaces_connection_lost_and_resume_works(
    scratch: PostgresCluster,
) -> None:
    names = ReplicationNames(f"pub_{unique()}", f"slot_{unique()}")
    table_name = setup_scratch(scratch, names)
    conn = ReplicationConnection(scratch.url(), names)
    identity = conn.open()
    conn.ensure_slot()
    stream = conn.start()
    scratch.psql(f"INSERT INTO {table_name} VALUES (1, 'before restart')")
    got = collect(stream, commits(1))
    durable = transactions(got)[0][-1].end_lsn  # what the caller's storage now holds
    stream.acknowledge(durable)
    stream.send_status()

    scratch.restart()
    with pytest.raises(ConnectionLost):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            stream.poll(timeout=0.5)
    assert stream.closed
    conn.close()

    scratch.psql(f"INSERT INTO {table_name} VALUES (2, 'after restart')")
    # What a caller does: reconnect with backoff, checking it is the same server.
    delay = 0.05
    deadline = time.monotonic() + WAIT
    while True:
        conn = ReplicationConnection(scratch.url(), names)
        try:
            conn.open(expected=identity)
            # From the caller's own durable position: the slot's confirmed position may
            # lag it (PG < 17 does not save an acknowledgement at shutdown unless the
            # slot was dirty for another reason).
            stream = conn.start(durable)
            break
        except ConnectionLost:
            conn.close()
            assert time.monotonic() < deadline
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        got = collect(stream, commits(1))
        assert inserted(got) == ["2"]
        stream.acknowledge(transactions(got)[-1][-1].end_lsn)
    finally:
        conn.close()
        with psycopg.connect(scratch.url(), autocommit=True) as admin:
            drop_slot(admin, names.slot)


def test_invalidated_slot(scratch: PostgresCluster) -> None:
    names = ReplicationNames(f"pub_{unique()}", f"slot_{unique()}")
    table_name = setup_scratch(scratch, names)
    with psycopg.connect(scratch.url(), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        admin.execute("SELECT pg_reload_conf()")
        conn = ReplicationConnection(scratch.url(), names)
        try:
            conn.open()
            conn.ensure_slot()

            def slot_lost() -> bool:
                # Fill and switch WAL segments until a checkpoint drops the slot's WAL.
                admin.execute(
                    f"INSERT INTO {table_name} SELECT g, 'w' FROM generate_series(1, 1000) g"
                )
                admin.execute(f"DELETE FROM {table_name}")
                admin.execute("SELECT pg_switch_wal()")
                admin.execute("CHECKPOINT")
                row = slot_row(admin, names.slot)
                return row is not None and row[1] == "lost"

            eventually(slot_lost, "the slot to be invalidated")
            with pytest.raises(SlotInvalidated):
                conn.start()
            with pytest.raises(SlotInvalidated):
                conn.ensure_slot()
            # The server's own refusal maps to the same error.
            with pytest.raises(SlotInvalidated):
                conn._exec(
                    f"START_REPLICATION SLOT {names.slot} LOGICAL 0/0"
                    f" (proto_version '1', publication_names '{names.publication}')"
                )
            # Recovery: drop and recreate (and, in the caller, purge derived state).
            assert conn.drop_slot() is True
            assert conn.drop_slot() is False
            assert conn.ensure_slot().created
        finally:
            conn.close()
            admin.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            admin.execute("SELECT pg_reload_conf()")
            drop_slot(admin, names.slot)


def test_global_last_seen_lsn_waits_for_durable_items(tmp_path) -> None:
    """An up-to-date's `global_last_seen_lsn` must never pass items not yet readable:
    clients resume from `<lsn>_0`. It follows acknowledgements, in commit order."""
    import asyncio

    from fusebox.sync.changes import Transaction
    from fusebox.sync.protocol import SyncStatus
    from fusebox.sync.service import Replication, SyncSettings

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        commits = {100: [first], 200: [second], 300: []}

        class RoutedShapes:
            last_seen_lsn = 0

            def apply(self, transaction: Transaction) -> list:
                return commits[transaction.lsn]

        shapes = RoutedShapes()
        replication = Replication(
            SyncSettings("postgresql:///unused", tmp_path), shapes, SyncStatus()
        )  # type: ignore[arg-type]
        batch = [(Transaction(1, lsn), lsn + 8) for lsn in (100, 200, 300)]
        replication._apply(batch)
        assert shapes.last_seen_lsn == 0  # routed, not durable
        second.set_result(None)
        await asyncio.sleep(0)
        assert shapes.last_seen_lsn == 0  # 200 is durable, but 100 before it is not
        first.set_result(None)
        await asyncio.sleep(0)
        assert shapes.last_seen_lsn == 300
        assert replication._durable_lsn == 308

    asyncio.run(scenario())
