"""`compile_where`: validate a shape's where clause and params into a `WhereClause`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import datetimes
from .analyze import Analyzer, Relation, parse, subquery_relations
from .errors import WhereError, WhereEvalError
from .evaluate import Evaluator, Row, compile_node, fold
from .nodes import (
    Apply,
    ArrayOp,
    BoolExpr,
    BoolTest,
    Column,
    Const,
    InSubquery,
    Node,
    Not,
    SubqueryResult,
    Subselect,
    walk,
)
from .render import render, render_subselect
from .types import INTEGERS, TEXT, VARCHAR, ColumnType, PgType
from .values import eq_key, output_parser


class IndexHint(NamedTuple):
    """Rows can match only if `row[column]` (its text value) is one of `values`.

    An empty `values` means no row can match. The values are Postgres's text output
    under the session settings (ISO dates), i.e. what replication delivers.
    """

    column: str
    values: frozenset[str]


@dataclass(frozen=True, eq=False)
class Subquery:
    """One `IN (SELECT column FROM table WHERE ...)` of a clause, nested ones included.

    Its `result` starts empty: the caller fills it (`load`, from `sql` run in the same
    snapshot as the outer rows) and keeps it current with the table's changes, in commit
    order (`apply_change`). The clause's evaluation reads the result as it is.
    """

    select: Subselect
    sql: str
    # Read by another subquery's where clause, not by the clause itself.
    nested: bool
    _matches: Evaluator = field(repr=False)
    _key: Callable[[str], Any] = field(repr=False)

    @property
    def relation(self) -> Relation:
        return self.select.relation

    @property
    def result(self) -> SubqueryResult:
        return self.select.result

    def _row_key(self, row: Row | None) -> Any:
        """The row's key in the result, or _ABSENT when the row is not selected."""
        if row is None:
            return _ABSENT
        try:
            if self._matches(row) is not True:
                return _ABSENT
        except WhereEvalError:
            return _ABSENT  # as for the outer rows: Postgres would not return it either
        text = row.get(self.select.column)
        return None if text is None else self._key(text)

    def load(self, texts: Iterable[str | None]) -> None:
        """Fill the result from the column's text values (None for NULL)."""
        for text in texts:
            self.select.result.add(None if text is None else self._key(text))

    def apply_change(self, old: Row | None, new: Row | None) -> tuple[Any, ...]:
        """Follow one row change (old and/or new row of the subquery's table).

        Returns the keys that entered or left the set of distinct values (None for NULL);
        empty when the set is as it was.
        """
        before, after = self._row_key(old), self._row_key(new)
        if before == after and (before is _ABSENT) == (after is _ABSENT):
            return ()
        result = self.select.result
        toggled = []
        if before is not _ABSENT and result.remove(before):
            toggled.append(before)
        if after is not _ABSENT and result.add(after):
            toggled.append(after)
        return tuple(toggled)


_ABSENT = object()


@dataclass(frozen=True, eq=False)
class WhereClause:
    """A compiled where clause: evaluate on rows, or hand its SQL to Postgres."""

    where: str
    sql: str
    referenced_columns: frozenset[str]
    index_hint: IndexHint | None
    tree: Node = field(repr=False)
    _evaluate: Evaluator = field(repr=False)
    # Every subquery, nested ones too, outermost first.
    subqueries: tuple[Subquery, ...] = ()
    # The clause is exactly its index hint: every row the hint admits matches.
    exact: bool = False

    def matches(self, row: Row) -> bool:
        """True when the clause is TRUE for the row (NULL and FALSE do not match).

        `row` maps column names to Postgres text output (None for NULL); only referenced
        columns are read. Raises WhereEvalError where Postgres would raise (overflow,
        division by zero, a failed cast).
        """
        return self._evaluate(row) is True


def tables_read(where: str) -> list[Relation]:
    """The tables `where`'s subqueries read: `compile_where` needs their columns."""
    return subquery_relations(parse(where))


def compile_where(
    where: str,
    columns: Mapping[str, ColumnType | PgType],
    params: Mapping[str, str] | None = None,
    tables: Mapping[Relation, Mapping[str, ColumnType | PgType]] | None = None,
) -> WhereClause:
    """Parse, type-check and compile `where` for a table with `columns`.

    `params` maps "1".."n" to the text of `$1`..`$n`; keys must be exactly 1..n, and (as
    in Electric) some may go unused. `tables` gives the columns of each table a subquery
    reads (see `tables_read`). Raises WhereError (with `.field` "where" or "params")
    for anything that Electric would answer with a 400.
    """
    params = dict(params or {})
    _check_param_keys(params)
    types = {name: _pg_type(t) for name, t in columns.items()}
    table_types = {
        relation: {name: _pg_type(t) for name, t in table.items()}
        for relation, table in (tables or {}).items()
    }
    analyzer = Analyzer(types, params, table_types)
    try:
        tree = _prepared(analyzer.analyze(parse(where)))
        subqueries = []
        top = _subselects(tree)
        pending = list(top)
        while pending:
            select = pending.pop(0)
            if select.where is not None:
                select.where = _prepared(select.where)
                pending.extend(_subselects(select.where))
            subqueries.append(_subquery(select, nested=not any(select is t for t in top)))
    except RecursionError:
        raise WhereError(f"the where clause nests deeper than {MAX_DEPTH} levels") from None
    # Params the clause does not use are accepted, as Electric accepts them.
    referenced = frozenset(n.name for n in walk(tree) if isinstance(n, Column))
    lookup = _exact_lookup(tree)
    return WhereClause(
        where=where,
        sql=render(tree),
        referenced_columns=referenced,
        index_hint=_index_hint(tree),
        tree=tree,
        _evaluate=lookup or compile_node(tree),
        subqueries=tuple(subqueries),
        exact=lookup is not None,
    )


def _prepared(tree: Node) -> Node:
    # Everything below recurses over the tree, at compile time and on every row.
    if _depth(tree) > MAX_DEPTH:
        raise RecursionError
    return fold(tree)


def _subselects(tree: Node) -> list[Subselect]:
    return [n.select for n in walk(tree) if isinstance(n, InSubquery)]


def _subquery(select: Subselect, nested: bool) -> Subquery:
    parse_text = output_parser(select.column_type)
    key = eq_key(select.column_type)
    matches = compile_node(select.where) if select.where is not None else (lambda row: True)
    return Subquery(
        select, render_subselect(select), nested, matches, lambda text: key(parse_text(text))
    )


MAX_DEPTH = 200


def _depth(tree: Node) -> int:
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.children())
    return deepest


def _pg_type(column_type: ColumnType | PgType) -> PgType | None:
    if isinstance(column_type, PgType):
        return column_type
    return column_type.to_pg_type()


def _check_param_keys(params: dict[str, Any]) -> None:
    numbers = []
    for key, value in params.items():
        if not isinstance(key, str) or not key.isdigit() or not key.isascii():
            raise WhereError("Parameters can only use numbers as keys", field="params")
        if not isinstance(value, str):
            raise WhereError(f"parameter ${key} must be a string", field="params")
        numbers.append(int(key))
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise WhereError(
            "Parameters must be numbered sequentially, starting from 1", field="params"
        )


# -- index hints --------------------------------------------------------------------------
# Only types whose text output is canonical for equality: `=` holds exactly when the
# texts are equal. numeric (1.0 = 1.00) and floats (-0 = 0) are not; timestamptz text
# depends on the replication session's TimeZone, so it is left out to be safe.

_HINT_TYPES = frozenset(
    ("int2", "int4", "int8", "text", "varchar", "bool", "uuid", "date", "timestamp")
)


def _hint_formatter(pg_type: PgType) -> Any:
    if pg_type.array:
        return None
    if pg_type.enum is not None:
        return str
    if pg_type.name not in _HINT_TYPES:
        return None
    if pg_type.name == "bool":
        return lambda v: "t" if v else "f"
    if pg_type.name == "date":
        return datetimes.format_date
    if pg_type.name == "timestamp":
        return datetimes.format_timestamp
    return str


_RELABELS = frozenset((f"{VARCHAR}::{TEXT}", f"{TEXT}::{VARCHAR}"))


def _plain_column(node: Node) -> Column | None:
    """The column under relabelling casts that do not change the text (varchar to text)."""
    while isinstance(node, Apply) and node.function.name in _RELABELS:
        node = node.args[0]
    return node if isinstance(node, Column) else None


def _equality_hint(column_node: Node, const: Node) -> IndexHint | None:
    column = _plain_column(column_node)
    if column is None or not isinstance(const, Const):
        return None
    formatter = _hint_formatter(column.type)
    if formatter is None:
        return None
    if const.value is None:
        return IndexHint(column.name, frozenset())
    same_kind = const.type == column.type or (
        const.type.name in INTEGERS and column.type.name in INTEGERS
    )
    if not same_kind and not (const.type.category == column.type.category == "S"):
        return None
    return IndexHint(column.name, frozenset((formatter(const.value),)))


def _exact_hint(node: Node) -> IndexHint | None:
    """The node's hint when it says exactly which rows match, not just which may.

    True of the single forms (`col = c`, `col = ANY(...)`/`IN`, a boolean column and its
    NOT / IS TRUE / IS FALSE) and of ORs of them on one column; an AND's hint is one
    conjunct's, so never exact.
    """
    if isinstance(node, BoolExpr):
        if node.op != "OR":
            return None
        hints = [_exact_hint(arg) for arg in node.args]
        if any(h is None for h in hints) or len({h.column for h in hints}) != 1:  # type: ignore[union-attr]
            return None
        return IndexHint(hints[0].column, frozenset().union(*(h.values for h in hints)))  # type: ignore[union-attr]
    return _index_hint(node)


def _exact_lookup(tree: Node) -> Evaluator | None:
    """For a clause that is exactly its index hint, evaluation as a set lookup.

    The hint's values are the texts for which `=` holds (only types whose text output is
    canonical get hints), and NULL matches nothing; so `row[column] in values` is the
    clause's truth, without walking the tree. Most shapes (`tenant_id = 42`) are this.
    """
    hint = _exact_hint(tree)
    if hint is None:
        return None
    column, values = hint

    def lookup(row: Row) -> bool:
        try:
            return row[column] in values
        except KeyError:
            raise WhereEvalError(f"the row has no value for column {column!r}") from None

    return lookup


def _index_hint(node: Node) -> IndexHint | None:
    if isinstance(node, BoolExpr):
        hints = [_index_hint(arg) for arg in node.args]
        if node.op == "AND":
            found = [h for h in hints if h is not None]
            return min(found, key=lambda h: len(h.values)) if found else None
        if all(h is not None for h in hints) and len({h.column for h in hints}) == 1:  # type: ignore[union-attr]
            merged = frozenset().union(*(h.values for h in hints))  # type: ignore[union-attr]
            return IndexHint(hints[0].column, merged)  # type: ignore[union-attr]
        return None
    if isinstance(node, Apply) and node.function.name == "=" and len(node.args) == 2:
        left, right = node.args
        return _equality_hint(left, right) or _equality_hint(right, left)
    if isinstance(node, ArrayOp) and node.op == "=" and node.use_or:
        column = _plain_column(node.left)
        array = node.right
        if column is None or not isinstance(array, Const) or array.value is None:
            return None
        formatter = _hint_formatter(column.type)
        element = array.type.element
        same_kind = element == column.type or (
            element.name in INTEGERS and column.type.name in INTEGERS
        )
        if formatter is None or not (same_kind or element.category == column.type.category == "S"):
            return None
        texts = frozenset(formatter(v) for v in array.value.items if v is not None)
        return IndexHint(column.name, texts)
    if isinstance(node, Column) and node.type.name == "bool" and not node.type.array:
        return IndexHint(node.name, frozenset(("t",)))
    if isinstance(node, Not) and isinstance(node.arg, Column) and node.arg.type.name == "bool":
        return IndexHint(node.arg.name, frozenset(("f",)))
    if (
        isinstance(node, BoolTest)
        and isinstance(node.arg, Column)
        and node.test in ("IS TRUE", "IS FALSE")
    ):
        return IndexHint(node.arg.name, frozenset(("t" if node.test == "IS TRUE" else "f",)))
    return None
