"""The cycle-collector policy of long-running servers (fusebox.collector)."""

from __future__ import annotations

import asyncio
import gc
import platform
import weakref

import pytest

from fusebox.allocator import retain_freed_memory
from fusebox.collector import HeapFreezer, collector_paused


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_collector_paused_restores_the_previous_state() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the inner exit must not re-enable early
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_frozen_heap_is_skipped_then_thawed_and_collected() -> None:
    async def scenario() -> None:
        heap = HeapFreezer(freeze_seconds=0.05, thaw_seconds=0.2)
        heap.start()
        try:
            assert gc.get_freeze_count() > 0
            cycle = make_cycle()  # garbage from birth, but it lives until a collection
            await asyncio.sleep(0.08)  # a freeze passes: the cycle is now frozen
            gc.collect()
            assert cycle() is not None, "a full collection must not look at frozen objects"
            await asyncio.sleep(0.3)  # a thaw passes: unfrozen, collected, frozen again
            assert cycle() is None
        finally:
            await heap.stop()
        assert gc.get_freeze_count() == 0

    asyncio.run(scenario())


def test_idle_collector_collects_between_transactions_only() -> None:
    from fusebox.collector import IdleCollector

    collector = IdleCollector(idle_seconds=0.0, max_seconds=3600.0)
    try:
        assert not gc.isenabled()
        cycle = make_cycle()
        gc.collect(0)  # young collections would find it; none runs by itself now
        cycle = make_cycle()
        collector.tick(busy=True)  # a transaction in flight: not now
        assert cycle() is not None
        collector.tick(busy=False)
        assert cycle() is None
    finally:
        gc.enable()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_servers_can_tune_glibc_malloc() -> None:
    # Applied once per server process; repeating it is harmless. A refused setting would
    # silently bring back fresh pages for every large block (allocator.py).
    assert retain_freed_memory()
    assert retain_freed_memory(mmap_threshold=1 << 20)
    assert retain_freed_memory()
