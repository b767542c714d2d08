"""Routing in one process, without Postgres: the HTTP side's work per change, alone.

Builds N `tenant = i` shapes over a log engine in a scratch directory (their snapshots
counted as done), then routes transactions of 1,000 inserts through `Shapes.apply` and
waits until they are durable, as the sync server does for each batch from its
replication process. Prints the process's CPU per change (user and system, every
thread), the collector's time, and each write-out of the store's tails.

It exists because the end-to-end benchmark (`sync_bench.py throughput`) needs ~30 s to
create 10,000 shapes per round and mixes in three other processes; this loop answers
"did that change make routing cheaper at 10,000 shapes?" in seconds. Quote figures from
`sync_bench.py`; use this one to compare two versions, alternating runs:

    uv run python bench/routing_loop.py --shapes 10000
    PYTHONPATH=/tmp/other/src uv run python bench/routing_loop.py --shapes 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import statistics
import tempfile
import time

from fusebox.allocator import retain_freed_memory
from fusebox.collector import HeapFreezer, collector_paused
from fusebox.streams.engine import StreamEngine
from fusebox.streams.model import StreamConfig
from fusebox.streams.store import FileStore
from fusebox.sync.changes import Change, Transaction
from fusebox.sync.schema import Column, Table
from fusebox.sync.shape import ShapeDefinition
from fusebox.sync.shape_log import ShapeLog
from fusebox.sync.shapes import Shape, Shapes, _column_types
from fusebox.sync.where import compile_where

RELATION = ("public", "events")
COLUMNS = (
    Column("id", "int8", 20, True, 0),
    Column("tenant", "int4", 23, True, None),
    Column("payload", "text", 25, True, None),
)
TABLE = Table(1, *RELATION, COLUMNS, ("id",), "f", {c.name: c for c in COLUMNS})


async def build(directory: str, count: int) -> tuple[StreamEngine, Shapes]:
    engine = StreamEngine(FileStore(directory))
    await engine.start()
    shapes = Shapes(engine, "postgresql:///unused")  # never connects: no shape is created
    types = _column_types(TABLE)
    names = tuple(c.name for c in COLUMNS)
    for tenant in range(count):
        definition = ShapeDefinition(*RELATION, where=f"tenant = {tenant}")
        config = StreamConfig("application/json")
        stream, _ = await engine.create(f"/loop/{tenant}", config, b"", False)
        log = ShapeLog(engine, stream, 10 * 1024 * 1024)
        log.snapshot_done = log.snapshot_visible = True
        where = compile_where(f"tenant = {tenant}", types)
        shapes._register(Shape(f"h{tenant}", definition, TABLE, names, where, log))
    return engine, shapes


def transaction(number: int, count: int, spread: bool, rng: random.Random) -> Transaction:
    changes = []
    for row in range(number * 1000, (number + 1) * 1000):
        tenant = (row * 7919) % count if spread else rng.randrange(count)
        values = {"id": str(row), "tenant": str(tenant), "payload": f"{row:032x}"}
        changes.append(Change("insert", RELATION, values))
    # Transaction ids past any snapshot; commit LSNs ascending, as replication delivers.
    return Transaction(10**9 + number, 1000 + 100 * number, changes)


async def run(args: argparse.Namespace) -> None:
    retain_freed_memory()
    with tempfile.TemporaryDirectory(prefix="fusebox-routing-") as directory:
        engine, shapes = await build(directory, args.shapes)
        HeapFreezer().start()
        store = engine._store
        assert isinstance(store, FileStore)
        # Per write-out: tails written and the writer thread's CPU for them, summed over
        # the slices it is written in.
        write_outs: list[list] = []
        write_out_tails, write_tails = store._write_out_tails, store._write_tails

        async def counted_write_out() -> None:
            write_outs.append([0, 0.0])
            await write_out_tails()

        def timed_write_tails(stream_ids: list[int]) -> None:
            started = time.thread_time()
            write_tails(stream_ids)
            if write_outs:
                write_outs[-1][0] += len(stream_ids)
                write_outs[-1][1] += time.thread_time() - started

        store._write_out_tails = counted_write_out  # type: ignore[method-assign]
        store._write_tails = timed_write_tails  # type: ignore[method-assign]
        collecting = {"since": 0.0, "total": 0.0}

        def on_collection(phase: str, info: dict) -> None:
            if phase == "start":
                collecting["since"] = time.perf_counter()
            else:
                collecting["total"] += time.perf_counter() - collecting["since"]

        gc.callbacks.append(on_collection)
        rng = random.Random(1)
        before = resource.getrusage(resource.RUSAGE_SELF)
        built = 0.0
        pending: list[asyncio.Future] = []
        waits: list[float] = []  # per transaction: routed until all its appends are durable
        for number in range(args.transactions):
            started = time.process_time()
            tx = transaction(number, args.shapes, args.tenants == "spread", rng)
            built += time.process_time() - started  # not routing: taken out below
            with collector_paused():
                commits = shapes.apply(tx)
            applied = time.perf_counter()
            durable = asyncio.gather(*commits)
            durable.add_done_callback(
                lambda _, applied=applied: waits.append(time.perf_counter() - applied)
            )
            pending.append(durable)
            if len(pending) >= args.in_flight:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        while store._checkpoint is not None:
            await asyncio.sleep(0.01)
        after = resource.getrusage(resource.RUSAGE_SELF)
        gc.callbacks.remove(on_collection)
        changes = args.transactions * 1000
        user = (after.ru_utime - before.ru_utime - built) / changes * 1e6
        system = (after.ru_stime - before.ru_stime) / changes * 1e6
        print(
            f"{args.shapes} shapes, {args.tenants} tenants, {changes:,} changes: "
            f"{user + system:.2f} us CPU per change (user {user:.2f}, system {system:.2f}); "
            f"collector {collecting['total']:.3f} s; tail write-outs (tails, CPU s): "
            f"{[(tails, round(cpu, 3)) for tails, cpu in write_outs]}; routed to durable, "
            f"median {statistics.median(waits) * 1e3:.1f} ms, longest {max(waits) * 1e3:.1f} ms"
        )
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", type=int, default=10_000)
    parser.add_argument("--transactions", type=int, default=300, help="of 1,000 rows each")
    parser.add_argument("--tenants", choices=["spread", "random"], default="spread")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=21,
        help="transactions routed before waiting for them to be durable (1: each alone, "
        "so the longest wait is the longest the store held a commit back)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
