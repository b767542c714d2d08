"""Streams as the engine holds them in memory.

Each stream keeps its append state twice. `pending` is what validation sees: it moves
the moment a request is accepted, so that the next request on the same stream is
judged against it (all validation runs on one event loop thread, which serialises it per
stream and producer). `durable` moves only once the record is on disk; reads, live
wake-ups and checkpoints see only `durable`, so nothing is visible before it is safe.
The same `apply_append` moves both, and replays the log on recovery.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(slots=True)
class StreamConfig:
    content_type: str
    ttl: int | None = None
    expires_at: str | None = None
    # expires_at as a POSIX timestamp, for comparisons.
    expires_ts: float | None = None

    def matches(self, other: StreamConfig) -> bool:
        return (
            self.content_type.lower() == other.content_type.lower()
            and self.ttl == other.ttl
            and self.expires_ts == other.expires_ts
        )


class Version:
    """The part of a stream that appends change."""

    __slots__ = ("closed", "closed_by", "last_seq", "producers", "tail")

    def __init__(
        self,
        tail: int,
        closed: bool = False,
        closed_by: tuple[str, int, int] | None = None,
        producers: dict[str, tuple[int, int]] | None = None,
        last_seq: str | None = None,
    ) -> None:
        self.tail = tail
        self.closed = closed
        self.closed_by = closed_by
        self.producers = producers if producers is not None else {}
        self.last_seq = last_seq

    def copy(self) -> Version:
        return Version(self.tail, self.closed, self.closed_by, dict(self.producers), self.last_seq)

    def apply_append(self, meta: dict, length: int) -> None:
        self.tail += length
        producer = meta.get("pr")
        if producer is not None:
            self.producers[producer[0]] = (producer[1], producer[2])
        seq = meta.get("q")
        if seq is not None:
            self.last_seq = seq
        if meta.get("c"):
            self.closed = True
            if producer is not None:
                self.closed_by = (producer[0], producer[1], producer[2])


class Stream:
    __slots__ = (
        "base",
        "children",
        "config",
        "created_at",
        "durable",
        "durable_gone",
        "gone",
        "id",
        "is_json",
        "last_access",
        "last_commit",
        "parent",
        "path",
        "pending",
        "ready",
        "recent",
        "waiters",
    )

    def __init__(
        self,
        stream_id: int,
        path: str,
        config: StreamConfig,
        created_at: float,
        parent: Stream | None,
        base: int,
        is_json: bool,
    ) -> None:
        self.id = stream_id
        self.path = path
        self.config = config
        self.created_at = created_at
        self.parent = parent
        # The position where this stream's own bytes start: 0, or the fork point.
        self.base = base
        self.is_json = is_json
        self.durable = Version(base)
        self.pending = Version(base)
        self.children = 0
        self.gone = False
        self.durable_gone = False
        self.last_access = created_at
        # Resolved once the stream's creation is durable; None after that.
        self.ready: asyncio.Future[None] | None = None
        # The commit that carries this stream's newest accepted record.
        self.last_commit: asyncio.Future[None] | None = None
        # Live readers waiting for bytes past the durable tail; None until the first. (An
        # empty set per stream would be one more object to load for each durable append,
        # and shape logs append to thousands of streams at once.)
        self.waiters: set[asyncio.Future[bool]] | None = None
        # The bytes of the newest durable batch, shared by the readers it wakes.
        self.recent: tuple[int, bytes] | None = None

    def expired(self, now: float) -> bool:
        config = self.config
        if config.expires_ts is not None and now >= config.expires_ts:
            return True
        return config.ttl is not None and now >= self.last_access + config.ttl
