"""The C allocator in long-running servers: keep freed memory instead of returning it.

Snapshots and large transactions move through the server as blocks of megabytes: COPY
messages joined into a block, the block written to a shape log, read back and framed into
a response. With glibc's defaults every block above the mmap threshold is a fresh mapping,
unmapped again when freed, and freed heap tops are trimmed back to the system. Fresh pages
are not free: the kernel zeroes them, and on a VM the host may have to back them again.
On this project's benchmark machine, touching fresh memory cost about 9 us per 4 KiB page;
the sync server spent a quarter of its CPU for a 1,000,000-row snapshot there (1.05 us per
row with glibc's defaults, 0.79 with the settings below; docs/benchmarks.md, "Snapshot").

So large blocks come from the heap, and up to `trim_bytes` of freed memory stays with the
process for the next block. The cost is resident memory that stays at its recent peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Above the blocks a server moves (shape log chunks are 10 MiB by default); older glibc
# versions refuse more than 32 MiB.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_BYTES = 256 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024


def retain_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD, trim_bytes: int = TRIM_BYTES, top_pad: int = TOP_PAD
) -> bool:
    """Tune glibc's malloc as described above; False where there is no glibc `mallopt`."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, mmap_threshold),
        (_M_TRIM_THRESHOLD, trim_bytes),
        (_M_TOP_PAD, top_pad),
    )
    applied = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    if not applied:
        log.warning("could not tune the C allocator (mallopt refused a setting)")
    return applied
