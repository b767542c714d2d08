"""Postgres arrays: values with dimensions and lower bounds, as array_in/array_out see them.

Postgres compares dimensions and lower bounds in `=` (`'[0:1]={1,2}' <> '{1,2}'`) and
subscripts relative to the lower bound, so a value keeps both alongside its elements,
which are stored flat in row-major order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import WhereEvalError
from .numbers import InputError

_ARRAY_SPACE = " \t\n\r\v\f"
_QUOTE_TRIGGERS = frozenset('{},"\\ \t\n\r\f')
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PgArray:
    items: tuple[Any, ...]
    dims: tuple[int, ...] = ()
    lbounds: tuple[int, ...] = ()

    @classmethod
    def of(cls, items: list[Any] | tuple[Any, ...]) -> PgArray:
        """A one-dimensional array with lower bound 1 (empty when there are no items)."""
        if not items:
            return EMPTY
        return cls(tuple(items), (len(items),), (1,))

    @property
    def ndims(self) -> int:
        return len(self.dims)

    def map(self, function: Callable[[Any], Any]) -> PgArray:
        """Apply `function` to each non-null element, keeping the shape (array coercion)."""
        return PgArray(
            tuple(None if item is None else function(item) for item in self.items),
            self.dims,
            self.lbounds,
        )


EMPTY = PgArray(())


# -- parsing ------------------------------------------------------------------------------


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, detail: str = "") -> InputError:
        message = f'malformed array literal: "{self.text}"'
        return InputError(f"{message} ({detail})" if detail else message)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _ARRAY_SPACE:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""


def parse_array(text: str, element: Callable[[str], Any]) -> PgArray:
    """array_in for a delimiter of `,`: `{1,2}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`, NULLs."""
    reader = _Reader(text)
    reader.skip_space()
    declared: list[tuple[int, int]] | None = None
    if reader.peek() == "[":
        declared = _parse_bounds(reader)
    reader.skip_space()
    if reader.peek() != "{":
        raise reader.error('Array value must start with "{" or dimension information.')
    shape, flat = _parse_braces(reader)
    reader.skip_space()
    if reader.pos != len(text):
        raise reader.error("Junk after closing right brace.")
    if not flat:
        if declared is not None:
            raise reader.error("Specified array dimensions do not match array contents.")
        return EMPTY
    if declared is not None:
        if tuple(upper - lower + 1 for lower, upper in declared) != tuple(shape):
            raise reader.error("Specified array dimensions do not match array contents.")
        lbounds = tuple(lower for lower, _ in declared)
    else:
        lbounds = (1,) * len(shape)
    items = tuple(None if raw is None else element(raw) for raw in flat)
    return PgArray(items, tuple(shape), lbounds)


def _parse_bounds(reader: _Reader) -> list[tuple[int, int]]:
    bounds = []
    while reader.peek() == "[":
        reader.pos += 1
        close = reader.text.find("]", reader.pos)
        if close < 0:
            raise reader.error('Missing "]" after array dimensions.')
        inside = reader.text[reader.pos : close]
        lower_s, sep, upper_s = inside.partition(":")
        try:
            lower, upper = (int(lower_s), int(upper_s)) if sep else (1, int(lower_s))
        except ValueError:
            raise reader.error() from None
        if upper < lower:
            raise reader.error("upper bound cannot be less than lower bound")
        bounds.append((lower, upper))
        reader.pos = close + 1
        reader.skip_space()
    if reader.peek() != "=":
        raise reader.error('Missing "=" after array dimensions.')
    reader.pos += 1
    return bounds


def _parse_braces(reader: _Reader) -> tuple[list[int], list[str | None]]:
    """Parse `{...}` at the reader's position; returns (shape, flat raw elements)."""
    reader.pos += 1  # the opening brace
    reader.skip_space()
    if reader.peek() == "}":
        reader.pos += 1
        return [], []
    shape: list[int] | None = None
    flat: list[str | None] = []
    count = 0
    nested = reader.peek() == "{"
    while True:
        reader.skip_space()
        if nested:
            if reader.peek() != "{":
                raise reader.error("Unexpected array element.")
            sub_shape, sub_flat = _parse_braces(reader)
            if not sub_flat or (shape is not None and sub_shape != shape):
                raise reader.error(
                    "Multidimensional arrays must have sub-arrays with matching dimensions."
                )
            shape = sub_shape
            flat.extend(sub_flat)
        else:
            flat.append(_parse_element(reader))
        count += 1
        reader.skip_space()
        char = reader.peek()
        reader.pos += 1
        if char == "}":
            break
        if char != ",":
            raise reader.error('Unexpected "{}" character.'.format(char or "end of input"))
    return [count, *(shape or [])], flat


def _parse_element(reader: _Reader) -> str | None:
    text = reader.text
    if reader.peek() == '"':
        reader.pos += 1
        chars = []
        while True:
            if reader.pos >= len(text):
                raise reader.error("Unexpected end of input.")
            char = text[reader.pos]
            reader.pos += 1
            if char == "\\":
                if reader.pos >= len(text):
                    raise reader.error("Unexpected end of input.")
                chars.append(text[reader.pos])
                reader.pos += 1
            elif char == '"':
                return "".join(chars)
            else:
                chars.append(char)
    chars = []
    escaped_any = False
    trailing_escaped = 0  # characters at the end that whitespace trimming must keep
    while reader.pos < len(text):
        char = text[reader.pos]
        if char in ",}":
            break
        if char in '{"':
            raise reader.error(f'Unexpected "{char}" character.')
        reader.pos += 1
        if char == "\\":
            if reader.pos >= len(text):
                raise reader.error("Unexpected end of input.")
            chars.append(text[reader.pos])
            reader.pos += 1
            escaped_any = True
            trailing_escaped = len(chars)
        else:
            chars.append(char)
    value = "".join(chars)
    keep = value[:trailing_escaped]
    value = keep + value[trailing_escaped:].rstrip(_ARRAY_SPACE)
    if not value and not escaped_any:
        raise reader.error("Unexpected array element.")
    if not escaped_any and value.upper() == "NULL":
        return None
    return value


# -- output -------------------------------------------------------------------------------


def _quote(text: str) -> str:
    if text == "" or text.upper() == "NULL" or any(ch in _QUOTE_TRIGGERS for ch in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def format_array(value: PgArray, element: Callable[[Any], str]) -> str:
    """array_out: braces per dimension, quoting as needed, `[lb:ub]=` when a bound is not 1."""
    if not value.dims:
        return "{}"
    rendered = ["NULL" if item is None else _quote(element(item)) for item in value.items]
    prefix = ""
    if any(lower != 1 for lower in value.lbounds):
        prefix = (
            "".join(
                f"[{lower}:{lower + size - 1}]"
                for lower, size in zip(value.lbounds, value.dims, strict=True)
            )
            + "="
        )
    return prefix + _nest(iter(rendered), value.dims)


def _nest(items: Iterator[str], dims: tuple[int, ...]) -> str:
    if len(dims) == 1:
        return "{" + ",".join(next(items) for _ in range(dims[0])) + "}"
    return "{" + ",".join(_nest(items, dims[1:]) for _ in range(dims[0])) + "}"


# -- operations ---------------------------------------------------------------------------


def array_eq(a: PgArray, b: PgArray, eq: Callable[[Any, Any], bool]) -> bool:
    """array_eq: same dimensions and bounds, then elements (two NULLs count as equal)."""
    if a.dims != b.dims or a.lbounds != b.lbounds:
        return False
    for x, y in zip(a.items, b.items, strict=True):
        if x is None or y is None:
            if x is not y:
                return False
        elif not eq(x, y):
            return False
    return True


def array_contains(a: PgArray, b: PgArray, key: Callable[[Any], Any]) -> bool:
    """`a @> b`: every element of b is in a; a NULL in b matches nothing, so it fails."""
    present = {key(item) for item in a.items if item is not None}
    return all(item is not None and key(item) in present for item in b.items)


def array_overlap(a: PgArray, b: PgArray, key: Callable[[Any], Any]) -> bool:
    present = {key(item) for item in a.items if item is not None}
    return any(item is not None and key(item) in present for item in b.items)


def subscript(value: PgArray, indexes: list[int]) -> Any:
    """`a[i][j]`: NULL unless there is one subscript per dimension, each within bounds."""
    if len(indexes) != value.ndims:
        return None
    offset = 0
    for index, size, lower in zip(indexes, value.dims, value.lbounds, strict=True):
        if not lower <= index < lower + size:
            return None
        offset = offset * size + (index - lower)
    return value.items[offset]


def array_ndims(value: PgArray) -> int | None:
    return value.ndims or None


def _incompatible(detail: str) -> WhereEvalError:
    return WhereEvalError(f"cannot concatenate incompatible arrays: {detail}")


def array_cat(a: PgArray | None, b: PgArray | None) -> PgArray | None:
    """array_cat (`||` between arrays), including its NULL and empty-array rules."""
    if a is None:
        return b
    if b is None:
        return a
    if not a.dims:
        return b
    if not b.dims:
        return a
    if a.ndims == b.ndims:
        if a.dims[1:] != b.dims[1:] or a.lbounds[1:] != b.lbounds[1:]:
            raise _incompatible("differing element dimensions")
        dims = (a.dims[0] + b.dims[0], *a.dims[1:])
        lbounds = a.lbounds
    elif a.ndims == b.ndims - 1:
        if a.dims != b.dims[1:] or a.lbounds != b.lbounds[1:]:
            raise _incompatible("differing dimensions")
        dims = (b.dims[0] + 1, *b.dims[1:])
        lbounds = b.lbounds
    elif a.ndims == b.ndims + 1:
        if b.dims != a.dims[1:] or b.lbounds != a.lbounds[1:]:
            raise _incompatible("differing dimensions")
        dims = (a.dims[0] + 1, *a.dims[1:])
        lbounds = a.lbounds
    else:
        raise _incompatible(f"arrays of {a.ndims} and {b.ndims} dimensions")
    return PgArray(a.items + b.items, dims, lbounds)


def array_append(a: PgArray | None, item: Any) -> PgArray:
    if a is None or not a.dims:
        return PgArray((item,), (1,), (1,))
    if a.ndims != 1:
        raise WhereEvalError("argument must be empty or one-dimensional array")
    if a.lbounds[0] + a.dims[0] > _INT32_MAX:
        raise WhereEvalError("integer out of range")
    return PgArray((*a.items, item), (a.dims[0] + 1,), a.lbounds)


def array_prepend(item: Any, a: PgArray | None) -> PgArray:
    if a is None or not a.dims:
        return PgArray((item,), (1,), (1,))
    if a.ndims != 1:
        raise WhereEvalError("argument must be empty or one-dimensional array")
    if a.lbounds[0] - 1 < -(2**31):
        raise WhereEvalError("integer out of range")
    # Postgres keeps the original lower bound for the grown array.
    return PgArray((item, *a.items), (a.dims[0] + 1,), a.lbounds)
