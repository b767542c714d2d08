"""Evaluation: the typed tree compiled into closures over a row of text values.

NULL is None, and SQL's three-valued logic is followed throughout. AND/OR are lenient
about errors: a definite FALSE (for AND) or TRUE (for OR) from any argument wins over an
error in another, because Postgres may evaluate arguments in any order (the planner
reorders quals by cost). So when the evaluator raises, Postgres raises too whatever the
order; the converse can fail only as "Postgres raises, we don't", never as a different
answer.

Constant subexpressions are folded at compile time as Postgres's planner folds them,
including its short-circuits (FALSE AND ... is not looked at further), so an error in a
constant (`1/0`) becomes a 400 here, where Postgres would fail the snapshot query.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .arrays import PgArray, subscript
from .errors import WhereError, WhereEvalError
from .nodes import (
    Apply,
    ArrayExpr,
    ArrayOp,
    BoolExpr,
    BoolTest,
    Coalesce,
    Column,
    Concat,
    Const,
    Distinct,
    InSubquery,
    MinMax,
    Node,
    Not,
    NullTest,
    Subscript,
)
from .types import BOOL
from .values import eq_key, output_parser

Row = Mapping[str, str | None]
Evaluator = Callable[[Row], Any]


def compile_node(node: Node) -> Evaluator:
    compiler = _COMPILERS[type(node)]
    return compiler(node)


def _const(node: Const) -> Evaluator:
    value = node.value
    return lambda row: value


def _column(node: Column) -> Evaluator:
    name = node.name
    parse = output_parser(node.type)

    def column(row: Row) -> Any:
        try:
            text = row[name]
        except KeyError:
            raise WhereEvalError(f"the row has no value for column {name!r}") from None
        return None if text is None else parse(text)

    return column


def _apply(node: Apply) -> Evaluator:
    impl = node.function.impl
    args = [compile_node(arg) for arg in node.args]
    if not node.function.strict:
        return lambda row: impl(*[arg(row) for arg in args])
    if len(args) == 1:
        (only,) = args

        def unary(row: Row) -> Any:
            value = only(row)
            return None if value is None else impl(value)

        return unary
    if len(args) == 2:
        first, second = args

        def binary(row: Row) -> Any:
            a = first(row)
            if a is None:
                return None
            b = second(row)
            if b is None:
                return None
            return impl(a, b)

        return binary

    def general(row: Row) -> Any:
        evaluated = []
        for arg in args:
            value = arg(row)
            if value is None:
                return None
            evaluated.append(value)
        return impl(*evaluated)

    return general


def _bool_expr(node: BoolExpr) -> Evaluator:
    args = [compile_node(arg) for arg in node.args]
    decisive = node.op == "OR"  # TRUE decides an OR, FALSE an AND

    def combine(row: Row) -> bool | None:
        result: bool | None = not decisive
        error: WhereEvalError | None = None
        for arg in args:
            try:
                value = arg(row)
            except WhereEvalError as exc:
                error = error or exc
                continue
            if value is decisive:
                return decisive
            if value is None:
                result = None
        if error is not None:
            raise error
        return result

    return combine


def _not(node: Not) -> Evaluator:
    arg = compile_node(node.arg)

    def negate(row: Row) -> bool | None:
        value = arg(row)
        return None if value is None else not value

    return negate


def _null_test(node: NullTest) -> Evaluator:
    arg = compile_node(node.arg)
    if node.negated:
        return lambda row: arg(row) is not None
    return lambda row: arg(row) is None


_BOOL_TESTS: dict[str, Callable[[Any], bool]] = {
    "IS TRUE": lambda v: v is True,
    "IS NOT TRUE": lambda v: v is not True,
    "IS FALSE": lambda v: v is False,
    "IS NOT FALSE": lambda v: v is not False,
    "IS UNKNOWN": lambda v: v is None,
    "IS NOT UNKNOWN": lambda v: v is not None,
}


def _bool_test(node: BoolTest) -> Evaluator:
    arg = compile_node(node.arg)
    test = _BOOL_TESTS[node.test]
    return lambda row: test(arg(row))


def _distinct(node: Distinct) -> Evaluator:
    left, right = compile_node(node.left), compile_node(node.right)
    eq = node.eq.impl
    negated = node.negated

    def distinct(row: Row) -> bool:
        a, b = left(row), right(row)
        different = (a is None) != (b is None) if a is None or b is None else not eq(a, b)
        return not different if negated else different

    return distinct


def _array_op(node: ArrayOp) -> Evaluator:
    left, right = compile_node(node.left), compile_node(node.right)
    impl = node.function.impl
    use_or = node.use_or
    if (
        isinstance(node.right, Const)
        and node.right.value is not None
        and node.op == "="
        and use_or
        and node.left.type == node.right.type.element
    ):
        return _membership(left, node.right.value, eq_key(node.left.type))

    def scalar_array_op(row: Row) -> bool | None:
        value = left(row)
        array: PgArray | None = right(row)
        if array is None:
            return None
        if not array.items:
            return not use_or  # even for a NULL scalar: the operator never runs
        if value is None:
            return None
        saw_null = False
        for item in array.items:
            if item is None:
                saw_null = True
                continue
            if impl(value, item) is use_or:
                return use_or
        return None if saw_null else not use_or

    return scalar_array_op


def _membership(left: Evaluator, array: PgArray, key: Callable[[Any], Any]) -> Evaluator:
    """`x = ANY (constant array)`, e.g. a long IN list: one set lookup per row."""
    members = frozenset(key(item) for item in array.items if item is not None)
    has_null = any(item is None for item in array.items)
    if not array.items:
        return lambda row: False

    def member(row: Row) -> bool | None:
        value = left(row)
        if value is None:
            return None
        if key(value) in members:
            return True
        return None if has_null else False

    return member


def _in_subquery(node: InSubquery) -> Evaluator:
    """`x IN (SELECT ...)` with Postgres's NULL rules, against the result as it is now."""
    left = compile_node(node.left)
    key = eq_key(node.left.type)
    select = node.select

    def member(row: Row) -> bool | None:
        result = select.result
        if not len(result):
            return False  # the comparison never runs, even for a NULL
        value = left(row)
        if value is None:
            return None
        if key(value) in result.counts:
            return True
        return None if result.nulls else False

    return member


def _coalesce(node: Coalesce) -> Evaluator:
    args = [compile_node(arg) for arg in node.args]

    def coalesce(row: Row) -> Any:
        for arg in args:
            value = arg(row)
            if value is not None:
                return value
        return None

    return coalesce


def _min_max(node: MinMax) -> Evaluator:
    args = [compile_node(arg) for arg in node.args]
    lt = node.lt
    greatest = node.greatest

    def pick(row: Row) -> Any:
        best = None
        for arg in args:
            value = arg(row)
            if value is None:
                continue
            # Ties keep the earlier argument, as ExecEvalMinMax does.
            if best is None or (lt(best, value) if greatest else lt(value, best)):
                best = value
        return best

    return pick


def _concat(node: Concat) -> Evaluator:
    pairs = [(compile_node(arg), fmt) for arg, fmt in zip(node.args, node.formatters, strict=True)]

    def concat(row: Row) -> str:
        parts = []
        for arg, fmt in pairs:
            value = arg(row)
            if value is not None:
                parts.append(fmt(value))
        return "".join(parts)

    return concat


def _array_expr(node: ArrayExpr) -> Evaluator:
    elements = [compile_node(e) for e in node.elements]
    return lambda row: PgArray.of([e(row) for e in elements])


def _subscript(node: Subscript) -> Evaluator:
    array = compile_node(node.array)
    indexes = [compile_node(i) for i in node.indexes]

    def get(row: Row) -> Any:
        value = array(row)
        if value is None:
            return None
        positions = [index(row) for index in indexes]
        if any(p is None for p in positions):
            return None
        return subscript(value, positions)

    return get


_COMPILERS: dict[type, Callable[[Any], Evaluator]] = {
    Const: _const,
    Column: _column,
    Apply: _apply,
    BoolExpr: _bool_expr,
    Not: _not,
    NullTest: _null_test,
    BoolTest: _bool_test,
    Distinct: _distinct,
    ArrayOp: _array_op,
    Coalesce: _coalesce,
    MinMax: _min_max,
    Concat: _concat,
    ArrayExpr: _array_expr,
    Subscript: _subscript,
    InSubquery: _in_subquery,
}


# -- constant folding ---------------------------------------------------------------------


def fold(node: Node) -> Node:
    """Fold constant subexpressions top-down, with eval_const_expressions's short-circuits."""
    if isinstance(node, (Const, Column, InSubquery)):
        return node  # a subquery is never constant: its result changes
    if isinstance(node, BoolExpr):
        return _fold_bool(node)
    if isinstance(node, Not):
        arg = fold(node.arg)
        if isinstance(arg, Const):
            return Const(None if arg.value is None else not arg.value, BOOL, node.location)
        if isinstance(arg, Not):
            return arg.arg
        return Not(arg, node.location)
    if isinstance(node, Coalesce):
        return _fold_coalesce(node)
    rebuilt = _with_children(node, [fold(child) for child in node.children()])
    children = rebuilt.children()
    strict = isinstance(rebuilt, Apply) and rebuilt.function.strict
    if strict and any(isinstance(c, Const) and c.value is None for c in children):
        return Const(None, rebuilt.type, rebuilt.location)
    if all(isinstance(c, Const) for c in children):
        return _evaluate_constant(rebuilt)
    return rebuilt


def _evaluate_constant(node: Node) -> Const:
    try:
        value = compile_node(node)({})
    except WhereEvalError as exc:
        location = node.location if node.location >= 0 else None
        raise WhereError(str(exc), location=location) from None
    return Const(value, node.type, node.location)


def _fold_bool(node: BoolExpr) -> Node:
    decisive = node.op == "OR"
    kept: list[Node] = []
    saw_null = False
    pending = deque(node.args)
    while pending:
        arg = pending.popleft()
        if isinstance(arg, BoolExpr) and arg.op == node.op:
            pending.extendleft(reversed(arg.args))  # flatten nested ANDs (ORs), in order
            continue
        folded = fold(arg)
        if isinstance(folded, Const):
            if folded.value is None:
                saw_null = True
            elif folded.value is decisive:
                return Const(decisive, BOOL, node.location)
            continue
        kept.append(folded)
    if saw_null:
        kept.append(Const(None, BOOL, node.location))
    if not kept:
        return Const(not decisive, BOOL, node.location)
    if len(kept) == 1:
        return kept[0]
    return BoolExpr(node.op, tuple(kept), node.location)


def _fold_coalesce(node: Coalesce) -> Node:
    kept: list[Node] = []
    for arg in node.args:
        folded = fold(arg)
        if isinstance(folded, Const):
            if folded.value is None:
                continue
            if not kept:
                return folded
            kept.append(folded)
            break  # later arguments are never reached
        kept.append(folded)
    if not kept:
        return Const(None, node.type, node.location)
    if len(kept) == 1:
        return kept[0]
    return Coalesce(tuple(kept), node.type, node.location)


def _with_children(node: Node, children: list[Node]) -> Node:
    if isinstance(node, Apply):
        return Apply(node.function, tuple(children), node.type, node.location)
    if isinstance(node, NullTest):
        return NullTest(children[0], node.negated, node.location)
    if isinstance(node, BoolTest):
        return BoolTest(children[0], node.test, node.location)
    if isinstance(node, Distinct):
        return Distinct(node.eq, children[0], children[1], node.negated, node.location)
    if isinstance(node, ArrayOp):
        return ArrayOp(node.op, node.function, children[0], children[1], node.use_or, node.location)
    if isinstance(node, MinMax):
        return MinMax(tuple(children), node.type, node.greatest, node.lt, node.location)
    if isinstance(node, Concat):
        return Concat(tuple(children), node.formatters, node.location)
    if isinstance(node, ArrayExpr):
        return ArrayExpr(tuple(children), node.type, node.location)
    if isinstance(node, Subscript):
        return Subscript(children[0], tuple(children[1:]), node.type, node.location)
    raise TypeError(f"cannot rebuild {type(node).__name__}")
