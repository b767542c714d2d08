"""Live-read cursors: a clock that edge caches can key on.

A cursor is the number of 20-second intervals since 2024-10-09T00:00:00Z. Live responses
carry it and clients echo it, so identical live requests inside one interval share a
cache key while consecutive requests of one client never do: when a client's cursor is
already current, the server moves it forward by a random 1 s to 1 h, which also spreads
a crowd of clients that would otherwise return in lockstep.
"""

from __future__ import annotations

import random
import time

EPOCH = 1728432000  # 2024-10-09T00:00:00Z
INTERVAL = 20


def current_interval(now: float | None = None) -> int:
    return int(((time.time() if now is None else now) - EPOCH) // INTERVAL)


def next_cursor(client_cursor: str | None, now: float | None = None) -> str:
    interval = current_interval(now)
    if client_cursor and client_cursor.isdigit():
        previous = int(client_cursor)
        if previous >= interval:
            jitter_seconds = random.randint(1, 3600)
            interval = previous + max(1, jitter_seconds // INTERVAL)
    return str(interval)
