"""Parse a where clause with Postgres's own grammar and type-check it into a tree.

The clause is wrapped as `SELECT 1 FROM t WHERE <clause>` and parsed by libpg_query
(pglast) to JSON, which is much faster than building pglast's node objects. Anything but
a lone where clause (`;`, `LIMIT`, `GROUP BY`...) is refused, as is any construct not
implemented with exact semantics: CASE, row values, aggregates, volatile functions like
now(), collations other than "C", and every subquery but Electric's one form,
`column IN (SELECT column FROM table [WHERE ...])`.

Type checking follows Postgres's parse analysis: untyped literals (and `$n` params, which
behave as literals) take their type from context, IN lists and COALESCE use the common
type, and the operators come from `operators`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pglast import parser as pg_parser

from . import operators, values
from .errors import WhereError
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
    Function,
    InSubquery,
    MinMax,
    Node,
    Not,
    NullTest,
    SubqueryResult,
    Subscript,
    Subselect,
    walk,
)
from .numbers import InputError, parse_int_input, parse_numeric_input
from .types import BOOL, INT4, INT8, INTEGERS, TEXT, UNKNOWN, EnumType, PgType, builtin_type

PREFIX = "SELECT 1 FROM t WHERE "
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
# Every SelectStmt key that may accompany a plain `SELECT 1 FROM t WHERE ...`.
_ALLOWED_SELECT_KEYS = frozenset(("targetList", "fromClause", "whereClause", "limitOption", "op"))
_BOOL_TESTS = {
    "IS_TRUE": "IS TRUE",
    "IS_NOT_TRUE": "IS NOT TRUE",
    "IS_FALSE": "IS FALSE",
    "IS_NOT_FALSE": "IS NOT FALSE",
    "IS_UNKNOWN": "IS UNKNOWN",
    "IS_NOT_UNKNOWN": "IS NOT UNKNOWN",
}
_READABLE_NODES = {
    "CaseExpr": "CASE expressions",
    "RowExpr": "row expressions",
    "SQLValueFunction": "CURRENT_DATE, CURRENT_TIMESTAMP and similar functions",
    "NullIfExpr": "NULLIF",
    "GroupingFunc": "GROUPING",
    "XmlExpr": "XML functions",
    "JsonFuncExpr": "JSON functions",
}


Relation = tuple[str, str]
TableColumns = Mapping[str, PgType | None]
# Every SelectStmt key a subquery `SELECT column FROM table [WHERE ...]` may have.
_SUBSELECT_KEYS = frozenset(("targetList", "fromClause", "whereClause", "limitOption", "op"))
_IN_SUBQUERY = "`IN (SELECT ...)`"


def parse(where: str) -> dict[str, Any]:
    """The JSON tree of the where clause alone; raises WhereError for anything else."""
    if "\x00" in where:
        raise WhereError("invalid byte sequence: the where clause contains a NUL character")
    sql = PREFIX + where
    try:
        tree = json.loads(pg_parser.parse_sql_json(sql))
    except pg_parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        location = exc.args[1] if len(exc.args) > 1 else None
        if isinstance(location, int) and location >= len(PREFIX):
            raise WhereError(message, location=location - len(PREFIX)) from None
        raise WhereError(message) from None
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        raise WhereError('unescaped ";" causing statement split')
    select = statements[0].get("stmt", {}).get("SelectStmt")
    if select is None or set(select) - _ALLOWED_SELECT_KEYS or "whereClause" not in select:
        raise WhereError("malformed query ending with SQL clauses")
    if select.get("op") != "SETOP_NONE" or len(select.get("fromClause", [])) != 1:
        raise WhereError("malformed query ending with SQL clauses")
    return select["whereClause"]


def subquery_relations(tree: dict[str, Any]) -> list[Relation]:
    """The tables the clause's subqueries read (nested ones too), in order, once each.

    Their columns must be known before analysis (`Analyzer(tables=...)`).
    """
    found: dict[Relation, None] = {}
    pending: list[Any] = [tree]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, dict):
            select = item.get("SubLink", {}).get("subselect", {}).get("SelectStmt")
            for entry in (select or {}).get("fromClause", []):
                range_var = entry.get("RangeVar") if isinstance(entry, dict) else None
                if range_var is not None and "relname" in range_var:
                    found[(range_var.get("schemaname", "public"), range_var["relname"])] = None
            pending.extend(reversed(list(item.values())))
    return list(found)


class Analyzer:
    """Turns the parse tree into typed nodes for one table's columns and one params map.

    `tables` gives the columns of the tables that subqueries may read.
    """

    def __init__(
        self,
        columns: TableColumns,
        params: Mapping[str, str],
        tables: Mapping[Relation, TableColumns] | None = None,
        used_params: set[int] | None = None,
    ) -> None:
        self.columns = columns
        self.params = params
        self.tables = tables or {}
        self.used_params: set[int] = used_params if used_params is not None else set()
        self.enums: dict[tuple[str | None, str], EnumType] = {}
        for pg_type in columns.values():
            if pg_type is not None and pg_type.enum is not None:
                enum = pg_type.enum
                self.enums[(enum.schema, enum.name)] = enum
                self.enums.setdefault((None, enum.name), enum)

    # -- entry ----------------------------------------------------------------------------

    def analyze(self, tree: dict[str, Any]) -> Node:
        node = self.expr(tree)
        if node.type.is_unknown:
            node = self.coerce(node, BOOL)
        if node.type != BOOL:
            raise WhereError(f"WHERE clause must return a boolean, not {node.type}")
        return node

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _location(body: dict[str, Any]) -> int:
        location = body.get("location", -1)
        return location - len(PREFIX) if location >= len(PREFIX) else -1

    def error(self, message: str, body: dict[str, Any] | int | None = None) -> WhereError:
        location = body if isinstance(body, int) else self._location(body or {})
        return WhereError(message, location=location if location >= 0 else None)

    def coerce(self, node: Node, target: PgType) -> Node:
        """An implicit coercion (literal typing or an implicit cast) to `target`."""
        if node.type == target:
            return node
        if isinstance(node, Const) and node.type.is_unknown:
            return self._literal(node, target)
        function = operators.cast(node.type, target)
        if function is None:
            raise self.error(f"cannot convert {node.type} to {target}", node.location)
        return Apply(function, (node,), target, node.location)

    def _literal(self, node: Const, target: PgType) -> Const:
        if node.value is None:
            return Const(None, target, node.location)
        text: str = node.value
        if "\x00" in text:
            raise self.error('invalid byte sequence for encoding "UTF8": 0x00', node.location)
        try:
            value = values.input_parser(target)(text)
        except InputError as exc:
            raise self.error(str(exc), node.location) from None
        return Const(value, target, node.location)

    def coerce_bool(self, node: Node, construct: str) -> Node:
        if node.type.is_unknown:
            return self.coerce(node, BOOL)
        if node.type != BOOL:
            raise self.error(
                f"argument of {construct} must be type boolean, not type {node.type}",
                node.location,
            )
        return node

    # -- dispatch -------------------------------------------------------------------------

    def expr(self, tree: dict[str, Any]) -> Node:
        ((kind, body),) = tree.items()
        handler: Callable[[dict[str, Any]], Node] | None = getattr(
            self, _HANDLERS.get(kind, ""), None
        )
        if handler is None:
            what = _READABLE_NODES.get(kind, kind)
            raise self.error(f"{what} are not supported in where clauses", body)
        return handler(body)

    def _A_Const(self, body: dict[str, Any]) -> Node:
        location = self._location(body)
        if body.get("isnull"):
            return Const(None, UNKNOWN, location)
        if "ival" in body:
            return Const(body["ival"].get("ival", 0), INT4, location)
        if "sval" in body:
            return Const(body["sval"].get("sval", ""), UNKNOWN, location)
        if "boolval" in body:
            return Const(bool(body["boolval"].get("boolval", False)), BOOL, location)
        if "fval" in body:
            return self._number(body["fval"]["fval"], location)
        raise self.error("bit string literals are not supported in where clauses", body)

    def _number(self, text: str, location: int) -> Const:
        # make_const: an integer that fits int8 is int4 or int8, anything else numeric.
        try:
            value = parse_int_input(text, INT8)
        except InputError:
            try:
                return Const(parse_numeric_input(text), PgType("numeric"), location)
            except InputError as exc:
                raise self.error(str(exc), location) from None
        return Const(value, INT4 if _INT4_MIN <= value <= _INT4_MAX else INT8, location)

    def _ColumnRef(self, body: dict[str, Any]) -> Node:
        fields = body.get("fields", [])
        names = [f.get("String", {}).get("sval") for f in fields]
        if len(names) != 1 or names[0] is None:
            shown = ".".join(n if n is not None else "*" for n in names)
            raise self.error(f"unknown reference {shown}", body)
        name = names[0]
        if name not in self.columns:
            raise self.error(f"unknown reference {name}", body)
        pg_type = self.columns[name]
        if pg_type is None:
            raise self.error(f'column "{name}" has a type that where clauses do not support', body)
        return Column(name, pg_type, self._location(body))

    def _ParamRef(self, body: dict[str, Any]) -> Node:
        number = body.get("number", 0)
        value = self.params.get(str(number))
        if value is None:
            raise self.error(f"parameter ${number} was not provided", body)
        self.used_params.add(number)
        return Const(value, UNKNOWN, self._location(body))

    def _CollateClause(self, body: dict[str, Any]) -> Node:
        names = [n["String"]["sval"] for n in body.get("collname", [])]
        if names not in (["C"], ["POSIX"], ["pg_catalog", "C"], ["pg_catalog", "POSIX"]):
            raise self.error('only the "C" collation is supported in where clauses', body)
        node = self.expr(body["arg"])
        if node.type.is_unknown:
            node = self.coerce(node, TEXT)
        if node.type.category != "S":
            raise self.error(f"collations are not supported by type {node.type}", body)
        return node  # comparisons here always use the C collation

    # -- subqueries -----------------------------------------------------------------------

    def _SubLink(self, body: dict[str, Any]) -> Node:
        """`column IN (SELECT column FROM table [WHERE ...])`, as Electric accepts it.

        The left side is a column of this table; the subquery reads one column of one table,
        with a where clause of this same language over that table's columns alone (so it
        cannot be correlated), sharing the `$n` params. Both columns have the same type.
        """
        location = self._location(body)
        if body.get("subLinkType") != "ANY_SUBLINK" or body.get("operName"):
            raise self.error(
                "only `value IN (SELECT ...)` subqueries are supported in where clauses", body
            )
        if "ColumnRef" not in body["testexpr"]:
            raise self.error(f"the left side of {_IN_SUBQUERY} must be a column reference", body)
        left = self.expr(body["testexpr"])
        select = body["subselect"].get("SelectStmt", {})
        target, relation = self._subselect_parts(select, location)
        columns = self.tables.get(relation)
        if columns is None:
            raise self.error(f"unknown table {relation[0]}.{relation[1]}", location)
        inner = Analyzer(columns, self.params, self.tables, self.used_params)
        selected = inner.expr(target)
        assert isinstance(selected, Column)
        if selected.type != left.type:
            raise self.error(
                f"the left side of {_IN_SUBQUERY} has type {left.type} "
                f"but the subquery returns {selected.type}",
                location,
            )
        try:
            operators.binary("=", left.type, left.type)
        except WhereError:
            message = f"{_IN_SUBQUERY} on type {left.type} is not supported"
            raise self.error(message, location) from None
        where = inner.analyze(select["whereClause"]) if "whereClause" in select else None
        subselect = Subselect(*relation, selected.name, selected.type, where, SubqueryResult())
        return InSubquery(left, subselect, location)

    def _subselect_parts(
        self, select: dict[str, Any], location: int
    ) -> tuple[dict[str, Any], Relation]:
        """The selected column's parse tree and the table of `SELECT column FROM table`."""
        if (
            set(select) - _SUBSELECT_KEYS
            or select.get("op") != "SETOP_NONE"
            or select.get("limitOption", "LIMIT_OPTION_DEFAULT") != "LIMIT_OPTION_DEFAULT"
        ):
            raise self.error(
                "a subquery must be a plain `SELECT column FROM table [WHERE ...]`, without "
                "DISTINCT, GROUP BY, HAVING, ORDER BY, LIMIT, WITH, set operations or locking",
                location,
            )
        targets = select.get("targetList", [])
        if len(targets) != 1:
            raise self.error("a subquery must select exactly one column", location)
        target = targets[0]["ResTarget"]["val"]
        if any("String" not in f for f in target.get("ColumnRef", {}).get("fields", [{}])):
            raise self.error("a subquery must select a plain column reference", location)
        tables = select.get("fromClause", [])
        range_var = tables[0].get("RangeVar") if len(tables) == 1 else None
        if range_var is None or "catalogname" in range_var:
            raise self.error("a subquery must read exactly one table, without joins", location)
        if not range_var.get("inh"):  # absent (false) for FROM ONLY
            raise self.error("FROM ONLY is not supported in subqueries", location)
        return target, (range_var.get("schemaname", "public"), range_var["relname"])

    # -- casts ----------------------------------------------------------------------------

    def _type_name(self, body: dict[str, Any]) -> PgType:
        if body.get("typmods"):
            raise self.error("type modifiers (such as varchar(10)) are not supported", body)
        names = [n["String"]["sval"] for n in body.get("names", [])]
        pg_type = builtin_type(names)
        if pg_type is None:
            key: tuple[str | None, str] = (
                (names[0], names[1]) if len(names) == 2 else (None, names[-1])
            )
            enum = self.enums.get(key)
            if enum is None:
                raise self.error(f"unsupported type {'.'.join(names)}", body)
            pg_type = PgType(enum.name, False, enum)
        return pg_type.array_of() if body.get("arrayBounds") else pg_type

    def _TypeCast(self, body: dict[str, Any]) -> Node:
        target = self._type_name(body["typeName"])
        arg = body["arg"]
        if "A_ArrayExpr" in arg and target.array:
            # ARRAY[...]::t[] types its elements as t directly (so ARRAY[]::int4[] works).
            return self._array(arg["A_ArrayExpr"], target.element, explicit=True)
        node = self.expr(arg)
        return self.explicit_cast(node, target, self._location(body))

    def explicit_cast(self, node: Node, target: PgType, location: int) -> Node:
        if node.type == target:
            return node
        if isinstance(node, Const) and node.type.is_unknown:
            return self._literal(node, target)
        function = operators.cast(node.type, target)
        if function is None:
            error = operators.cast_error(node.type, target)
            raise self.error(error.message, location)
        return Apply(function, (node,), target, location)

    # -- operators ------------------------------------------------------------------------

    @staticmethod
    def _operator_name(body: dict[str, Any]) -> str:
        names = [n["String"]["sval"] for n in body.get("name", [])]
        if len(names) == 2 and names[0] == "pg_catalog":
            names = names[1:]
        return ".".join(names)

    def binary(self, op: str, left: Node, right: Node, location: int) -> Node:
        try:
            resolved = operators.binary(op, left.type, right.type)
        except WhereError as exc:
            raise self.error(exc.message, location) from None
        args = (self.coerce(left, resolved.left), self.coerce(right, resolved.right))
        return Apply(resolved.function, args, resolved.result, location)

    def _A_Expr(self, body: dict[str, Any]) -> Node:
        kind = body["kind"]
        op = self._operator_name(body)
        location = self._location(body)
        if kind == "AEXPR_OP":
            if "lexpr" not in body:
                return self._unary(op, body)
            return self.binary(op, self.expr(body["lexpr"]), self.expr(body["rexpr"]), location)
        if kind in ("AEXPR_LIKE", "AEXPR_ILIKE"):
            return self._like(op, body)
        if kind in ("AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"):
            left, right = self.expr(body["lexpr"]), self.expr(body["rexpr"])
            try:
                resolved = operators.binary("=", left.type, right.type)
            except WhereError as exc:
                raise self.error(exc.message, location) from None
            return Distinct(
                resolved.function,
                self.coerce(left, resolved.left),
                self.coerce(right, resolved.right),
                kind == "AEXPR_NOT_DISTINCT",
                location,
            )
        if kind == "AEXPR_IN":
            return self._in(op, body)
        if kind in ("AEXPR_OP_ANY", "AEXPR_OP_ALL"):
            left, right = self.expr(body["lexpr"]), self.expr(body["rexpr"])
            return self.array_op(op, left, right, kind == "AEXPR_OP_ANY", location)
        if kind.startswith("AEXPR_") and "BETWEEN" in kind:
            return self._between(kind, body)
        raise self.error(f"{kind.removeprefix('AEXPR_')} expressions are not supported", body)

    def _unary(self, op: str, body: dict[str, Any]) -> Node:
        operand = self.expr(body["rexpr"])
        try:
            declared, function, result = operators.unary(op, operand.type)
        except WhereError as exc:
            raise self.error(exc.message, body) from None
        return Apply(function, (self.coerce(operand, declared),), result, self._location(body))

    def _like(self, op: str, body: dict[str, Any]) -> Node:
        location = self._location(body)
        left = self.expr(body["lexpr"])
        rexpr = body["rexpr"]
        call = rexpr.get("FuncCall")
        if call is not None and [n["String"]["sval"] for n in call["funcname"]] == [
            "pg_catalog",
            "like_escape",
        ]:
            pattern, escape = (self.expr(arg) for arg in call["args"])
            for node in (left, pattern, escape):
                if not (node.type.is_unknown or node.type.category == "S"):
                    raise self.error(f"operator does not exist: {node.type} {op} text", location)
            function = operators.like_function(op, escape=True)
            args = tuple(self.coerce(n, TEXT) for n in (left, pattern, escape))
            return Apply(function, args, BOOL, location)
        return self.binary(op, left, self.expr(rexpr), location)

    def array_op(self, op: str, left: Node, right: Node, use_or: bool, location: int) -> Node:
        """`left op ANY/ALL (right)`, resolving `op` against the array's element type."""
        if right.type.is_unknown:
            element = UNKNOWN
        elif right.type.array:
            element = right.type.element
        else:
            raise self.error("op ANY/ALL (array) requires array on right side", location)
        try:
            resolved = operators.binary(op, left.type, element)
        except WhereError as exc:
            raise self.error(exc.message, location) from None
        if resolved.result != BOOL:
            raise self.error("op ANY/ALL (array) requires operator to yield boolean", location)
        left = self.coerce(left, resolved.left)
        right = self.coerce(right, resolved.right.array_of())
        return ArrayOp(op, resolved.function, left, right, use_or, location)

    def _in(self, op: str, body: dict[str, Any]) -> Node:
        """transformAExprIn: constants share a common type and become `= ANY (ARRAY[...])`."""
        location = self._location(body)
        left = self.expr(body["lexpr"])
        items = [self.expr(item) for item in body["rexpr"]["List"]["items"]]
        constants = [item for item in items if not _has_columns(item)]
        rest = [item for item in items if _has_columns(item)]
        parts: list[Node] = []
        if len(constants) > 1:
            try:
                common = operators.common_type([left.type] + [c.type for c in constants], "IN")
            except WhereError:
                common = None
            # There are no arrays of arrays: Postgres then compares item by item too.
            if common is not None and not common.array:
                elements = tuple(self.coerce(c, common) for c in constants)
                array = ArrayExpr(elements, common.array_of(), location)
                parts.append(self.array_op(op, left, array, op == "=", location))
            else:
                rest = items
        else:
            rest = items
        parts.extend(self.binary(op, left, item, location) for item in rest)
        if len(parts) == 1:
            return parts[0]
        return BoolExpr("OR" if op == "=" else "AND", tuple(parts), location)

    def _between(self, kind: str, body: dict[str, Any]) -> Node:
        location = self._location(body)
        subject = self.expr(body["lexpr"])
        low, high = (self.expr(item) for item in body["rexpr"]["List"]["items"])

        def inside(a: Node, b: Node) -> Node:
            return BoolExpr(
                "AND",
                (self.binary(">=", subject, a, location), self.binary("<=", subject, b, location)),
                location,
            )

        def outside(a: Node, b: Node) -> Node:
            return BoolExpr(
                "OR",
                (self.binary("<", subject, a, location), self.binary(">", subject, b, location)),
                location,
            )

        if kind == "AEXPR_BETWEEN":
            return inside(low, high)
        if kind == "AEXPR_NOT_BETWEEN":
            return outside(low, high)
        if kind == "AEXPR_BETWEEN_SYM":
            return BoolExpr("OR", (inside(low, high), inside(high, low)), location)
        return BoolExpr("AND", (outside(low, high), outside(high, low)), location)

    # -- boolean structure ----------------------------------------------------------------

    def _BoolExpr(self, body: dict[str, Any]) -> Node:
        op = {"AND_EXPR": "AND", "OR_EXPR": "OR", "NOT_EXPR": "NOT"}[body["boolop"]]
        args = tuple(self.coerce_bool(self.expr(arg), op) for arg in body["args"])
        if op == "NOT":
            return Not(args[0], self._location(body))
        return BoolExpr(op, args, self._location(body))

    def _NullTest(self, body: dict[str, Any]) -> Node:
        arg = self.expr(body["arg"])
        if arg.type.is_unknown:
            arg = self.coerce(arg, TEXT)
        return NullTest(arg, body.get("nulltesttype") == "IS_NOT_NULL", self._location(body))

    def _BooleanTest(self, body: dict[str, Any]) -> Node:
        test = _BOOL_TESTS[body["booltesttype"]]
        arg = self.coerce_bool(self.expr(body["arg"]), test)
        return BoolTest(arg, test, self._location(body))

    # -- conditional expressions ----------------------------------------------------------

    def _common(self, args: list[Node], context: str, location: int) -> PgType:
        try:
            return operators.common_type([a.type for a in args], context)
        except WhereError as exc:
            raise self.error(exc.message, location) from None

    def _CoalesceExpr(self, body: dict[str, Any]) -> Node:
        location = self._location(body)
        args = [self.expr(arg) for arg in body["args"]]
        common = self._common(args, "COALESCE", location)
        return Coalesce(tuple(self.coerce(a, common) for a in args), common, location)

    def _MinMaxExpr(self, body: dict[str, Any]) -> Node:
        location = self._location(body)
        greatest = body["op"] == "IS_GREATEST"
        name = "GREATEST" if greatest else "LEAST"
        args = [self.expr(arg) for arg in body["args"]]
        common = self._common(args, name, location)
        lt = values.lt_function(common)
        if lt is None:
            raise self.error(f"{name} on {common} is not supported in where clauses", location)
        args = [self.coerce(a, common) for a in args]
        return MinMax(tuple(args), common, greatest, lt, location)

    # -- functions ------------------------------------------------------------------------

    def _FuncCall(self, body: dict[str, Any]) -> Node:
        location = self._location(body)
        names = [n["String"]["sval"] for n in body["funcname"]]
        if len(names) == 2 and names[0] == "pg_catalog":
            names = names[1:]
        name = ".".join(names)
        if body.get("agg_star") or body.get("agg_distinct") or body.get("over"):
            raise self.error("aggregate and window functions are not supported", location)
        if body.get("agg_filter") or body.get("agg_order") or body.get("agg_within_group"):
            raise self.error("aggregate and window functions are not supported", location)
        if body.get("func_variadic"):
            raise self.error("explicit VARIADIC function calls are not supported", location)
        args = [self.expr(arg) for arg in body.get("args", [])]
        if name in ("lower", "upper") and len(args) == 1:
            return self._case_function(name, args[0], location)
        if name == "concat" and args:
            return self._concat(args, location)
        if name == "array_ndims" and len(args) == 1 and args[0].type.array:
            function = Function(name, _ndims, operators.call(name))
            return Apply(function, (args[0],), INT4, location)
        if name in ("array_cat", "array_append", "array_prepend") and len(args) == 2:
            return self._array_function(name, args, location)
        shown = ", ".join(str(a.type) for a in args)
        raise self.error(f"unknown or unsupported function {name}({shown})", location)

    def _case_function(self, name: str, arg: Node, location: int) -> Node:
        if not (arg.type.is_unknown or arg.type.category == "S") or arg.type.array:
            raise self.error(f"function {name}({arg.type}) does not exist", location)
        impl = values.ascii_lower if name == "lower" else values.ascii_upper
        function = Function(name, impl, operators.call(name, collate=True))
        return Apply(function, (self.coerce(arg, TEXT),), TEXT, location)

    def _concat(self, args: list[Node], location: int) -> Node:
        typed = [self.coerce(a, TEXT) if a.type.is_unknown else a for a in args]
        formatters = []
        for arg in typed:
            formatter = values.output_formatter(arg.type)
            if formatter is None:
                raise self.error(f"concat() of {arg.type} is not supported", arg.location)
            formatters.append(formatter)
        return Concat(tuple(typed), tuple(formatters), location)

    def _array_function(self, name: str, args: list[Node], location: int) -> Node:
        left, right = args
        types = (left.type, right.type)
        shape_ok = {
            "array_cat": (left.type.array or left.type.is_unknown)
            and (right.type.array or right.type.is_unknown),
            "array_append": (left.type.array or left.type.is_unknown) and not right.type.array,
            "array_prepend": not left.type.array and (right.type.array or right.type.is_unknown),
        }[name]
        if not shape_ok or all(t.is_unknown for t in types):
            raise self.error(
                f"function {name}({left.type}, {right.type}) is not supported", location
            )
        if name == "array_append" and left.type.is_unknown:
            left = self.coerce(left, right.type.array_of())
        if name == "array_append" and right.type.is_unknown:
            right = self.coerce(right, left.type.element)
        if name == "array_prepend" and right.type.is_unknown:
            right = self.coerce(right, left.type.array_of())
        if name == "array_prepend" and left.type.is_unknown:
            left = self.coerce(left, right.type.element)
        try:
            resolved = operators.concatenation(left.type, right.type)
        except WhereError as exc:
            raise self.error(exc.message, location) from None
        function = Function(name, resolved.function.impl, operators.call(name), strict=False)
        args2 = (self.coerce(left, resolved.left), self.coerce(right, resolved.right))
        return Apply(function, args2, resolved.result, location)

    # -- arrays ---------------------------------------------------------------------------

    def _A_ArrayExpr(self, body: dict[str, Any]) -> Node:
        return self._array(body, None, explicit=False)

    def _array(self, body: dict[str, Any], element: PgType | None, explicit: bool) -> Node:
        location = self._location(body)
        raw = body.get("elements", [])
        if any("A_ArrayExpr" in item for item in raw):
            raise self.error("multidimensional ARRAY[] constructors are not supported", location)
        items = [self.expr(item) for item in raw]
        if element is None:
            if not items:
                raise self.error("cannot determine type of empty array", location)
            element = self._common(items, "ARRAY", location)
        if element.array:
            raise self.error("arrays of arrays are not supported", location)
        convert = self.explicit_cast if explicit else (lambda n, t, _loc: self.coerce(n, t))
        elements = tuple(convert(item, element, location) for item in items)
        return ArrayExpr(elements, element.array_of(), location)

    def _A_Indirection(self, body: dict[str, Any]) -> Node:
        array = self.expr(body["arg"])
        location = array.location
        if not array.type.array:
            raise self.error(
                f"cannot subscript type {array.type} because it is not an array", location
            )
        indexes = []
        for step in body["indirection"]:
            indices = step.get("A_Indices")
            if indices is None:
                raise self.error("only array subscripts are supported", location)
            if indices.get("is_slice"):
                raise self.error("array slices are not supported in where clauses", location)
            index = self.expr(indices["uidx"])
            if not (index.type.is_unknown or index.type.name in INTEGERS) or index.type.array:
                raise self.error(
                    f"array subscript must have type integer, not {index.type}", location
                )
            indexes.append(
                self.coerce(index, INT4) if index.type != INT8 else self._int8_index(index)
            )
        return Subscript(array, tuple(indexes), array.type.element, location)

    def _int8_index(self, index: Node) -> Node:
        function = operators.cast(INT8, INT4)
        assert function is not None
        return Apply(function, (index,), INT4, index.location)


# Parse-tree node kinds and the methods that analyze them.
_HANDLERS = {
    kind: f"_{kind}"
    for kind in (
        "A_Const",
        "ColumnRef",
        "ParamRef",
        "CollateClause",
        "TypeCast",
        "A_Expr",
        "BoolExpr",
        "NullTest",
        "BooleanTest",
        "CoalesceExpr",
        "MinMaxExpr",
        "FuncCall",
        "A_ArrayExpr",
        "A_Indirection",
        "SubLink",
    )
}


def _has_columns(node: Node) -> bool:
    return any(isinstance(n, Column) for n in walk(node))


def _ndims(value: Any) -> int | None:
    return value.ndims or None
