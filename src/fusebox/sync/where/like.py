"""LIKE / ILIKE matching with Postgres's escape rules, in time linear in the text.

Patterns come from clients, so they are not turned into backtracking regexes (`%a%a%a%b`
would be exponential). A pattern splits at `%` into fixed-width segments; placing each
middle segment at its leftmost occurrence is optimal, so one left-to-right scan decides.

ILIKE lowers text and pattern with the C collation's rules (ASCII letters only), as
Postgres does for a UTF-8 database under `COLLATE "C"`, which the generated SQL requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import WhereEvalError
from .values import ascii_lower

_ANY = object()  # `_`: exactly one character
_Segment = list[object]  # characters (str) and _ANY


class TrailingEscape(ValueError):
    """The pattern ends with its escape character: Postgres raises when it gets there."""


def _tokens(pattern: str, escape: str | None) -> list[object]:
    tokens: list[object] = []
    chars = iter(pattern)
    for char in chars:
        if escape is not None and char == escape:
            literal = next(chars, None)
            if literal is None:
                raise TrailingEscape("LIKE pattern must not end with escape character")
            tokens.append(literal)
        elif char == "%":
            tokens.append(None)  # segment boundary
        elif char == "_":
            tokens.append(_ANY)
        else:
            tokens.append(char)
    return tokens


class _Fixed:
    """One fixed-width segment: plain string operations, or a regex if it holds `_`."""

    def __init__(self, segment: _Segment) -> None:
        self.width = len(segment)
        if all(isinstance(item, str) for item in segment):
            self.text: str | None = "".join(segment)  # type: ignore[arg-type]
            self.regex = None
        else:
            self.text = None
            self.regex = re.compile(
                "".join("." if item is _ANY else re.escape(item) for item in segment),  # type: ignore[arg-type]
                re.DOTALL,
            )

    def match_at(self, text: str, position: int) -> bool:
        if self.text is not None:
            return text.startswith(self.text, position)
        assert self.regex is not None
        return self.regex.match(text, position, position + self.width) is not None

    def find(self, text: str, start: int, end: int) -> int:
        if self.text is not None:
            return text.find(self.text, start, end)
        assert self.regex is not None
        found = self.regex.search(text, start, end)
        return -1 if found is None else found.start()


def compile_like(pattern: str, escape: str | None, insensitive: bool) -> Callable[[str], bool]:
    """A predicate for `text LIKE pattern`; raises TrailingEscape or WhereEvalError."""
    if escape is not None and len(escape) > 1:
        raise WhereEvalError("invalid escape string: must be empty or one character")
    tokens = _tokens(pattern, escape)
    if insensitive:
        # Escapes are resolved first (like_escape runs before ILIKE lowers the pattern).
        tokens = [ascii_lower(t) if isinstance(t, str) else t for t in tokens]
    segments: list[_Segment] = [[]]
    for token in tokens:
        if token is None:
            segments.append([])
        else:
            segments[-1].append(token)
    fixed = [_Fixed(segment) for segment in segments]
    lower = ascii_lower if insensitive else None

    if len(fixed) == 1:
        only = fixed[0]

        def exact(text: str) -> bool:
            if lower is not None:
                text = lower(text)
            return len(text) == only.width and only.match_at(text, 0)

        return exact

    first, middle, last = fixed[0], fixed[1:-1], fixed[-1]

    def match(text: str) -> bool:
        if lower is not None:
            text = lower(text)
        end = len(text) - last.width
        if end < first.width or not first.match_at(text, 0) or not last.match_at(text, end):
            return False
        position = first.width
        for segment in middle:
            found = segment.find(text, position, end)
            if found < 0:
                return False
            position = found + segment.width
        return True

    return match
