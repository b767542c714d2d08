"""Publication and slot names, derived from a replication stream id as Electric does.

Names are limited to what a slot name may be (lowercase letters, digits, underscore, at
most 63 bytes) for both, so they can be spliced into replication commands, which take no
bind parameters, without quoting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"\A[a-z0-9_]{1,63}\Z")


def check_name(name: str, what: str = "name") -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must be 1-63 of [a-z0-9_]")
    return name


@dataclass(frozen=True, slots=True)
class ReplicationNames:
    publication: str
    slot: str

    def __post_init__(self) -> None:
        check_name(self.publication, "publication name")
        check_name(self.slot, "slot name")

    @classmethod
    def for_stream(cls, stream_id: str = "default") -> ReplicationNames:
        """`electric_publication_<id>` / `electric_slot_<id>`."""
        return cls(f"electric_publication_{stream_id}", f"electric_slot_{stream_id}")


DEFAULT_NAMES = ReplicationNames.for_stream("default")
