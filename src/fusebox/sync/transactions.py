"""Assembling decoded pgoutput messages into committed transactions.

Plain transactions arrive as Begin, changes, Commit. Large ones (protocol 2 with
`streaming 'on'`) arrive in segments between Stream Start and Stream Stop, possibly
interleaved with other transactions, and end with Stream Commit or Stream Abort (which
may abort only a subtransaction). Only committed changes leave this module, in commit
order, each transaction whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fusebox.sync.changes import Change, Transaction
from fusebox.sync.replication import pgoutput as pg


@dataclass(slots=True)
class _Streamed:
    # (subtransaction xid, change or truncated relations), in arrival order.
    entries: list[tuple[int, Change | list[tuple[str, str]]]] = field(default_factory=list)


def _relation(rel: pg.Relation) -> tuple[str, str]:
    return (rel.namespace, rel.name)


def _values(rel: pg.Relation, values: tuple | None) -> tuple | None:
    if values is not None and len(values) != len(rel.column_names):
        raise pg.DecodeError(
            f"a row of {rel.namespace}.{rel.name} has {len(values)} columns, "
            f"its Relation message {len(rel.column_names)}"
        )
    return values


def _change(message: pg.Insert | pg.Update | pg.Delete) -> Change:
    # Rows stay value tuples here (see `Change`); the column names travel alongside.
    rel = message.relation
    columns = rel.column_names
    if isinstance(message, pg.Insert):
        return Change(
            "insert", _relation(rel), new=_values(rel, message.new_tuple), columns=columns
        )
    if isinstance(message, pg.Update):
        # With REPLICA IDENTITY FULL the old row comes whole (`O`); a key-only old tuple
        # (`K`) has None outside the key and is not enough to tell moves in and out.
        old = _values(rel, message.old_tuple) if message.old_kind == "O" else None
        new = _values(rel, message.new_tuple)
        return Change("update", _relation(rel), new=new, old=old, columns=columns)
    return Change("delete", _relation(rel), old=_values(rel, message.old_tuple), columns=columns)


class TransactionAssembler:
    """Feed decoded messages in; completed transactions come out through `emit`."""

    def __init__(
        self,
        emit: Callable[[Transaction, int], None],
        on_relation: Callable[[pg.Relation], None] | None = None,
    ) -> None:
        # emit(transaction, end_lsn): end_lsn is what to acknowledge once it is durable.
        self._emit = emit
        self._on_relation = on_relation
        self._current: Transaction | None = None
        self._streamed: dict[int, _Streamed] = {}
        self._streaming_xid: int | None = None

    @property
    def in_transaction(self) -> bool:
        """True while a transaction has begun (or a streamed one is open) but not ended."""
        return self._current is not None or bool(self._streamed)

    def feed(self, message: pg.PgOutputMessage) -> None:
        if isinstance(message, pg.Insert | pg.Update | pg.Delete):
            self._add(message.xid, _change(message))
        elif isinstance(message, pg.Begin):
            self._current = Transaction(message.xid, message.final_lsn)
        elif isinstance(message, pg.Commit):
            current, self._current = self._current, None
            if current is not None:
                current.lsn = message.commit_lsn
                self._emit(current, message.end_lsn)
        elif isinstance(message, pg.Relation):
            if self._on_relation is not None:
                self._on_relation(message)
        elif isinstance(message, pg.Truncate):
            self._add(message.xid, [_relation(rel) for rel in message.relations])
        elif isinstance(message, pg.StreamStart):
            self._streaming_xid = message.xid
            self._streamed.setdefault(message.xid, _Streamed())
        elif isinstance(message, pg.StreamStop):
            self._streaming_xid = None
        elif isinstance(message, pg.StreamCommit):
            streamed = self._streamed.pop(message.xid, _Streamed())
            transaction = Transaction(message.xid, message.commit_lsn)
            for _, entry in streamed.entries:
                if isinstance(entry, Change):
                    transaction.changes.append(entry)
                else:
                    transaction.truncated.extend(entry)
            self._emit(transaction, message.end_lsn)
        elif isinstance(message, pg.StreamAbort):
            streamed = self._streamed.get(message.xid)
            if streamed is None:
                return
            if message.subxact_xid == message.xid:
                del self._streamed[message.xid]
            else:
                streamed.entries = [e for e in streamed.entries if e[0] != message.subxact_xid]

    def _add(self, xid: int | None, entry: Change | list[tuple[str, str]]) -> None:
        if self._streaming_xid is not None:
            top = self._streaming_xid
            self._streamed[top].entries.append((xid if xid is not None else top, entry))
            return
        if self._current is None:
            return
        if isinstance(entry, Change):
            self._current.changes.append(entry)
        else:
            self._current.truncated.extend(entry)
