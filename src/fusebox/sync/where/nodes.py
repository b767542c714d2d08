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


def walk(node: Node) -> list[Node]:
    """All nodes of a tree, parents first."""
    found = [node]
    for child in node.children():
        found.extend(walk(child))
    return found
