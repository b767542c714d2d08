"""A bounded, expiring set of keys known not to exist: the gateway's negative cache.

Every data-plane request names a service; a name that matches no service would otherwise
cost a control-database query each time, and anyone can send such names. Misses are kept
for `ttl` seconds (so a service created by another process is seen within that time) and at
most `size` of them (oldest dropped first), so a flood of random IDs cannot grow memory.
A service created in this process is dropped from the set at once (`discard`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_SIZE = 10_000


class MissCache:
    def __init__(
        self,
        ttl: float,
        size: int = DEFAULT_SIZE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._monotonic = monotonic
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()  # the admin API's thread pool and the loop share it

    def __contains__(self, key: str) -> bool:
        with self._lock:
            missed_at = self._seen.get(key)
            if missed_at is None:
                return False
            if self._monotonic() - missed_at < self.ttl:
                return True
            del self._seen[key]
            return False

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)
            self._seen[key] = self._monotonic()
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)
