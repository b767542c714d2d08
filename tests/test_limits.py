"""`fusebox.limits`: servers raise their soft open-files limit toward the hard one at start,
and the store sizes its descriptor caches from whatever limit is in force."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusebox.limits import open_files_limit, raise_open_files_limit
from fusebox.streams.store import FileStore


@pytest.fixture
def restored_limit() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield limits
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_raises_the_soft_limit_up_to_the_hard_one_and_never_lowers_it(
    restored_limit: tuple[int, int],
) -> None:
    soft, hard = restored_limit
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    assert open_files_limit() == lowered
    # A ceiling below the limit in force leaves it alone.
    assert raise_open_files_limit(ceiling=lowered // 2) == lowered
    expected = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    assert raise_open_files_limit(ceiling=4096) == expected
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)


def test_the_store_sizes_its_descriptor_caches_from_the_limit(
    tmp_path: Path, restored_limit: tuple[int, int]
) -> None:
    soft, hard = restored_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    limit = open_files_limit()
    store = FileStore(tmp_path)
    assert store._write_handles._capacity == max(64, limit // 2)
    assert store._read_handles._capacity == max(64, limit // 8)
    pinned = FileStore(tmp_path, open_files=10)
    assert pinned._write_handles._capacity == pinned._read_handles._capacity == 10
