"""Log sequence numbers: Postgres writes them as `X/Y` (two hex halves), we keep ints.

Ints compare and subtract naturally and pack straight into the protocol's Int64 fields;
text is only for SQL, logs and people.
"""

from __future__ import annotations

import re

_LSN = re.compile(r"\A([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")

MAX_LSN = (1 << 64) - 1


class InvalidLsn(ValueError):
    pass


def parse_lsn(text: str) -> int:
    """`16/B374D848` -> 0x16B374D848."""
    match = _LSN.match(text)
    if match is None:
        raise InvalidLsn(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """0x16B374D848 -> `16/B374D848`, the form Postgres prints and accepts."""
    if not 0 <= lsn <= MAX_LSN:
        raise InvalidLsn(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
