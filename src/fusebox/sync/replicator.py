"""The replication process: reads the slot, decodes pgoutput, ships whole transactions.

Decoding is CPU-bound and holds the GIL; in the HTTP process it would starve requests,
so it runs in a process of its own and talks to the server over a pipe:

    child → parent   ("status", state, detail)        waiting | active
                     ("identity", system_id, timeline)
                     ("relation", schema, name, [(column, type_oid), ...])
                     ("transactions", bytes)           changes.encode_batch
                     ("error", kind, message)          then the child exits
    parent → child   ("ack", lsn)                      durable up to lsn: report it flushed
                     ("stop",)

The child never acknowledges a position by itself except the server's WAL end when
nothing it sent is still unacknowledged, so an idle slot does not hold WAL forever.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import signal
from dataclasses import dataclass

from fusebox.collector import IdleCollector
from fusebox.sync.changes import Transaction, encode_batch
from fusebox.sync.replication import pgoutput as pg
from fusebox.sync.replication.client import (
    ReplicationConnection,
    ReplicationStream,
    SystemIdentity,
)
from fusebox.sync.replication.errors import (
    ConnectionLost,
    IdentityChanged,
    ReplicationError,
    SlotInvalidated,
    SlotMissing,
)
from fusebox.sync.replication.lock import ReplicationLock
from fusebox.sync.replication.names import ReplicationNames
from fusebox.sync.schema import SESSION_SETTINGS
from fusebox.sync.transactions import TransactionAssembler

log = logging.getLogger("fusebox.sync.replicator")

# How long one poll may block: bounds how late an acknowledgement from the parent is sent.
POLL_SECONDS = 0.02


@dataclass(frozen=True)
class ReplicatorConfig:
    database_url: str
    publication: str
    slot: str
    expected_system_id: str | None = None
    expected_timeline: int | None = None
    # The end LSN of the last transaction the parent has made durable: Postgres may have
    # lost our acknowledgement of it over a restart, and would resend from before it.
    start_lsn: int | None = None


def run(config: ReplicatorConfig, pipe: multiprocessing.connection.Connection) -> None:
    """The child process's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _replicate(config, pipe)
    except (BrokenPipeError, EOFError):
        return
    except IdentityChanged as exc:
        _send(pipe, ("error", "identity", str(exc)))
    except (SlotInvalidated, SlotMissing) as exc:
        _send(pipe, ("error", "slot", str(exc)))
    except ConnectionLost as exc:
        _send(pipe, ("error", "connection", str(exc)))
    except ReplicationError as exc:
        _send(pipe, ("error", "replication", str(exc)))
    except Exception as exc:  # report anything, the parent decides whether to retry
        log.exception("replication failed")
        _send(pipe, ("error", "internal", f"{type(exc).__name__}: {exc}"))


def _send(pipe: multiprocessing.connection.Connection, message: tuple) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.send(message)


def _replicate(config: ReplicatorConfig, pipe: multiprocessing.connection.Connection) -> None:
    names = ReplicationNames(config.publication, config.slot)
    expected = None
    if config.expected_system_id is not None and config.expected_timeline is not None:
        expected = SystemIdentity(config.expected_system_id, config.expected_timeline, 0, None)
    lock = ReplicationLock(config.database_url, config.slot)
    if not lock.try_acquire():
        pipe.send(("status", "waiting", "another instance holds the replication lock"))
        while not lock.acquire(timeout=5):
            if pipe.poll() and pipe.recv()[0] == "stop":
                return
    connection = ReplicationConnection(config.database_url, names, settings=SESSION_SETTINGS)
    try:
        identity = connection.open(expected)
        pipe.send(("identity", identity.system_id, identity.timeline))
        slot = connection.ensure_slot()
        stream = connection.start(config.start_lsn)
        pipe.send(("status", "active", f"slot {slot.name} from {slot.confirmed_flush_lsn}"))
        _stream(stream, pipe)
    finally:
        connection.close()
        lock.close()


def _stream(stream: ReplicationStream, pipe: multiprocessing.connection.Connection) -> None:
    ready: list[tuple[Transaction, int]] = []
    relations: list[tuple] = []

    def emit(transaction: Transaction, end_lsn: int) -> None:
        ready.append((transaction, end_lsn))

    def on_relation(relation: pg.Relation) -> None:
        columns = [(c.name, c.type_oid) for c in relation.columns]
        relations.append(("relation", relation.namespace, relation.name, columns))

    assembler = TransactionAssembler(emit, on_relation)
    sent_lsn = 0
    acked_lsn = 0
    collector = IdleCollector()  # the automatic collector stays off in this process
    while True:
        messages = stream.poll(POLL_SECONDS)
        for message in messages:
            assembler.feed(message)
        del messages
        for relation in relations:
            pipe.send(relation)
        relations.clear()
        if ready:
            sent_lsn = ready[-1][1]
            pipe.send(("transactions", encode_batch(ready)))
            ready = []
        collector.tick(busy=assembler.in_transaction)
        while pipe.poll():
            command = pipe.recv()
            if command[0] == "stop":
                return
            if command[0] == "ack":
                acked_lsn = max(acked_lsn, command[1])
                stream.acknowledge(acked_lsn)
        idle = not assembler.in_transaction and acked_lsn >= sent_lsn
        if idle and stream.server_wal_end > acked_lsn:
            # Nothing of ours is pending: the slot may move to the server's WAL end.
            acked_lsn = sent_lsn = stream.server_wal_end
            stream.acknowledge(acked_lsn)
