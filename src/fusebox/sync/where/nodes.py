"""The typed expression tree that analysis produces and evaluation and SQL generation share.

Every node carries its Postgres type. Implicit coercions that Postgres would insert are
explicit `Apply` nodes here, so the Python evaluator and the generated SQL follow the
same, already resolved, operators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .types import BOOL, TEXT, PgType


@dataclass(frozen=True, eq=False)
class Function:
    """A resolved operator, function or cast.

    `impl` receives evaluated arguments; when `strict`, it is only called without NULLs
    (a NULL argument gives NULL), as for Postgres's strict functions. `sql` renders the
    call from already rendered arguments.
    """

    name: str
    impl: Callable[..., Any]
    sql: Callable[[Sequence[str]], str]
    strict: bool = True


class Node:
    __slots__ = ()
    type: PgType
    location: int

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(eq=False, slots=True)
class Const(Node):
    value: Any
    type: PgType
    location: int = -1


@dataclass(eq=False, slots=True)
class Column(Node):
    name: str
    type: PgType
    location: int = -1


@dataclass(eq=False, slots=True)
class Apply(Node):
    function: Function
    args: tuple[Node, ...]
    type: PgType
    location: int = -1

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(eq=False, slots=True)
class BoolExpr(Node):
    op: str  # "AND" or "OR"
    args: tuple[Node, ...]
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(eq=False, slots=True)
class Not(Node):
    arg: Node
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.arg,)


@dataclass(eq=False, slots=True)
class NullTest(Node):
    arg: Node
    negated: bool
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.arg,)


@dataclass(eq=False, slots=True)
class BoolTest(Node):
    arg: Node
    test: str  # "IS TRUE", "IS NOT TRUE", "IS FALSE", ..., "IS NOT UNKNOWN"
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.arg,)


@dataclass(eq=False, slots=True)
class Distinct(Node):
    """`a IS [NOT] DISTINCT FROM b`, using the `=` resolved for the pair."""

    eq: Function
    left: Node
    right: Node
    negated: bool  # True for IS NOT DISTINCT FROM
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(eq=False, slots=True)
class ArrayOp(Node):
    """`left op ANY (array)` / `left op ALL (array)` (ScalarArrayOpExpr)."""

    op: str
    function: Function
    left: Node
    right: Node
    use_or: bool
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(eq=False, slots=True)
class Coalesce(Node):
    args: tuple[Node, ...]
    type: PgType
    location: int = -1

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(eq=False, slots=True)
class MinMax(Node):
    """GREATEST / LEAST: NULLs are ignored; NULL only when every argument is."""

    args: tuple[Node, ...]
    type: PgType
    greatest: bool
    lt: Callable[[Any, Any], bool]
    location: int = -1

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(eq=False, slots=True)
class Concat(Node):
    """concat(...): output text of each non-NULL argument; never NULL itself."""

    args: tuple[Node, ...]
    formatters: tuple[Callable[[Any], str], ...]
    location: int = -1
    type: PgType = TEXT

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(eq=False, slots=True)
class ArrayExpr(Node):
    """ARRAY[a, b, ...] (one dimension)."""

    elements: tuple[Node, ...]
    type: PgType
    location: int = -1

    def children(self) -> tuple[Node, ...]:
        return self.elements


@dataclass(eq=False, slots=True)
class Subscript(Node):
    array: Node
    indexes: tuple[Node, ...]
    type: PgType
    location: int = -1

    def children(self) -> tuple[Node, ...]:
        return (self.array, *self.indexes)


class SubqueryResult:
    """The current result of `SELECT column FROM table WHERE ...`, as a multiset of keys.

    Keys are the column's equality keys (`values.eq_key`), None for NULL. Whoever follows
    the subquery's table keeps it current; `add` and `remove` say whether the set of
    distinct values changed, which is when rows of the outer table move in or out.
    """

    __slots__ = ("counts", "nulls")

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}
        self.nulls = 0

    def __len__(self) -> int:
        return len(self.counts) + (1 if self.nulls else 0)

    def __contains__(self, key: Any) -> bool:
        return self.nulls > 0 if key is None else key in self.counts

    def add(self, key: Any) -> bool:
        if key is None:
            self.nulls += 1
            return self.nulls == 1
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        return count == 0

    def remove(self, key: Any) -> bool:
        if key is None:
            if self.nulls == 0:
                raise KeyError("NULL is not in the subquery result")
            self.nulls -= 1
            return self.nulls == 0
        count = self.counts[key]
        if count == 1:
            del self.counts[key]
            return True
        self.counts[key] = count - 1
        return False


@dataclass(eq=False, slots=True)
class Subselect:
    """`SELECT column FROM schema.table [WHERE where]`: one column of one table.

    `where` is a tree over the subquery's own table (it may hold subqueries in turn);
    `result` is the current result, filled and maintained by the caller.
    """

    schema: str
    table: str
    column: str
    column_type: PgType
    where: Node | None
    result: SubqueryResult

    @property
    def relation(self) -> tuple[str, str]:
        return (self.schema, self.table)


@dataclass(eq=False, slots=True)
class InSubquery(Node):
    """`left IN (SELECT ...)`: true when the subquery's current result holds `left`.

    Only `left` is a child: the subquery's where clause reads rows of another table.
    """

    left: Node
    select: Subselect
    location: int = -1
    type: PgType = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.left,)


def walk(node: Node) -> list[Node]:
    """All nodes of a tree, parents first."""
    found = [node]
    for child in node.children():
        found.extend(walk(child))
    return found
