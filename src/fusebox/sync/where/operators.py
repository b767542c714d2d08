"""Operator, cast and common-type resolution, following Postgres's rules for these types.

Postgres picks an operator among all candidates reachable through implicit casts,
preferring exact matches and then each category's preferred type (float8, text). For the
supported types that search always lands on the choices encoded below; e.g. `int4 =
float4` runs `float8 = float4` (float84eq), and `float4col = 1.1` compares in double
precision (so 1.1::float4 does not equal 1.1), exactly as in Postgres. The test suite
checks these choices against a live server.

Each resolution names the declared argument types (callers coerce arguments to them,
which is where Postgres inserts its implicit casts) and a `Function` to run.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from . import arrays, datetimes, like, numbers, values
from .errors import WhereError, WhereEvalError
from .nodes import Function
from .numbers import InputError
from .types import (
    BOOL,
    DATE,
    FLOAT8,
    FLOATS,
    INT4,
    INTEGERS,
    NUMERIC,
    TEXT,
    PgType,
    implicitly_castable,
)

COMPARISONS = frozenset(("=", "<>", "<", "<=", ">", ">="))
ARITHMETIC = frozenset(("+", "-", "*", "/", "%", "^", "&", "|", "#"))
LIKE_OPERATORS = {
    "~~": (False, False),
    "!~~": (False, True),
    "~~*": (True, False),
    "!~~*": (True, True),
}
ARRAY_OPERATORS = frozenset(("@>", "<@", "&&"))
_COLLATE_C = ' COLLATE "C"'


class Resolution(NamedTuple):
    left: PgType
    right: PgType
    function: Function
    result: PgType


# -- SQL renderers --------------------------------------------------------------------------


def infix(op: str, collate: bool = False) -> Callable[[Sequence[str]], str]:
    # Ordering and case-folding depend on the collation; forcing "C" makes Postgres agree
    # with the evaluator (code-point order, ASCII-only case folding) in any database.
    suffix = _COLLATE_C if collate else ""
    return lambda args: f"({args[0]}{suffix} {op} {args[1]})"


def prefix(op: str) -> Callable[[Sequence[str]], str]:
    return lambda args: f"({op} {args[0]})"


def call(name: str, collate: bool = False) -> Callable[[Sequence[str]], str]:
    suffix = _COLLATE_C if collate else ""
    return lambda args: f"{name}({', '.join(a + suffix for a in args)})"


def cast_sql(target: PgType) -> Callable[[Sequence[str]], str]:
    return lambda args: f"CAST({args[0]} AS {target.sql()})"


# -- errors ---------------------------------------------------------------------------------


def no_operator(op: str, left: PgType | None, right: PgType) -> WhereError:
    if left is None:
        return WhereError(f"operator does not exist: {op} {right}")
    return WhereError(f"operator does not exist: {left} {op} {right}")


def unsupported(what: str) -> WhereError:
    return WhereError(f"{what} is not supported in where clauses")


# -- comparisons ----------------------------------------------------------------------------

_NATIVE = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _comparator(
    op: str, lt: Callable[[Any, Any], bool] | None, eq: Callable[[Any, Any], bool]
) -> Callable[[Any, Any], bool]:
    if op == "=":
        return eq
    if op == "<>":
        return lambda a, b: not eq(a, b)
    assert lt is not None
    if op == "<":
        return lt
    if op == ">":
        return lambda a, b: lt(b, a)
    if op == "<=":
        return lambda a, b: not lt(b, a)
    return lambda a, b: not lt(a, b)


def _own(pg_type: PgType) -> PgType:
    """The type an unknown literal takes opposite `pg_type` (varchar's operators are text's)."""
    return TEXT if pg_type.name == "varchar" and not pg_type.array else pg_type


def comparison(op: str, left: PgType, right: PgType) -> Resolution:
    if left.is_unknown and right.is_unknown:
        left = right = TEXT
    elif left.is_unknown:
        left = _own(right)
    elif right.is_unknown:
        right = _own(left)
    if left.array or right.array:
        if left != right:
            raise no_operator(op, left, right)
        if op not in ("=", "<>"):
            raise unsupported(f"operator {op} on arrays")
        impl = _comparator(op, None, values.eq_function(left))
        return Resolution(left, right, Function(op, impl, infix(op)), BOOL)
    category = left.category
    if category != right.category or category == "X":
        raise no_operator(op, left, right)
    convert_left: Callable[[Any], Any] | None = None
    convert_right: Callable[[Any], Any] | None = None
    collate = False
    if category == "N":
        if left.name in FLOATS or right.name in FLOATS:
            left = left if left.name in FLOATS else FLOAT8
            right = right if right.name in FLOATS else FLOAT8
        elif "numeric" in (left.name, right.name):
            left = right = NUMERIC
        domain = left
    elif category == "S":
        left = right = TEXT
        domain = TEXT
        collate = op not in ("=", "<>")
    elif category == "D":
        if left != right and "time" in (left.name, right.name):
            raise no_operator(op, left, right)
        # date/timestamp/timestamptz compare across types directly (date_lt_timestamp...).
        if left == DATE and right != DATE:
            convert_left = datetimes.date_timestamp_key
        if right == DATE and left != DATE:
            convert_right = datetimes.date_timestamp_key
        domain = left if left == right else PgType("timestamp")
    elif category == "E":
        if left != right:
            raise no_operator(op, left, right)
        if op not in ("=", "<>"):
            raise unsupported(f"operator {op} on enums")
        domain = left
    else:  # B, U: one type each
        domain = left
    lt = values.lt_function(domain)
    eq = values.eq_function(domain)
    if lt is values.python_lt and eq is values.python_eq:
        impl = _NATIVE[op]
    else:
        impl = _comparator(op, lt, eq)
    if convert_left is not None or convert_right is not None:
        impl = _converted(impl, convert_left, convert_right)
    return Resolution(left, right, Function(op, impl, infix(op, collate)), BOOL)


def _converted(
    impl: Callable[[Any, Any], Any],
    left: Callable[[Any], Any] | None,
    right: Callable[[Any], Any] | None,
) -> Callable[[Any, Any], Any]:
    to_left = left or (lambda x: x)
    to_right = right or (lambda x: x)
    return lambda a, b: impl(to_left(a), to_right(b))


# -- arithmetic -----------------------------------------------------------------------------


def _wider_int(left: PgType, right: PgType) -> PgType:
    return max(left, right, key=lambda t: INTEGERS.index(t.name))


def _int_op(op: str, result: str) -> Callable[[int, int], int]:
    check = numbers.check_int
    if op == "+":
        return lambda a, b: check(a + b, result)
    if op == "-":
        return lambda a, b: check(a - b, result)
    if op == "*":
        return lambda a, b: check(a * b, result)
    if op == "/":
        return lambda a, b: numbers.int_div(a, b, result)
    if op == "%":
        return numbers.int_mod
    if op == "&":
        return operator.and_
    if op == "|":
        return operator.or_
    return operator.xor  # "#"


_NUMERIC_OPS = {
    "+": numbers.numeric_add,
    "-": numbers.numeric_sub,
    "*": numbers.numeric_mul,
    "/": numbers.numeric_div,
    "%": numbers.numeric_mod,
}
_FLOAT8_OPS = {
    "+": numbers.float8_add,
    "-": numbers.float8_sub,
    "*": numbers.float8_mul,
    "/": numbers.float8_div,
}
_FLOAT4_OPS = {
    "+": numbers.float4_add,
    "-": numbers.float4_sub,
    "*": numbers.float4_mul,
    "/": numbers.float4_div,
}


def arithmetic(op: str, left: PgType, right: PgType) -> Resolution:
    if left.is_unknown and right.is_unknown:
        if op != "^":
            raise WhereError(f"operator is not unique: unknown {op} unknown")
        left = right = FLOAT8  # only float8 ^ float8 and numeric ^ numeric: float8 is preferred
    known = right if left.is_unknown else left if right.is_unknown else None
    if known is not None and known.category == "D" and not known.array:
        # Postgres reads the literal as an interval here: intervals are not implemented.
        raise unsupported(f"{left} {op} {right} (interval arithmetic)")
    if known is not None and known.category != "N":
        # A literal may turn into a type we do not implement (jsonb - text, inet & inet...).
        raise unsupported(f"{left} {op} {right}")
    if left.is_unknown:
        left = right
    elif right.is_unknown:
        right = left
    if left.array or right.array:
        raise no_operator(op, left, right)
    if left.category == "D" or right.category == "D":
        return _date_arithmetic(op, left, right)
    if left.category != "N" or right.category != "N":
        raise no_operator(op, left, right)
    ints = left.name in INTEGERS and right.name in INTEGERS
    if op in ("&", "|", "#"):
        if not ints:
            raise no_operator(op, left, right)
        wider = _wider_int(left, right)
        return _make(op, wider, wider, _int_op(op, wider.name), wider)
    if op == "^":
        if "numeric" in (left.name, right.name):
            raise unsupported("numeric ^ numeric (numeric power)")
        return _make(op, FLOAT8, FLOAT8, numbers.float8_pow, FLOAT8)
    if ints:
        wider = _wider_int(left, right)
        if op == "%":
            # int2mod/int4mod/int8mod only: both sides become the wider type.
            return _make(op, wider, wider, numbers.int_mod, wider)
        return _make(op, left, right, _int_op(op, wider.name), wider)
    if left.name in FLOATS or right.name in FLOATS:
        if op == "%":
            raise no_operator(op, left, right)
        left = left if left.name in FLOATS else FLOAT8
        right = right if right.name in FLOATS else FLOAT8
        if left.name == right.name == "float4":
            return _make(op, left, right, _FLOAT4_OPS[op], left)
        return _make(op, left, right, _FLOAT8_OPS[op], FLOAT8)
    return _make(op, NUMERIC, NUMERIC, _NUMERIC_OPS[op], NUMERIC)


def _make(
    op: str, left: PgType, right: PgType, impl: Callable[..., Any], result: PgType
) -> Resolution:
    return Resolution(left, right, Function(op, impl, infix(op)), result)


def _date_arithmetic(op: str, left: PgType, right: PgType) -> Resolution:
    small_int = ("int2", "int4")
    if op == "+" and left == DATE and right.name in small_int:
        return _make(op, DATE, INT4, datetimes.date_add_days, DATE)
    if op == "+" and right == DATE and left.name in small_int:
        return _make(op, INT4, DATE, lambda n, d: datetimes.date_add_days(d, n), DATE)
    if op == "-" and left == DATE and right.name in small_int:
        return _make(op, DATE, INT4, lambda d, n: datetimes.date_add_days(d, -n), DATE)
    if op == "-" and left == DATE and right == DATE:
        return _make(op, DATE, DATE, datetimes.date_diff, INT4)
    if "time" in (left.name, right.name) or left.category == right.category == "D":
        # Intervals (timestamp - timestamp, date + time, time casts implicitly to
        # interval...) are not implemented.
        raise unsupported(f"{left} {op} {right} (interval arithmetic)")
    raise no_operator(op, left, right)


_UNARY = {
    "-": {
        "int": lambda name: lambda a: numbers.check_int(-a, name),
        "numeric": numbers.numeric_neg,
        "float": operator.neg,
    },
    "+": {"int": lambda name: lambda a: a, "numeric": lambda a: a, "float": lambda a: a},
    "@": {
        "int": lambda name: lambda a: numbers.check_int(abs(a), name),
        "numeric": numbers.numeric_abs,
        "float": abs,
    },
}


def unary(op: str, operand: PgType) -> tuple[PgType, Function, PgType]:
    """A prefix operator: (declared operand type, function, result type)."""
    if operand.is_unknown:
        raise WhereError(f"operator is not unique: {op} unknown")
    if operand.category != "N" or operand.array:
        raise no_operator(op, None, operand)
    if op == "|/":
        return FLOAT8, Function(op, numbers.float8_sqrt, prefix(op)), FLOAT8
    if op == "~":
        if operand.name not in INTEGERS:
            raise no_operator(op, None, operand)
        return operand, Function(op, operator.invert, prefix(op)), operand
    family = _UNARY.get(op)
    if family is None:
        raise unsupported(f"prefix operator {op}")
    if operand.name in INTEGERS:
        impl = family["int"](operand.name)
    elif operand.name == "numeric":
        impl = family["numeric"]
    else:
        impl = family["float"]
    return operand, Function(op, impl, prefix(op)), operand


# -- strings and arrays ---------------------------------------------------------------------


def _is_stringish(pg_type: PgType) -> bool:
    return pg_type.is_unknown or (pg_type.category == "S")


def concatenation(left: PgType, right: PgType) -> Resolution:
    """`||`: array concatenation, text concatenation, or text with any other scalar."""
    if left.array or right.array:
        if left.is_unknown:
            left = right
        if right.is_unknown:
            right = left
        if left.array and right.array:
            if left != right:
                raise unsupported(f"{left} || {right} (arrays of different types)")
            function = Function("||", arrays.array_cat, infix("||"), strict=False)
        elif left.array:
            if right != left.element:
                raise unsupported(f"{left} || {right}")
            function = Function("||", arrays.array_append, infix("||"), strict=False)
        else:
            if left != right.element:
                raise unsupported(f"{left} || {right}")
            function = Function("||", arrays.array_prepend, infix("||"), strict=False)
        result = left if left.array else right
        return Resolution(left, right, function, result)
    if _is_stringish(left) and _is_stringish(right):
        return Resolution(TEXT, TEXT, Function("||", operator.add, infix("||")), TEXT)
    if _is_stringish(left) or _is_stringish(right):
        # textanycat / anytextcat: the other side is cast to text (so true || 'x' = 'truex').
        other = right if _is_stringish(left) else left
        caster = values.text_caster(other)
        if caster is None:
            raise unsupported(f"converting {other} to text")
        if _is_stringish(left):
            impl = lambda a, b: a + caster(b)  # noqa: E731
            return Resolution(TEXT, right, Function("||", impl, infix("||")), TEXT)
        impl = lambda a, b: caster(a) + b  # noqa: E731
        return Resolution(left, TEXT, Function("||", impl, infix("||")), TEXT)
    raise no_operator("||", left, right)


@lru_cache(maxsize=1024)
def _like_matcher(pattern: str, escape: str | None, insensitive: bool) -> Callable[[str], bool]:
    try:
        return like.compile_like(pattern, escape, insensitive)
    except like.TrailingEscape:
        # Postgres raises only if matching reaches the dangling escape and is false
        # otherwise; never matching keeps us on the side of "Postgres raises".
        return lambda text: False


def like_function(op: str, escape: bool) -> Function:
    """LIKE family on text; with `escape`, the function takes the ESCAPE string third."""
    insensitive, negated = LIKE_OPERATORS[op]

    if escape:

        def impl(text: str, pattern: str, esc: str) -> bool:
            result = _like_matcher(pattern, esc or None, insensitive)(text)
            return not result if negated else result

        keyword = ("NOT " if negated else "") + ("ILIKE" if insensitive else "LIKE")
        collate = _COLLATE_C if insensitive else ""

        def sql(args: Sequence[str]) -> str:
            return f"({args[0]}{collate} {keyword} {args[1]} ESCAPE {args[2]})"

        return Function(op, impl, sql)

    def impl2(text: str, pattern: str) -> bool:
        result = _like_matcher(pattern, "\\", insensitive)(text)
        return not result if negated else result

    return Function(op, impl2, infix(op, collate=insensitive))


def like_operator(op: str, left: PgType, right: PgType) -> Resolution:
    if not (_is_stringish(left) and _is_stringish(right)):
        raise no_operator(op, left, right)
    return Resolution(TEXT, TEXT, like_function(op, escape=False), BOOL)


def array_operator(op: str, left: PgType, right: PgType) -> Resolution:
    if left.is_unknown and right.is_unknown:
        raise WhereError(f"operator is not unique: unknown {op} unknown")
    if left.is_unknown:
        left = right
    if right.is_unknown:
        right = left
    if not (left.array and right.array):
        if left.category in ("A", "N", "S", "B", "U", "D", "E"):
            raise no_operator(op, left, right)
        raise unsupported(f"operator {op}")
    if left != right:
        raise no_operator(op, left, right)
    key = values.eq_key(left.element)
    if op == "@>":
        impl = lambda a, b: arrays.array_contains(a, b, key)  # noqa: E731
    elif op == "<@":
        impl = lambda a, b: arrays.array_contains(b, a, key)  # noqa: E731
    else:
        impl = lambda a, b: arrays.array_overlap(a, b, key)  # noqa: E731
    return Resolution(left, right, Function(op, impl, infix(op)), BOOL)


def binary(op: str, left: PgType, right: PgType) -> Resolution:
    if "J" in (left.category, right.category):
        raise unsupported(f"operator {op} on jsonb")
    if op in COMPARISONS:
        return comparison(op, left, right)
    if op in ARITHMETIC:
        return arithmetic(op, left, right)
    if op == "||":
        return concatenation(left, right)
    if op in LIKE_OPERATORS:
        return like_operator(op, left, right)
    if op in ARRAY_OPERATORS:
        return array_operator(op, left, right)
    raise unsupported(f"operator {op}")


# -- casts ----------------------------------------------------------------------------------


def _from_text(target: PgType) -> Callable[[str], Any]:
    parse = values.input_parser(target)

    def impl(text: str) -> Any:
        try:
            return parse(text)
        except InputError as exc:
            raise WhereEvalError(str(exc)) from None

    return impl


def _scalar_cast(source: PgType, target: PgType) -> Callable[[Any], Any] | None:
    s, t = source.name, target.name
    if source.enum is not None or target.enum is not None:
        if source.enum is not None and t in ("text", "varchar") and target.enum is None:
            return lambda v: v
        return None
    if t in ("text", "varchar"):
        if s in ("text", "varchar"):
            return lambda v: v
        return values.text_caster(source)
    if s in INTEGERS:
        if t in INTEGERS:
            return lambda v: numbers.check_int(v, t)
        if t == "numeric":
            return Decimal
        if t == "float8":
            return float
        if t == "float4":
            return numbers.int_to_float4
        if t == "bool" and s == "int4":
            return lambda v: v != 0
        return None
    if s == "numeric":
        if t in INTEGERS:
            return lambda v: numbers.numeric_to_int(v, t)
        return {"float8": numbers.numeric_to_float8, "float4": numbers.numeric_to_float4}.get(t)
    if s in FLOATS:
        if t in INTEGERS:
            return lambda v: numbers.float_to_int(v, t)
        if t == "numeric":
            return lambda v: numbers.float_to_numeric(v, 15 if s == "float8" else 6)
        if t == "float8":
            return lambda v: v
        if t == "float4":
            return _float8_to_float4
        return None
    if s == "bool":
        return int if t == "int4" else None
    if s in ("text", "varchar"):
        if t in ("bool", "uuid", "numeric", *INTEGERS, *FLOATS):
            return _from_text(target)
        return None
    if s == "date":
        if t in ("timestamp", "timestamptz"):
            return datetimes.date_to_timestamp
        return None
    if s in ("timestamp", "timestamptz"):
        if t == "date":
            return datetimes.timestamp_to_date
        if t == "time":
            return datetimes.timestamp_to_time
        if t in ("timestamp", "timestamptz"):
            return lambda v: v  # UTC session: the same instant, the same microseconds
        return None
    return None


def _float8_to_float4(value: float) -> float:
    single = numbers.to_float4(value)
    if single == 0.0 and value != 0.0:
        raise numbers.float_underflow()
    return single


def cast(source: PgType, target: PgType) -> Function | None:
    """An explicit cast, or None when Postgres has none or it is not supported here."""
    if source.array and target.array:
        element = cast(source.element, target.element)
        if element is None:
            return None
        impl = element.impl
        return Function(f"{source}::{target}", lambda v: v.map(impl), cast_sql(target))
    if target.array:
        return None
    if source.array:
        if target.name in ("text", "varchar") and target.enum is None:
            caster = values.text_caster(source)
            if caster is not None:
                return Function(f"{source}::{target}", caster, cast_sql(target))
        return None
    impl = _scalar_cast(source, target)
    if impl is None:
        return None
    return Function(f"{source}::{target}", impl, cast_sql(target))


def cast_error(source: PgType, target: PgType) -> WhereError:
    if "J" in (source.category, target.category):
        return unsupported(f"casting {source} to {target}")
    if source.category == "S" and target.category in ("D", "E", "A"):
        return unsupported(
            f"casting a {source} expression to {target} (cast constants, or compare as text)"
        )
    if target.name in ("text", "varchar") and source.category == "N":
        return unsupported(f"converting {source} to text")
    return WhereError(f"cannot cast type {source} to {target}")


# -- common types (COALESCE, GREATEST, IN lists, ARRAY[]) -----------------------------------


def common_type(types: Sequence[PgType], context: str) -> PgType:
    """select_common_type: raises WhereError when the types cannot be matched."""
    chosen: PgType | None = None
    for pg_type in types:
        if pg_type.is_unknown or pg_type == chosen:
            continue
        if chosen is None:
            chosen = pg_type
            continue
        if pg_type.category != chosen.category:
            raise WhereError(f"{context} types {chosen} and {pg_type} cannot be matched")
        if pg_type.array or chosen.array or pg_type.enum is not None:
            raise WhereError(f"{context} types {chosen} and {pg_type} cannot be matched")
        if (
            not chosen.preferred
            and implicitly_castable(chosen, pg_type)
            and not implicitly_castable(pg_type, chosen)
        ):
            chosen = pg_type
    if chosen is None:
        return TEXT
    for pg_type in types:
        if not implicitly_castable(pg_type, chosen):
            raise WhereError(f"{context} could not convert type {pg_type} to {chosen}")
    return chosen
