"""Per-type text codecs and comparisons: how each supported type reads, prints and compares.

Four different text conversions exist, because Postgres has four:
- `output_parser`: a row value as Postgres printed it (fast path, trusted format);
- `input_parser`: a literal or a text cast, with the type's input-function syntax;
- `output_formatter`: the type's output function (what `concat()` and arrays print);
- `text_caster`: `::text`, which differs from the output function for bool
  (`true::text` is 'true' but `concat(true)` is 't').
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from . import arrays, datetimes, numbers
from .numbers import InputError
from .types import PgType

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WHITESPACE = " \t\n\r\v\f"


def ascii_lower(text: str) -> str:
    """lower() under the C collation: only ASCII letters change."""
    return text.translate(_ASCII_LOWER)


def ascii_upper(text: str) -> str:
    return text.translate(_ASCII_UPPER)


def parse_bool_input(text: str) -> bool:
    """boolin: t/true/y/yes/on/1 and f/false/n/no/off/0, any unique prefix, any case."""
    value = ascii_lower(text.strip(_WHITESPACE))
    if value:
        first = value[0]
        if first == "t" and "true".startswith(value):
            return True
        if first == "f" and "false".startswith(value):
            return False
        if first == "y" and "yes".startswith(value):
            return True
        if first == "n" and "no".startswith(value):
            return False
        if first == "o" and len(value) >= 2:
            if "on".startswith(value):
                return True
            if "off".startswith(value):
                return False
        if value == "1":
            return True
        if value == "0":
            return False
    raise InputError(f'invalid input syntax for type boolean: "{text}"')


_HEX = frozenset("0123456789abcdefABCDEF")


def parse_uuid_input(text: str) -> str:
    """string_to_uuid: optional braces, a hyphen allowed after any group of four digits."""
    source = text
    position = 0
    braces = source.startswith("{")
    if braces:
        position = 1
    digits = []
    for index in range(16):
        pair = source[position : position + 2]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            raise InputError(f'invalid input syntax for type uuid: "{text}"')
        digits.append(pair)
        position += 2
        if source[position : position + 1] == "-" and index % 2 == 1 and index < 15:
            position += 1
    if braces:
        if source[position : position + 1] != "}":
            raise InputError(f'invalid input syntax for type uuid: "{text}"')
        position += 1
    if position != len(source):
        raise InputError(f'invalid input syntax for type uuid: "{text}"')
    hexa = "".join(digits).lower()
    return f"{hexa[:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:]}"


def _enum_input(pg_type: PgType, text: str) -> str:
    assert pg_type.enum is not None
    labels = pg_type.enum.labels
    if (labels is not None and text not in labels) or text == "":
        raise InputError(f'invalid input value for enum {pg_type.enum.name}: "{text}"')
    return text


def _no_jsonb_literals(text: str) -> str:
    raise InputError("jsonb literals are not supported in where clauses")


def _bool_output(value: bool) -> str:
    return "t" if value else "f"


def _identity(value: Any) -> Any:
    return value


_OUTPUT_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": lambda text: text == "t",
    "int2": int,
    "int4": int,
    "int8": int,
    "numeric": numbers.parse_numeric_output,
    "float4": numbers.parse_float4_output,
    "float8": numbers.parse_float8_output,
    "text": _identity,
    "varchar": _identity,
    "uuid": _identity,
    "date": datetimes.parse_date_output,
    "time": datetimes.parse_time_output,
    "timestamp": datetimes.parse_timestamp_output,
    "timestamptz": datetimes.parse_timestamptz_output,
    "jsonb": _identity,
}

_INPUT_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": parse_bool_input,
    "int2": partial(numbers.parse_int_input, pg_type=PgType("int2")),
    "int4": partial(numbers.parse_int_input, pg_type=PgType("int4")),
    "int8": partial(numbers.parse_int_input, pg_type=PgType("int8")),
    "numeric": numbers.parse_numeric_input,
    "float4": numbers.parse_float4_input,
    "float8": numbers.parse_float8_input,
    "text": _identity,
    "varchar": _identity,
    "uuid": parse_uuid_input,
    "date": datetimes.parse_date_input,
    "time": datetimes.parse_time_input,
    "timestamp": datetimes.parse_timestamp_input,
    "timestamptz": datetimes.parse_timestamptz_input,
    "jsonb": _no_jsonb_literals,
}

# Output functions. float4/float8 are missing on purpose: Postgres prints the shortest
# round-trip digits in its own layout, which is not reproduced here, so anything that
# would print a float (casts to text, concat, ||) is rejected at compile time.
_OUTPUT_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "bool": _bool_output,
    "int2": str,
    "int4": str,
    "int8": str,
    "numeric": numbers.format_numeric,
    "text": _identity,
    "varchar": _identity,
    "uuid": _identity,
    "date": datetimes.format_date,
    "time": datetimes.format_time,
    "timestamp": datetimes.format_timestamp,
    "timestamptz": datetimes.format_timestamptz,
    "jsonb": _identity,  # a row's jsonb text is jsonb_out's canonical form already
}


def output_parser(pg_type: PgType) -> Callable[[str], Any]:
    """Reads a row's text value of this type."""
    if pg_type.array:
        element = output_parser(pg_type.element)
        return partial(arrays.parse_array, element=element)
    if pg_type.enum is not None:
        return _identity
    return _OUTPUT_PARSERS[pg_type.name]


def input_parser(pg_type: PgType) -> Callable[[str], Any]:
    """Parses a literal of this type; raises InputError with Postgres's message."""
    if pg_type.array:
        element = input_parser(pg_type.element)
        return partial(arrays.parse_array, element=element)
    if pg_type.enum is not None:
        return partial(_enum_input, pg_type)
    return _INPUT_PARSERS[pg_type.name]


def output_formatter(pg_type: PgType) -> Callable[[Any], str] | None:
    """The type's output function, or None when it is not reproduced exactly here."""
    if pg_type.array:
        element = output_formatter(pg_type.element)
        if element is None:
            return None
        return partial(arrays.format_array, element=element)
    if pg_type.enum is not None:
        return _identity
    return _OUTPUT_FORMATTERS.get(pg_type.name)


def text_caster(pg_type: PgType) -> Callable[[Any], str] | None:
    """`value::text`: the output function, except that booleans spell themselves out."""
    if not pg_type.array and pg_type.name == "bool" and pg_type.enum is None:
        return lambda value: "true" if value else "false"
    return output_formatter(pg_type)


def literal_formatter(pg_type: PgType) -> Callable[[Any], str]:
    """Text that this type's input function reads back as exactly `value` (for SQL)."""
    if pg_type.array:
        element = literal_formatter(pg_type.element)
        return partial(arrays.format_array, element=element)
    if pg_type.enum is None and pg_type.name in ("float4", "float8"):
        # repr is the shortest text that reads back as the same double; for a float4
        # value that text is within half a double ulp, so strtof rounds it back exactly.
        return repr
    formatter = output_formatter(pg_type)
    assert formatter is not None
    return formatter


# -- comparison ---------------------------------------------------------------------------


def python_lt(a: Any, b: Any) -> bool:
    return a < b


def python_eq(a: Any, b: Any) -> bool:
    return a == b


def eq_function(pg_type: PgType) -> Callable[[Any, Any], bool]:
    """Equality as the type's `=` operator defines it."""
    if pg_type.array:
        element = eq_function(pg_type.element)
        return lambda a, b: arrays.array_eq(a, b, element)
    if pg_type.enum is None:
        if pg_type.name == "numeric":
            return numbers.numeric_eq
        if pg_type.name in ("float4", "float8"):
            return numbers.float_eq
    return python_eq


def lt_function(pg_type: PgType) -> Callable[[Any, Any], bool] | None:
    """`<` for types with a supported ordering (text in the C collation: code points)."""
    if pg_type.array or pg_type.enum is not None or pg_type.name == "jsonb":
        return None  # enum order lives in pg_enum; array and jsonb order are not implemented
    if pg_type.name == "numeric":
        return numbers.numeric_lt
    if pg_type.name in ("float4", "float8"):
        return numbers.float_lt
    return python_lt


def eq_key(pg_type: PgType) -> Callable[[Any], Any]:
    """A hashable key such that keys are equal exactly when values are `=`."""
    if pg_type.enum is None and not pg_type.array:
        if pg_type.name == "numeric":
            return numbers.numeric_key
        if pg_type.name in ("float4", "float8"):
            return numbers.float_key
    return _identity


def sql_string(text: str) -> str:
    """A string literal that reads the same whatever standard_conforming_strings says."""
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + text.replace("'", "''") + "'"
