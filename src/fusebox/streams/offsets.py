"""Stream offsets: opaque to clients, a byte position to us.

An offset is `<epoch>_<position>`, both zero-padded to 16 digits so that offsets sort
lexicographically. The position is the byte position of the stream's wire bytes; forks
share their source's positions, so an offset means the same place in both. The epoch
part is always zero today and is kept so the format can grow (for example a compaction
generation) without breaking ordering.
"""

from __future__ import annotations

import re

_FORMAT = "%016d_%016d"
_PATTERN = re.compile(r"\A(\d{1,19})_(\d{1,19})\Z")

BEGINNING = "-1"
NOW = "now"


class InvalidOffset(ValueError):
    pass


def format_offset(position: int) -> str:
    return _FORMAT % (0, position)


def parse_offset(text: str) -> int:
    """The byte position an offset names; -1 (the beginning) is position 0."""
    if text == BEGINNING:
        return 0
    match = _PATTERN.match(text)
    if match is None:
        raise InvalidOffset(f"offset {text!r} is not -1, now, or an offset this server issued")
    return int(match.group(2))
