"""The open-files limit of a server process.

Every stream and shape log has a data file. The store keeps descriptors of recently used
ones open (`streams/store.py`, `_FileHandles`), and a write-out of 10,000 shape logs' tails
otherwise opens and closes 10,000 files: on this project's benchmark machine, about a
quarter of the write-out's CPU. A default soft limit of 1,024 descriptors holds few of
them, while the hard limit a system allows is usually far higher, and any process may
raise its soft limit up to it. Servers commonly do (nginx's `worker_rlimit_nofile`, Go's
runtime since 1.19); so does `fusebox ... serve` at start.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

# Descriptors are cheap, but not free (select-based code breaks above 1,024, and the kernel
# keeps a table per process): enough for a few times 10,000 streams is plenty.
CEILING = 1 << 16


def open_files_limit() -> int:
    """The process's soft limit on open files (1,024 where it cannot be read)."""
    if resource is None:
        return 1024
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else CEILING


def raise_open_files_limit(ceiling: int = CEILING) -> int:
    """Raise the soft limit toward the hard one, up to `ceiling`; never lower it.

    Returns the soft limit now in force.
    """
    if resource is None:
        return open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit to %d: %s", target, exc)
    return open_files_limit()
