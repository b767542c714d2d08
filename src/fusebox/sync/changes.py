"""Replicated changes, and what one change means to one shape.

A change becomes zero, one or two log items for a shape: rows moving into the where
clause become inserts, rows moving out become deletes, primary-key changes become a
delete of the old key and an insert of the new one, and updates that touch no selected
column disappear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fusebox.sync.replication.pgoutput import UNCHANGED_TOAST

Row = dict[str, str | None]


@dataclass(slots=True)
class Change:
    operation: str  # insert | update | delete
    relation: tuple[str, str]
    new: Row | None = None
    old: Row | None = None


@dataclass(slots=True)
class Transaction:
    xid: int
    # The commit LSN: every change in the transaction shares it in its log offset.
    lsn: int
    changes: list[Change] = field(default_factory=list)
    # Relations the transaction truncated.
    truncated: list[tuple[str, str]] = field(default_factory=list)

    def __reduce__(self):
        # Transactions cross a pipe in bulk. Pickling each Change as a slotted dataclass
        # costs several times more than as a plain tuple, on both sides.
        changes = [(c.operation, c.relation, c.new, c.old) for c in self.changes]
        return (_transaction, (self.xid, self.lsn, changes, self.truncated))


def _transaction(
    xid: int, lsn: int, changes: list[tuple], truncated: list[tuple[str, str]]
) -> Transaction:
    return Transaction(xid, lsn, [Change(*change) for change in changes], truncated)


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
    *,
    matches: Callable[[Row], bool],
    selected: tuple[str, ...],
    primary_key: tuple[str, ...],
    key_of: Callable[[Row], str],
    full: bool,
) -> list[ShapeItem]:
    """The log items `change` produces for a shape (empty when it does not concern it)."""
    if change.operation == "insert":
        assert change.new is not None
        if not matches(change.new):
            return []
        return [ShapeItem("insert", key_of(change.new), _pick(change.new, selected), op_position)]
    if change.operation == "delete":
        old = change.old
        assert old is not None
        if not matches(old):
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
    value = _pick(new, primary_key)
    value.update({c: new.get(c) for c in changed})
    return [ShapeItem("update", new_key, value, op_position)]


def _pick(row: Row, columns: tuple[str, ...]) -> Row:
    if len(row) == len(columns) and tuple(row) == columns:
        return dict(row)  # every column, in order (whole-row shapes): a plain copy is faster
    return {c: row.get(c) for c in columns}
