"""Replicated changes, and what one change means to one shape.

A change becomes zero, one or two log items for a shape: rows moving into the where
clause become inserts, rows moving out become deletes, primary-key changes become a
delete of the old key and an insert of the new one, and updates that touch no selected
column disappear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from fusebox.sync.replication.pgoutput import UNCHANGED_TOAST

Row = dict[str, str | None]


@dataclass(slots=True)
class Change:
    """One row change. `new` and `old` are dicts where changes are routed.

    In the replication process they are still the decoded value tuples, with the
    relation's column names in `columns` (see `encode_batch`): building, shipping and
    freeing dicts there was ~3 us of its ~8.5 us per row, and the routing side builds
    each dict once either way.
    """

    operation: str  # insert | update | delete
    relation: tuple[str, str]
    new: Row | None = None
    old: Row | None = None
    columns: tuple[str, ...] | None = None


@dataclass(slots=True)
class Transaction:
    xid: int
    # The commit LSN: every change in the transaction shares it in its log offset.
    lsn: int
    changes: list[Change] = field(default_factory=list)
    # Relations the transaction truncated.
    truncated: list[tuple[str, str]] = field(default_factory=list)


# -- crossing the pipe ---------------------------------------------------------------------
#
# Transactions go from the replication process to the routing side in batches, as one
# orjson document: [[relation, ...], [[xid, lsn, end_lsn, [change, ...], truncated], ...]]
# with a relation as [schema, name, [column, ...]] and a change as [operation, relation
# index, new values, old values]. Measured on 100,000-row transactions, pickle spent
# ~2 us per row on the replication side (it memoizes every value string), orjson a
# fraction of that. An unchanged TOASTed value travels as "\x00", which no Postgres text
# value can contain.

_TOAST_WIRE = "\x00"


def _wire_value(value: object) -> str:
    if value is UNCHANGED_TOAST:
        return _TOAST_WIRE
    raise TypeError(f"cannot ship a {type(value).__name__} value")  # binary mode is never used


def encode_batch(batch: list[tuple[Transaction, int]]) -> bytes:
    """Transactions (rows still value tuples, see `Change`) with their end LSNs."""
    relations: dict[tuple, int] = {}
    table: list[list] = []
    shipped = []
    for transaction, end_lsn in batch:
        changes = []
        for change in transaction.changes:
            key = (change.relation, change.columns)
            index = relations.get(key)
            if index is None:
                index = relations[key] = len(table)
                table.append([change.relation[0], change.relation[1], change.columns])
            changes.append([change.operation, index, change.new, change.old])
        shipped.append([transaction.xid, transaction.lsn, end_lsn, changes, transaction.truncated])
    return orjson.dumps([table, shipped], default=_wire_value)


def decode_batch(data: bytes) -> list[tuple[Transaction, int]]:
    """The routing side of `encode_batch`: rows become dicts."""
    table, shipped = orjson.loads(data)
    relations = [((schema, name), tuple(columns)) for schema, name, columns in table]
    batch = []
    for xid, lsn, end_lsn, changes, truncated in shipped:
        built = []
        for operation, index, new, old in changes:
            relation, columns = relations[index]
            if new is not None:
                if operation == "update" and _TOAST_WIRE in new:
                    new = [UNCHANGED_TOAST if v == _TOAST_WIRE else v for v in new]
                new = dict(zip(columns, new, strict=True))
            if old is not None:
                old = dict(zip(columns, old, strict=True))
            built.append(Change(operation, relation, new, old))
        transaction = Transaction(xid, lsn, built, [tuple(r) for r in truncated])
        batch.append((transaction, end_lsn))
    return batch


@dataclass(slots=True)
class ShapeItem:
    operation: str
    key: str
    value: Row
    op_position: int
    old_value: Row | None = None
    headers: dict | None = None


def fill_unchanged(new: Row, old: Row | None) -> Row:
    if old is None or UNCHANGED_TOAST not in new.values():
        return new
    return {k: (old.get(k) if v is UNCHANGED_TOAST else v) for k, v in new.items()}


def shape_items(
    change: Change,
    op_position: int,
    matches: Callable[[Row], bool],
    selected: tuple[str, ...],
    primary_key: tuple[str, ...],
    key_of: Callable[[Row], str],
    full: bool,
    routed: bool = False,
) -> list[ShapeItem]:
    """The log items `change` produces for a shape (empty when it does not concern it).

    `routed`: an exact index found the shape for this change's row, so an insert or a
    delete matches without evaluating the clause (an update's two rows still are).
    """
    if change.operation == "insert":
        assert change.new is not None
        if not routed and not matches(change.new):
            return []
        return [ShapeItem("insert", key_of(change.new), _pick(change.new, selected), op_position)]
    if change.operation == "delete":
        old = change.old
        assert old is not None
        if not routed and not matches(old):
            return []
        value = _pick(old, selected if full else primary_key)
        return [ShapeItem("delete", key_of(old), value, op_position)]
    assert change.new is not None
    old = change.old
    new = fill_unchanged(change.new, old)
    if old is None:
        old = new
    was_in = matches(old)
    is_in = matches(new)
    if not was_in and not is_in:
        return []
    if was_in and not is_in:
        value = _pick(old, selected if full else primary_key)
        return [ShapeItem("delete", key_of(old), value, op_position)]
    if is_in and not was_in:
        return [ShapeItem("insert", key_of(new), _pick(new, selected), op_position)]
    old_key = key_of(old)
    new_key = key_of(new)
    if old_key != new_key:
        removed = ShapeItem(
            "delete",
            old_key,
            _pick(old, selected if full else primary_key),
            op_position,
            headers={"key_change_to": new_key},
        )
        added = ShapeItem(
            "insert",
            new_key,
            _pick(new, selected),
            op_position + 1,
            headers={"key_change_from": old_key},
        )
        return [removed, added]
    changed = [c for c in selected if old.get(c) != new.get(c)]
    if not changed:
        return []
    if full:
        value = _pick(new, selected)
        old_value = {c: old.get(c) for c in changed}
        return [ShapeItem("update", new_key, value, op_position, old_value=old_value)]
    value = {c: new.get(c) for c in primary_key}  # not `_pick`: it may return the row itself
    value.update({c: new.get(c) for c in changed})
    return [ShapeItem("update", new_key, value, op_position)]


def _pick(row: Row, columns: tuple[str, ...]) -> Row:
    """The row narrowed to `columns`; the row itself when that is all of it, in order
    (whole-row shapes): items are encoded at once and never changed, so no copy."""
    if len(row) == len(columns) and tuple(row) == columns:
        return row
    return {c: row.get(c) for c in columns}
