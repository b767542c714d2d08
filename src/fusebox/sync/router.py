"""Which shapes a changed row can concern, without asking every shape.

Shapes whose where clause pins a column to constants (`col = 1`, `col IN (1, 2)`, or such
a conjunct under AND) are indexed by that column's text value, so the shapes a change
reaches are found with one dictionary lookup per indexed column, whatever the number of
shapes. Only the candidates evaluate their full where clause.

A shape whose where clause has subqueries also depends on the tables they read: changes
to those reach it through `dependents`, to keep the subqueries' results current.
"""

from __future__ import annotations

from collections.abc import Collection, Set
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusebox.sync.shapes import Shape


class _TableIndex:
    __slots__ = ("by_column", "unindexed")

    def __init__(self) -> None:
        self.unindexed: set[Shape] = set()
        # Per column, per value: the shape, or a set when several share the value. Usually
        # one (`tenant = 7`): a set each would be one more object to load per change.
        self.by_column: dict[str, dict[str, Shape | set[Shape]]] = {}


class Router:
    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], _TableIndex] = {}
        self._dependents: dict[tuple[str, str], set[Shape]] = {}

    def dependents(self, relation: tuple[str, str]) -> Set[Shape]:
        """The shapes with a subquery reading `relation`."""
        return self._dependents.get(relation) or _NONE

    def add(self, shape: Shape) -> None:
        for relation in shape.dependencies:
            self._dependents.setdefault(relation, set()).add(shape)
        index = self._tables.setdefault(shape.table.relation, _TableIndex())
        hint = shape.where.index_hint if shape.where is not None else None
        if hint is None:
            index.unindexed.add(shape)
            return
        by_value = index.by_column.setdefault(hint.column, {})
        for value in hint.values:
            entry = by_value.get(value)
            if entry is None:
                by_value[value] = shape
            elif type(entry) is set:
                entry.add(shape)
            elif entry is not shape:
                by_value[value] = {entry, shape}

    def remove(self, shape: Shape) -> None:
        for relation in shape.dependencies:
            dependents = self._dependents.get(relation)
            if dependents is not None:
                dependents.discard(shape)
                if not dependents:
                    del self._dependents[relation]
        index = self._tables.get(shape.table.relation)
        if index is None:
            return
        index.unindexed.discard(shape)
        hint = shape.where.index_hint if shape.where is not None else None
        if hint is not None:
            by_value = index.by_column.get(hint.column, {})
            for value in hint.values:
                entry = by_value.get(value)
                if entry is shape:
                    del by_value[value]
                elif type(entry) is set:
                    entry.discard(shape)
                    if len(entry) == 1:
                        by_value[value] = next(iter(entry))

    def shapes_of(self, relation: tuple[str, str]) -> set[Shape]:
        """Every shape of `relation`, and every shape with a subquery reading it."""
        found = set(self.dependents(relation))
        index = self._tables.get(relation)
        if index is None:
            return found
        found |= index.unindexed
        for by_value in index.by_column.values():
            for entry in by_value.values():
                _add(found, entry)
        return found

    def candidates(self, relation: tuple[str, str], rows: list[dict]) -> Collection[Shape]:
        """The shapes a change with these rows (new, old) can concern; do not modify it."""
        index = self._tables.get(relation)
        if index is None:
            return _NONE
        if not index.unindexed and len(rows) == 1 and len(index.by_column) == 1:
            # An insert or delete under `col = const` shapes: the index's own entry, no copy.
            ((column, by_value),) = index.by_column.items()
            value = rows[0].get(column)
            entry = by_value.get(value) if isinstance(value, str) else None
            if entry is None:
                return _NONE
            return entry if type(entry) is set else (entry,)
        found = set(index.unindexed) if index.unindexed else set()
        if index.by_column:
            for row in rows:
                for column, by_value in index.by_column.items():
                    value = row.get(column)
                    if isinstance(value, str):
                        entry = by_value.get(value)
                        if entry is not None:
                            _add(found, entry)
        return found


def _add(found: set[Shape], entry: Shape | set[Shape]) -> None:
    if type(entry) is set:
        found |= entry
    else:
        found.add(entry)  # type: ignore[arg-type]


_NONE: frozenset[Shape] = frozenset()
