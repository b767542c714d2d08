"""Unit tests of the log engine and its file store, in process.

Recovery from a checkpoint snapshot plus the WAL after it, torn and corrupt WAL tails,
forks across restarts, soft delete with cascading garbage collection, TTL and Expires-At
expiry on an injected clock, JSON framing, and the offsets concurrent appends are given.

A "crash" here drops an engine without its shutdown path: no final checkpoint, no clean
close. Background work a dead process could not finish (a WAL batch or checkpoint already
under way) is awaited first, so that the next engine never races a ghost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fusebox.streams import framing
from fusebox.streams import store as store_module
from fusebox.streams.engine import ForkSpec, Producer, StreamEngine
from fusebox.streams.errors import (
    ConfigurationConflict,
    InvalidRequest,
    ProducerSequenceGap,
    StaleProducerEpoch,
    StreamClosed,
    StreamGone,
    StreamNotFound,
)
from fusebox.streams.model import StreamConfig
from fusebox.streams.records import APPEND, APPEND_MANY, CREATE, DELETE, Record, decode_records
from fusebox.streams.store import (
    SYNCFS_MIN_FILES,
    FileStore,
    StorageFailed,
    _FileHandles,
    sync_files,
)

OCTET = "application/octet-stream"
JSON = "application/json"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def open_engine(
    directory: Path,
    *,
    segment_bytes: int = 64 * 1024 * 1024,
    clock: Callable[[], float] | None = None,
    chunk_bytes: int = 4 * 1024 * 1024,
    **store_options: int,
) -> StreamEngine:
    store = FileStore(directory, segment_bytes=segment_bytes, **store_options)
    if clock is None:
        engine = StreamEngine(store, chunk_bytes=chunk_bytes)
    else:
        engine = StreamEngine(store, chunk_bytes=chunk_bytes, clock=clock)
    await engine.start()
    return engine


async def crash(engine: StreamEngine) -> None:
    """Drop `engine` as a crash would: no final checkpoint, nothing more written."""
    store = engine._store
    assert isinstance(store, FileStore)
    if engine._reaper is not None:
        engine._reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await engine._reaper
    if store._flusher is not None:
        with contextlib.suppress(Exception):
            await store._flusher
    if store._checkpoint is not None:
        await store._checkpoint
    if store._write_out is not None:
        with contextlib.suppress(Exception):
            await store._write_out
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(store._writer, store._write_handles.close_all)
    store._read_handles.close_all()
    if store._wal_fd >= 0:
        os.close(store._wal_fd)
    store._writer.shutdown(wait=True)
    store._checkpointer.shutdown(wait=True)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


async def create(
    engine: StreamEngine,
    path: str,
    content_type: str = OCTET,
    body: bytes = b"",
    *,
    closed: bool = False,
    fork: ForkSpec | None = None,
    ttl: int | None = None,
) -> None:
    config = StreamConfig(content_type, ttl=ttl)
    _, created = await engine.create(path, config, body, closed, fork)
    assert created


async def append(engine: StreamEngine, path: str, body: bytes, content_type: str = OCTET) -> int:
    outcome = await engine.append(engine.lookup(path), body, content_type)
    return outcome.next_position


def read_all(engine: StreamEngine, path: str, start: int = 0) -> bytes:
    """Every durable byte of the stream from `start`, over as many chunks as it takes.

    Like a GET, the lookup counts as an access (it renews a sliding TTL).
    """
    stream = engine.lookup(path)
    parts = []
    position = start
    while True:
        chunk = engine.read(stream, position)
        parts.append(chunk.data)
        position = chunk.next_position
        if chunk.up_to_date:
            return b"".join(parts)


def wal_files(directory: Path) -> tuple[list[int], list[int]]:
    names = os.listdir(directory / "wal")
    snapshots = sorted(int(n.split(".")[0]) for n in names if n.endswith(".snapshot"))
    segments = sorted(int(n.split(".")[0]) for n in names if n.endswith(".wal"))
    return snapshots, segments


def wal_records(directory: Path) -> list[Record]:
    _, segments = wal_files(directory)
    records = []
    for number in segments:
        data = (directory / "wal" / f"{number:012d}.wal").read_bytes()
        records.extend(record for record, _ in decode_records(data))
    return records


# -- recovery ------------------------------------------------------------------------------


def test_recovery_from_snapshot_plus_wal(tmp_path: Path) -> None:
    """Small WAL segments force checkpoints mid-run; recovery joins snapshot and WAL tail."""
    rng = random.Random(1)
    expected: dict[str, bytes] = {}

    async def write(engine: StreamEngine, count: int) -> None:
        for i in range(count):
            path = rng.choice(sorted(expected))
            body = rng.randbytes(rng.randint(1, 700)) + f"#{i}".encode()
            end = await append(engine, path, body)
            expected[path] += body
            assert end == len(expected[path])

    async def scenario() -> None:
        engine = await open_engine(tmp_path, segment_bytes=8 * 1024)
        for name in ("a", "b", "c"):
            await create(engine, f"/s/{name}", body=name.encode() * 3)
            expected[f"/s/{name}"] = name.encode() * 3
        await write(engine, 300)
        await crash(engine)
        snapshots, segments = wal_files(tmp_path)
        # A checkpoint happened mid-run and dropped the segments it covers; the newest
        # segment holds records the snapshot does not.
        assert snapshots[-1] > 1
        assert segments and segments[0] >= snapshots[-1]
        assert any(r.kind == APPEND for r in wal_records(tmp_path))

        engine = await open_engine(tmp_path, segment_bytes=8 * 1024)
        for path, data in expected.items():
            assert read_all(engine, path) == data
            assert engine.lookup(path).durable.tail == len(data)
            # The data file holds exactly the durable bytes.
            stream_id = engine.lookup(path).id
            assert (tmp_path / "streams" / f"{stream_id}.data").stat().st_size == len(data)
        await write(engine, 100)
        await crash(engine)

        engine = await open_engine(tmp_path, segment_bytes=8 * 1024)
        for path, data in expected.items():
            assert read_all(engine, path) == data
        await write(engine, 20)
        await engine.stop()
        # A clean stop leaves a snapshot that covers everything: the WAL after it is empty.
        assert not wal_records(tmp_path)

        engine = await open_engine(tmp_path)
        for path, data in expected.items():
            assert read_all(engine, path) == data
        # Offsets given before the restarts still address the same bytes.
        data = expected["/s/a"]
        assert read_all(engine, "/s/a", start=len(data) // 2) == data[len(data) // 2 :]
        await engine.stop()

    run(scenario)


def _template_with_last_append(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A crashed data dir whose WAL ends with the append of `last`; returns (dir, kept, last)."""
    template = tmp_path / "template"
    kept = b"".join(f"<{i}>".encode() for i in range(5))
    last = b"<the last append, torn by the crash>"

    async def scenario() -> None:
        engine = await open_engine(template)
        await create(engine, "/s/x", body=b"<0>")
        for i in range(1, 5):
            await append(engine, "/s/x", f"<{i}>".encode())
        await append(engine, "/s/x", last)
        await crash(engine)

    run(scenario)
    return template, kept, last


def _last_segment(directory: Path) -> Path:
    _, segments = wal_files(directory)
    return directory / "wal" / f"{segments[-1]:012d}.wal"


def test_reads_join_data_files_and_in_memory_tails(tmp_path: Path) -> None:
    """Durable bytes wait in per-stream tails before their data file; every read range,
    whether in the file, the tail or across both, returns exactly the appended bytes, and
    a crash that loses the tails loses nothing acknowledged."""
    rng = random.Random(7)
    expected: dict[str, bytes] = {}

    def start() -> Awaitable[StreamEngine]:
        # Tiny thresholds so that tails are written out often, by size and by total, and
        # some appends go to the data file directly (external) in batches with small ones.
        return open_engine(
            tmp_path, segment_bytes=16 * 1024, tail_bytes=300, buffer_bytes=2_000, direct_bytes=600
        )

    def check(engine: StreamEngine) -> None:
        for path, data in expected.items():
            stream = engine.lookup(path)
            for _ in range(5):
                a = rng.randint(0, len(data))
                b = rng.randint(a, len(data))
                assert engine.read_range(stream, a, b) == data[a:b]
            assert engine.read_range(stream, 0, len(data)) == data

    async def scenario() -> None:
        engine = await start()
        for name in "abcdef":
            await create(engine, f"/t/{name}")
            expected[f"/t/{name}"] = b""
        store = engine._store
        assert isinstance(store, FileStore)
        seen_tail_and_file = False
        for _ in range(400):
            # Several appends in flight at once share a WAL batch.
            batch = []
            for j in range(rng.choice((1, 1, 3))):
                size = rng.choice((rng.randint(1, 120), rng.randint(1, 120), 700))
                batch.append((rng.choice(sorted(expected)), rng.randbytes(size) + b"#%d" % j))
            ends = await asyncio.gather(*(append(engine, p, body) for p, body in batch))
            for (path, body), end in sorted(zip(batch, ends, strict=True), key=lambda b: b[1]):
                assert end == len(expected[path]) + len(body)
                expected[path] += body
            check(engine)
            tail = store._tails.get(engine.lookup(batch[0][0]).id)
            seen_tail_and_file = seen_tail_and_file or (tail is not None and tail.start > 0)
        assert seen_tail_and_file  # the interesting case (a read across both) happened
        external = [r for r in wal_records(tmp_path) if r.external]
        assert external and all(r.data == b"" and r.size >= 600 for r in external)
        while store._write_out is not None:  # (runs on the writer thread meanwhile)
            await store._write_out
        assert store._buffered == sum(t.held() for t in store._tails.values())
        await crash(engine)
        engine = await start()
        check(engine)
        await engine.stop()
        # After a clean stop the data files alone hold every byte.
        engine = await start()
        for path, data in expected.items():
            stream_id = engine.lookup(path).id
            assert (tmp_path / "streams" / f"{stream_id}.data").read_bytes() == data
        await engine.stop()

    run(scenario)


def test_appends_to_many_streams_as_one_record_survive_crashes(tmp_path: Path) -> None:
    """`append_framed_many` (one replicated transaction to many shape logs) is one WAL
    record; reads, tails, replay after a crash and a clean stop all see each stream's share,
    including a stream named twice in one call."""
    rng = random.Random(11)
    paths = [f"/m/{i}" for i in range(12)]
    expected = {path: b"" for path in paths}

    def start() -> Awaitable[StreamEngine]:
        return open_engine(tmp_path, segment_bytes=32 * 1024, tail_bytes=200, buffer_bytes=1_500)

    def check(engine: StreamEngine) -> None:
        for path, data in expected.items():
            stream = engine.lookup(path)
            assert engine.read_range(stream, stream.base, stream.durable.tail) == data

    async def scenario() -> None:
        engine = await start()
        for path in paths:
            await create(engine, path, JSON)
        for round_number in range(60):
            chosen = rng.sample(paths, rng.randint(1, len(paths)))
            chosen.append(chosen[0])  # the same stream twice: its shares stay in order
            appends = []
            for path in chosen:
                framed = b'{"r":%d,"p":"%s"},\n' % (round_number, path.encode())
                appends.append((engine.lookup(path), framed * rng.randint(1, 20)))
                expected[path] += appends[-1][1]
            await engine.append_framed_many(appends)
            check(engine)
            if round_number == 0:
                assert [r.kind for r in wal_records(tmp_path)][-1] == APPEND_MANY
            if round_number % 20 == 19:
                await crash(engine)
                engine = await start()
                check(engine)
        await engine.stop()
        engine = await start()
        check(engine)
        await engine.stop()

    run(scenario)


def test_a_stream_deleted_while_its_share_of_a_many_stream_append_is_in_flight(
    tmp_path: Path,
) -> None:
    """The record becomes durable for the streams still there; the deleted one is not
    brought back to life by it, now or on replay."""

    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        for path in ("/d/kept", "/d/dropped"):
            await create(engine, path, JSON)
        kept, dropped = engine.lookup("/d/kept"), engine.lookup("/d/dropped")
        commit = engine.append_framed_many([(kept, b"1,\n"), (dropped, b"2,\n")])
        await engine.delete("/d/dropped")
        await commit
        assert (kept.durable.tail, dropped.durable.tail) == (3, 0)
        assert read_all(engine, "/d/kept") == b"1,\n"
        await crash(engine)
        engine = await open_engine(tmp_path)
        assert read_all(engine, "/d/kept") == b"1,\n"
        with pytest.raises(StreamNotFound):
            engine.lookup("/d/dropped")
        await engine.stop()

    run(scenario)


def test_a_checkpoint_of_many_data_files_syncs_their_filesystem_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `SYNCFS_MIN_FILES` dirty files, one syncfs; below it, an fsync per file that
    exists and one of the directory. A failing syncfs fails the checkpoint."""
    synced: list[str] = []
    filesystem_syncs: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store_module, "_syncfs", lambda fd: filesystem_syncs.append(fd) or 0)
    names = [f"{i}.data" for i in range(SYNCFS_MIN_FILES + 1)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    sync_files(tmp_path, names)
    assert (len(filesystem_syncs), synced) == (1, [])

    sync_files(tmp_path, [*names[:3], "gone.data"])
    assert synced == [str(tmp_path / n) for n in names[:3]] + [str(tmp_path)]
    assert len(filesystem_syncs) == 1

    def failing(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(store_module, "_syncfs", failing)
    with pytest.raises(OSError, match="syncfs"):
        sync_files(tmp_path, names)

    # Through the engine: checkpoints of that many shape-log-like streams, then a crash
    # after the older segments are gone: the data files hold every byte.
    monkeypatch.setattr(store_module, "_syncfs", lambda fd: filesystem_syncs.append(fd) or 0)
    directory = tmp_path / "engine"

    async def scenario() -> None:
        engine = await open_engine(directory, segment_bytes=16 * 1024, buffer_bytes=4_000)
        paths = [f"/many/{i}" for i in range(SYNCFS_MIN_FILES + 20)]
        for path in paths:
            await create(engine, path, JSON)
        for round_number in range(4):
            await engine.append_framed_many(
                [(engine.lookup(p), b'{"r":%d},\n' % round_number) for p in paths]
            )
        await crash(engine)
        assert len(filesystem_syncs) > 1
        assert wal_files(directory)[0], "no checkpoint was taken"
        engine = await open_engine(directory, segment_bytes=16 * 1024)
        expected = b"".join(b'{"r":%d},\n' % r for r in range(4))
        for path in paths:
            stream = engine.lookup(path)
            assert engine.read_range(stream, stream.base, stream.durable.tail) == expected
        await engine.stop()

    run(scenario)


def test_running_out_of_descriptors_shrinks_the_cache_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handles = _FileHandles(tmp_path, os.O_RDWR | os.O_CREAT, capacity=100)
    for stream_id in range(10):
        handles.get(stream_id)
    real_open = os.open
    refusals = [OSError(errno.EMFILE, "Too many open files")]

    def limited_open(path: str, flags: int, mode: int = 0o777) -> int:
        if refusals:
            raise refusals.pop()
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", limited_open)
    fd = handles.get(10)
    assert os.fstat(fd).st_size == 0
    assert list(handles._open) == [5, 6, 7, 8, 9, 10]  # the older half went back
    for stream_id in range(11, 20):
        handles.get(stream_id)
    assert len(handles._open) == 6  # and the cache stays that small

    refusals.append(OSError(errno.EACCES, "Permission denied"))  # not about descriptors
    with pytest.raises(PermissionError):
        handles.get(20)
    handles.close_all()
    refusals.append(OSError(errno.EMFILE, "Too many open files"))  # nothing left to give
    with pytest.raises(OSError, match="Too many"):
        handles.get(21)


def test_a_tail_of_more_chunks_than_one_pwritev_takes_is_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail keeps each append as its own chunk and writes them with pwritev, at most
    IOV_MAX at a time, so 2,500 appends of a few bytes take three calls. One call that the
    kernel cuts short has its rest written too. Reads from the tail, at any range, and
    from the file afterwards, return exactly the appended bytes, whether they came alone
    or in records that append to many streams."""
    calls: list[int] = []
    real_pwritev = os.pwritev

    def pwritev(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(len(buffers))
        if len(calls) == 2:  # a short write, mid-chunk
            return os.pwrite(fd, b"".join(buffers)[:7], offset)
        return real_pwritev(fd, buffers, offset)

    async def scenario() -> None:
        store = FileStore(tmp_path, tail_bytes=1 << 20)
        engine = StreamEngine(store)
        await engine.start()
        await create(engine, "/many")
        await create(engine, "/other")
        stream, other = engine.lookup("/many"), engine.lookup("/other")
        pieces = [b"%d;" % n for n in range(2500)]
        data = b"".join(pieces)
        for n, piece in enumerate(pieces):  # alone, and in records that name two streams
            if n % 2:
                await engine.append_framed_many([(other, b"x"), (stream, piece)])
            else:
                await append(engine, "/many", piece)
        tail = store._tails[stream.id]
        assert len(tail.chunks) == 2500 and tail.end - tail.start == len(data)
        rng = random.Random(3)
        for _ in range(50):
            a = rng.randint(0, len(data))
            b = rng.randint(a, len(data))
            assert store.read(stream.id, a, b) == data[a:b]
        monkeypatch.setattr(os, "pwritev", pwritev)
        await store._write_out_all()
        monkeypatch.undo()
        # Every chunk of both tails went to pwritev once, never more than IOV_MAX a call.
        assert sum(calls) == 2500 + 1250 and max(calls) == store_module._IOV_MAX
        assert stream.id not in store._tails and store._buffered == 0
        assert (tmp_path / "streams" / f"{stream.id}.data").read_bytes() == data
        assert read_all(engine, "/many") == data
        assert read_all(engine, "/other") == b"x" * 1250
        await engine.stop()

    run(scenario)


def test_a_tail_counts_what_each_chunk_costs_besides_its_bytes(tmp_path: Path) -> None:
    """One-byte appends hold far more memory than their bytes: a tail counts each chunk's
    overhead against `tail_bytes`, so 1,000 bytes of budget take 20 of them, not 1,000."""

    async def scenario() -> None:
        store = FileStore(tmp_path, tail_bytes=1000)
        engine = StreamEngine(store)
        await engine.start()
        await create(engine, "/tiny")
        stream_id = engine.lookup("/tiny").id
        for n in range(30):
            await append(engine, "/tiny", b"%d" % (n % 10))
        written = (tmp_path / "streams" / f"{stream_id}.data").read_bytes()
        assert written == b"".join(b"%d" % (n % 10) for n in range(21))
        tail = store._tails[stream_id]
        assert (tail.start, tail.end, len(tail.chunks)) == (21, 30, 9)
        assert store._buffered == tail.held() == 9 * (1 + store_module._CHUNK_COST)
        assert read_all(engine, "/tiny") == b"".join(b"%d" % (n % 10) for n in range(30))
        await engine.stop()

    run(scenario)


def test_commits_go_on_while_tails_are_written_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write-out of many tails runs in slices, and WAL writes queued meanwhile run
    between them: an append made while one is under way is durable before it ends. (As
    one job, a write-out of 10,000 shape logs' tails held every commit back 0.1-0.5 s.)
    Every byte still reaches its file."""

    async def scenario() -> None:
        store = FileStore(tmp_path)
        engine = StreamEngine(store)
        await engine.start()
        paths = [f"/s{n}" for n in range(3 * store_module._WRITE_OUT_SLICE)]
        for path in paths:
            await create(engine, path)
            await append(engine, path, path.encode())
        write_tail = store._write_tail

        def slowly(stream_id: int) -> None:  # ~0.25 s a slice: plenty of time to append
            time.sleep(0.001)
            write_tail(stream_id)

        monkeypatch.setattr(store, "_write_tail", slowly)
        write_out = asyncio.ensure_future(store._write_out_all())
        while not any(
            (tmp_path / "streams" / f"{engine.lookup(p).id}.data").stat().st_size for p in paths
        ):
            await asyncio.sleep(0.001)  # the first slice has begun
        await append(engine, paths[-1], b"+")
        assert not write_out.done()
        await write_out
        assert not store._tails or list(store._tails) == [engine.lookup(paths[-1]).id]
        for path in paths:
            expected = path.encode() + (b"+" if path == paths[-1] else b"")
            assert read_all(engine, path) == expected
            file = tmp_path / "streams" / f"{engine.lookup(path).id}.data"
            assert file.read_bytes() == expected[: file.stat().st_size]
            assert file.stat().st_size >= len(path)
        await engine.stop()

    run(scenario)


def test_a_failed_write_out_stops_the_store_and_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tails over their budget are written out in the background. If the disk refuses
    them, the store takes no more appends (as after a failed WAL write), the tails keep
    serving what was acknowledged, and after a restart the WAL brings it all back."""
    expected: dict[str, bytes] = {}

    def full(fd: int, buffers: list[bytes], offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def scenario() -> None:
        engine = StreamEngine(FileStore(tmp_path, buffer_bytes=2_000))
        await engine.start()
        store = engine._store
        assert isinstance(store, FileStore)
        for n in range(10):
            await create(engine, f"/s{n}")
            expected[f"/s{n}"] = b""
        monkeypatch.setattr(os, "pwritev", full)
        n = 0
        while store._write_out is None:
            path = f"/s{n % 10}"
            await append(engine, path, b"%d;" % n)
            expected[path] += b"%d;" % n
            n += 1
        with pytest.raises(OSError):
            await store._write_out
        with pytest.raises(StorageFailed):
            await append(engine, "/s0", b"refused")
        for path, data in expected.items():
            assert read_all(engine, path) == data
        await crash(engine)
        monkeypatch.undo()
        engine = StreamEngine(FileStore(tmp_path, buffer_bytes=2_000))
        await engine.start()
        for path, data in expected.items():
            assert read_all(engine, path) == data
        await engine.stop()

    run(scenario)


def test_a_write_out_reuses_the_descriptors_it_holds_before_opening_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten streams' tails, a writer cache of four descriptors: a write-out opens only the
    six files whose descriptors are not held (in tail order, each open would evict the
    descriptor needed next, and all ten would be opened every time). What it writes is
    what was appended."""
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, flags: int, mode: int = 0o777) -> int:
        opened.append(path)
        return real_open(path, flags, mode)

    async def scenario() -> None:
        store = FileStore(tmp_path, open_files=4)
        engine = StreamEngine(store)
        await engine.start()
        paths = [f"/s{n}" for n in range(10)]
        for path in paths:
            await create(engine, path)
        monkeypatch.setattr(os, "open", counting_open)
        for round_ in range(3):
            for path in paths:
                await append(engine, path, f"{path}:{round_};".encode())
            opened.clear()
            await store._write_out_all()
            assert len(opened) == 6, round_  # four held since creation or the last write-out
        monkeypatch.undo()
        for path in paths:
            assert read_all(engine, path) == "".join(f"{path}:{r};" for r in range(3)).encode()
        await engine.stop()

    run(scenario)


def test_external_append_lost_before_its_log_record_is_trimmed(tmp_path: Path) -> None:
    """A large append reaches its data file (synced) before the WAL records its length. If
    the WAL write never happens, the append was not acknowledged, and recovery trims the
    data file back so that the next append lands where the last acknowledged one ended."""

    async def start() -> StreamEngine:
        engine = StreamEngine(FileStore(tmp_path, direct_bytes=1000))
        await engine.start()
        return engine

    async def scenario() -> None:
        engine = await start()
        await create(engine, "/s")
        await append(engine, "/s", b"small, through the log;")
        await append(engine, "/s", b"L" * 5000)  # external
        store = engine._store
        assert isinstance(store, FileStore)
        stream_id = engine.lookup("/s").id
        data_file = tmp_path / "streams" / f"{stream_id}.data"
        # The WAL becomes unwritable: the next external append reaches only its data file.
        os.close(store._wal_fd)
        store._wal_fd = os.open(os.devnull, os.O_RDONLY)
        with pytest.raises(StorageFailed):
            await append(engine, "/s", b"U" * 3000)
        await crash(engine)
        assert data_file.stat().st_size == 23 + 5000 + 3000

        engine = await start()
        assert read_all(engine, "/s") == b"small, through the log;" + b"L" * 5000
        assert data_file.stat().st_size == 23 + 5000
        await append(engine, "/s", b"after")
        await append(engine, "/s", b"E" * 2000)
        expected = b"small, through the log;" + b"L" * 5000 + b"after" + b"E" * 2000
        assert read_all(engine, "/s") == expected
        await crash(engine)
        engine = await start()
        assert read_all(engine, "/s") == expected
        await engine.stop()

    run(scenario)


def test_torn_wal_tail_recovers_the_intact_prefix(tmp_path: Path) -> None:
    """Cut the WAL at every byte of its last record: the records before it all survive."""
    template, kept, last = _template_with_last_append(tmp_path)
    wal = _last_segment(template).read_bytes()
    decoded = list(decode_records(wal))
    assert decoded[-1][0].data == last and decoded[-1][1] == len(wal)
    last_start = decoded[-2][1]

    async def recover(directory: Path) -> None:
        engine = await open_engine(directory)
        stream = engine.lookup("/s/x")
        assert stream.durable.tail == len(kept)
        assert read_all(engine, "/s/x") == kept
        # The data file had the torn append's bytes; recovery trimmed them off.
        assert (directory / "streams" / f"{stream.id}.data").stat().st_size == len(kept)
        # New appends go exactly where the torn one would have been.
        assert await append(engine, "/s/x", b"<after>") == len(kept) + 7
        await crash(engine)
        engine = await open_engine(directory)
        assert read_all(engine, "/s/x") == kept + b"<after>"
        await engine.stop()

    for cut in range(last_start, len(wal)):
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(template, directory)
        with open(_last_segment(directory), "r+b") as file:
            file.truncate(cut)
        run(lambda directory=directory: recover(directory))


def test_corrupt_wal_tail_is_dropped_and_trailing_garbage_ignored(tmp_path: Path) -> None:
    template, kept, last = _template_with_last_append(tmp_path)
    wal = _last_segment(template).read_bytes()
    last_start = list(decode_records(wal))[-2][1]

    async def recover(directory: Path, expected: bytes) -> None:
        engine = await open_engine(directory)
        assert read_all(engine, "/s/x") == expected
        await engine.stop()

    # A flipped bit inside the last record: its CRC fails, replay ends before it.
    flipped = tmp_path / "flipped"
    shutil.copytree(template, flipped)
    data = bytearray(wal)
    data[last_start + 12] ^= 0x40
    _last_segment(flipped).write_bytes(bytes(data))
    run(lambda: recover(flipped, kept))

    # Zeros after the last whole record (a preallocated or half-written tail).
    zeros = tmp_path / "zeros"
    shutil.copytree(template, zeros)
    _last_segment(zeros).write_bytes(wal + b"\0" * 100)
    run(lambda: recover(zeros, kept + last))


def test_torn_create_record_leaves_no_stream(tmp_path: Path) -> None:
    async def first() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/keep", body=b"kept")
        await create(engine, "/s/torn", body=b"never acknowledged")
        await crash(engine)

    run(first)
    wal = _last_segment(tmp_path)
    data = wal.read_bytes()
    last_start = list(decode_records(data))[-2][1]
    wal.write_bytes(data[: last_start + 20])

    async def second() -> None:
        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/keep") == b"kept"
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/torn")
        # Only the surviving stream's data file is left.
        assert sorted(p.name for p in (tmp_path / "streams").iterdir()) == [
            f"{engine.lookup('/s/keep').id}.data"
        ]
        await create(engine, "/s/torn", JSON, b'{"fresh":true}')
        assert read_all(engine, "/s/torn") == b'{"fresh":true},\n'
        await crash(engine)
        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/torn") == b'{"fresh":true},\n'
        assert read_all(engine, "/s/keep") == b"kept"
        await engine.stop()

    run(second)


def test_hard_delete_then_crash_recovers(tmp_path: Path) -> None:
    """A delete is logged once; replaying it after a crash must not fail."""

    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/gone", body=b"data")
        await create(engine, "/s/stays", body=b"data")
        await engine.delete("/s/gone")
        await crash(engine)
        deletes = [r for r in wal_records(tmp_path) if r.kind == DELETE]
        assert len(deletes) == 1
        engine = await open_engine(tmp_path)
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/gone")
        assert read_all(engine, "/s/stays") == b"data"
        await create(engine, "/s/gone", body=b"new")
        await crash(engine)
        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/gone") == b"new"
        await engine.stop()

    run(scenario)


def test_concurrent_appends_each_get_their_own_end_offset(tmp_path: Path) -> None:
    """Appends that share one WAL batch are acknowledged with their own end positions."""

    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/x")
        stream = engine.lookup("/s/x")
        bodies = [bytes([65 + i]) * (i + 1) for i in range(20)]
        outcomes = await asyncio.gather(*(engine.append(stream, b, OCTET) for b in bodies))
        content = read_all(engine, "/s/x")
        ends = [outcome.next_position for outcome in outcomes]
        assert len(set(ends)) == len(ends)
        for body, end in zip(bodies, ends, strict=True):
            assert content[end - len(body) : end] == body
        await engine.stop()

    run(scenario)


def test_producer_and_closed_state_survive_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/p", "text/plain")
        stream = engine.lookup("/s/p")
        for seq in range(3):
            outcome = await engine.append(
                stream, f"{seq};".encode(), "text/plain", producer=Producer("w", 4, seq)
            )
            assert not outcome.duplicate
        await create(engine, "/s/c", "text/plain", b"final", closed=True)
        await create(engine, "/s/pc", "text/plain")
        closer = Producer("z", 0, 0)
        await engine.append(
            engine.lookup("/s/pc"), b"last", "text/plain", close=True, producer=closer
        )
        await crash(engine)

        engine = await open_engine(tmp_path)
        stream = engine.lookup("/s/p")
        duplicate = await engine.append(stream, b"2;", "text/plain", producer=Producer("w", 4, 2))
        assert duplicate.duplicate and duplicate.producer == Producer("w", 4, 2)
        with pytest.raises(ProducerSequenceGap):
            await engine.append(stream, b"9;", "text/plain", producer=Producer("w", 4, 9))
        with pytest.raises(StaleProducerEpoch):
            await engine.append(stream, b"x", "text/plain", producer=Producer("w", 3, 0))
        accepted = await engine.append(stream, b"3;", "text/plain", producer=Producer("w", 4, 3))
        assert not accepted.duplicate
        with pytest.raises(StreamClosed):
            await engine.append(engine.lookup("/s/c"), b"more", "text/plain")
        # The producer that closed the stream may retry its closing append.
        retry = await engine.append(
            engine.lookup("/s/pc"), b"last", "text/plain", close=True, producer=closer
        )
        assert retry.duplicate and retry.closed
        await engine.stop()

        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/p") == b"0;1;2;3;"
        assert engine.lookup("/s/c").durable.closed
        assert read_all(engine, "/s/pc") == b"last"
        again = await engine.append(
            engine.lookup("/s/p"), b"3;", "text/plain", producer=Producer("w", 4, 3)
        )
        assert again.duplicate
        await engine.stop()

    run(scenario)


# -- forks ---------------------------------------------------------------------------------


def test_forks_survive_restarts(tmp_path: Path) -> None:
    async def check(engine: StreamEngine) -> None:
        assert read_all(engine, "/s/src") == b"0123456789" + b"src-later"
        assert read_all(engine, "/s/f1") == b"01234" + b"f1-own"
        # A fork of a fork, inside the grandparent's range and inside the parent's own.
        assert read_all(engine, "/s/f2") == b"012" + b"f2-own"
        assert read_all(engine, "/s/f3") == b"01234f1" + b"f3-own"
        # A fork at a sub-offset of a JSON stream: two messages past the anchor.
        assert json.loads(b"[" + read_all(engine, "/s/jf")[:-2] + b"]") == [1, 2, 3, "fork"]
        # Reading a fork from an offset inside its inherited range.
        assert read_all(engine, "/s/f3", start=2) == b"234f1f3-own"

    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/src", body=b"0123456789")
        await create(engine, "/s/f1", fork=ForkSpec("/s/src", 5, 0))
        await append(engine, "/s/src", b"src-later")
        await append(engine, "/s/f1", b"f1-own")
        await create(engine, "/s/f2", fork=ForkSpec("/s/f1", 3, 0))
        await append(engine, "/s/f2", b"f2-own")
        await create(engine, "/s/f3", fork=ForkSpec("/s/f1", 5, 2))
        await append(engine, "/s/f3", b"f3-own")
        await create(engine, "/s/json", JSON, b"[1,2,3,4,5]")
        # Anchor after message 1, two messages past it: inherits [1, 2, 3].
        await create(engine, "/s/jf", JSON, fork=ForkSpec("/s/json", 3, 2))
        await append(engine, "/s/jf", b'"fork"', JSON)
        await check(engine)
        with pytest.raises(InvalidRequest):
            await create(engine, "/s/bad", fork=ForkSpec("/s/src", 10_000, 0))
        with pytest.raises(InvalidRequest):
            await create(engine, "/s/bad", JSON, fork=ForkSpec("/s/json", 0, 6))
        await crash(engine)
        engine = await open_engine(tmp_path)
        await check(engine)
        stream = engine.lookup("/s/f3")
        assert stream.parent is engine.lookup("/s/f1") and stream.base == 7
        await engine.stop()
        engine = await open_engine(tmp_path)
        await check(engine)
        # The same fork request again is an idempotent success; another offset conflicts.
        _, created = await engine.create("/s/f1", None, b"", False, ForkSpec("/s/src", 5, 0))
        assert not created
        with pytest.raises(ConfigurationConflict):
            await engine.create("/s/f1", None, b"", False, ForkSpec("/s/src", 4, 0))
        await engine.stop()

    run(scenario)


def test_soft_delete_and_cascading_gc_across_restarts(tmp_path: Path) -> None:
    def data_files() -> set[str]:
        return {p.name for p in (tmp_path / "streams").iterdir()}

    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/a", body=b"aaaa")
        await create(engine, "/s/b", fork=ForkSpec("/s/a", 2, 0))
        await append(engine, "/s/b", b"bb")
        await create(engine, "/s/c", fork=ForkSpec("/s/b", 3, 0))
        await append(engine, "/s/c", b"cc")
        ids = {name: engine.lookup(f"/s/{name}").id for name in "abc"}
        # Deleting a stream that forks read from only hides it.
        await engine.delete("/s/a")
        with pytest.raises(StreamGone):
            engine.lookup("/s/a")
        with pytest.raises(ConfigurationConflict):
            await create(engine, "/s/a", body=b"again")
        assert read_all(engine, "/s/c") == b"aab" + b"cc"
        await crash(engine)

        engine = await open_engine(tmp_path)
        with pytest.raises(StreamGone):
            engine.lookup("/s/a")
        with pytest.raises(StreamGone):
            await engine.delete("/s/a")
        await engine.delete("/s/b")  # c still reads b: soft as well
        assert data_files() == {f"{ids[n]}.data" for n in "abc"}
        assert read_all(engine, "/s/c") == b"aabcc"
        await crash(engine)

        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/c") == b"aabcc"
        # Deleting the last fork collects its soft-deleted ancestors, all the way up.
        await engine.delete("/s/c")
        for name in "abc":
            with pytest.raises(StreamNotFound):
                engine.lookup(f"/s/{name}")
        assert data_files() == set()
        await crash(engine)

        engine = await open_engine(tmp_path)
        for name in "abc":
            with pytest.raises(StreamNotFound):
                engine.lookup(f"/s/{name}")
        assert data_files() == set()
        await create(engine, "/s/a", body=b"a new life")
        await engine.stop()
        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/a") == b"a new life"
        await engine.stop()

    run(scenario)


def test_gc_stops_at_a_live_ancestor(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = await open_engine(tmp_path)
        await create(engine, "/s/root", body=b"root")
        await create(engine, "/s/mid", fork=ForkSpec("/s/root", 2, 0))
        await create(engine, "/s/leaf1", fork=ForkSpec("/s/mid", 2, 0))
        await create(engine, "/s/leaf2", fork=ForkSpec("/s/mid", 1, 0))
        await engine.delete("/s/mid")
        await engine.delete("/s/leaf1")
        # leaf2 still reads mid: mid stays (soft-deleted); root was never deleted.
        assert read_all(engine, "/s/leaf2") == b"r"
        await crash(engine)
        engine = await open_engine(tmp_path)
        assert read_all(engine, "/s/leaf2") == b"r"
        with pytest.raises(StreamGone):
            engine.lookup("/s/mid")
        await engine.delete("/s/leaf2")
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/mid")
        assert read_all(engine, "/s/root") == b"root"
        await engine.stop()

    run(scenario)


# -- expiry --------------------------------------------------------------------------------


def test_sliding_ttl_and_absolute_expiry_on_an_injected_clock(tmp_path: Path) -> None:
    clock = Clock()
    start = clock.now

    async def scenario() -> None:
        engine = await open_engine(tmp_path, clock=clock)
        await create(engine, "/s/ttl", body=b"x", ttl=100)
        config = StreamConfig(OCTET, expires_at="2027-01-15T08:00:00Z")
        config.expires_ts = start + 500
        await engine.create("/s/abs", config, b"y", False)
        clock.now = start + 90
        engine.lookup("/s/ttl")  # a read or write renews the window
        clock.now = start + 180
        assert read_all(engine, "/s/ttl") == b"x"  # renewed: now lives until +280
        clock.now = start + 250
        engine.lookup("/s/ttl", touch=False)  # HEAD does not renew it
        clock.now = start + 279
        await append(engine, "/s/ttl", b"y")  # renewed: lives until +379
        clock.now = start + 378
        engine.lookup("/s/ttl", touch=False)
        clock.now = start + 379
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/ttl")
        # Absolute expiry ignores access.
        clock.now = start + 499
        engine.lookup("/s/abs")
        clock.now = start + 500
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/abs")
        # The path is free again.
        await create(engine, "/s/ttl", body=b"second")
        assert read_all(engine, "/s/ttl") == b"second"
        await engine.stop()

    run(scenario)


def test_reaper_deletes_expired_streams_and_soft_deletes_forked_ones(tmp_path: Path) -> None:
    clock = Clock()
    start = clock.now

    async def scenario() -> None:
        engine = await open_engine(tmp_path, clock=clock)
        await create(engine, "/s/short", body=b"s", ttl=10)
        await create(engine, "/s/forked", body=b"forked", ttl=10)
        await create(engine, "/s/child", fork=ForkSpec("/s/forked", 3, 0), ttl=1000)
        await create(engine, "/s/long", body=b"l", ttl=1000)
        clock.now = start + 11
        assert engine.reap() == 2
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/short")
        with pytest.raises(StreamGone):
            engine.lookup("/s/forked")
        assert read_all(engine, "/s/child") == b"for"
        assert read_all(engine, "/s/long") == b"l"
        await crash(engine)
        engine = await open_engine(tmp_path, clock=clock)
        with pytest.raises(StreamNotFound):
            engine.lookup("/s/short")
        with pytest.raises(StreamGone):
            engine.lookup("/s/forked")
        assert read_all(engine, "/s/child") == b"for"
        await engine.stop()

    run(scenario)


def test_ttl_promise_survives_a_crash(tmp_path: Path) -> None:
    """A stream written at t must not expire before t + TTL, even across a crash."""
    clock = Clock()
    start = clock.now

    async def scenario() -> None:
        engine = await open_engine(tmp_path, clock=clock)
        await create(engine, "/s/ttl", body=b"a", ttl=100)
        for step in range(1, 5):
            clock.now = start + 80 * step  # each append well inside the window
            await append(engine, "/s/ttl", b"b")
        await crash(engine)
        clock.now = start + 80 * 4 + 50  # 50 s after the last append, 370 s after creation
        engine = await open_engine(tmp_path, clock=clock)
        assert read_all(engine, "/s/ttl") == b"abbbb"
        await engine.stop()

    run(scenario)


# -- JSON framing --------------------------------------------------------------------------


def test_frame_messages_flattens_one_array_level_and_validates() -> None:
    frame = framing.frame_messages
    assert frame(b'{"a":1}', allow_empty_array=False) == b'{"a":1},\n'
    assert frame(b'  {"a": 1}  ', allow_empty_array=False) == b'{"a": 1},\n'
    # Messages keep the client's own text; only line breaks (whitespace) are dropped.
    assert frame(b"[1, [2, 3], {}]", allow_empty_array=False) == b"1,\n[2, 3],\n{},\n"
    assert frame(b'{\n"a":\n1\n}', allow_empty_array=False) == b'{"a":1},\n'
    assert frame(b"[]", allow_empty_array=True) == b""
    assert frame(b'"s"', allow_empty_array=False) == b'"s",\n'
    for bad in (b"", b"{", b"[1,]", b"NaN", b"[Infinity]", b"{'a':1}", b"1 2", b"\xff"):
        with pytest.raises(framing.InvalidJson):
            frame(bad, allow_empty_array=False)
    with pytest.raises(framing.InvalidJson):
        frame(b"[]", allow_empty_array=False)
    with pytest.raises(framing.InvalidJson):
        frame(b"[" * 100_000, allow_empty_array=False)


def test_framing_helpers() -> None:
    framed = b'1,\n{"a":"x,y"},\n[1,2],\n'
    assert framing.as_array(framed) == b'[1,\n{"a":"x,y"},\n[1,2]]'
    assert json.loads(framing.as_array(framed)) == [1, {"a": "x,y"}, [1, 2]]
    assert framing.as_array(b"") == b"[]"
    assert framing.whole_messages(framed[:-3]) == len(b'1,\n{"a":"x,y"},\n')
    assert framing.whole_messages(b'{"partial') == 0
    assert framing.skip_messages(framed, 2) == len(b'1,\n{"a":"x,y"},\n')
    assert framing.skip_messages(framed, 0) == 0
    assert framing.skip_messages(framed, 4) is None
    assert framing.is_json("application/json; charset=utf-8")
    assert framing.is_json("application/vnd.api+json")
    assert not framing.is_json("text/json-ish")


def test_json_reads_end_on_message_boundaries(tmp_path: Path) -> None:
    messages = [{"i": i, "pad": "p" * (i * 7 % 50)} for i in range(40)]

    async def scenario() -> None:
        engine = await open_engine(tmp_path, chunk_bytes=64)
        await create(engine, "/s/j", JSON)
        for message in messages:
            await append(engine, "/s/j", json.dumps(message).encode(), JSON)
        await append(engine, "/s/j", json.dumps({"big": "B" * 500}).encode(), JSON)
        stream = engine.lookup("/s/j")
        position, seen = 0, []
        while True:
            chunk = engine.read(stream, position)
            # Every chunk is whole messages: a JSON array on its own.
            batch = json.loads(framing.as_array(chunk.data))
            assert batch, "an empty chunk before the tail"
            seen.extend(batch)
            position = chunk.next_position
            if chunk.up_to_date:
                break
        assert seen == [*messages, {"big": "B" * 500}]
        with pytest.raises(InvalidRequest):
            await append(engine, "/s/j", b"[]", JSON)
        with pytest.raises(InvalidRequest):
            await append(engine, "/s/j", b"{oops", JSON)
        await engine.stop()

    run(scenario)


# -- JSON messages keep their exact text ----------------------------------------------------


def test_json_array_keeps_big_integers_exactly() -> None:
    framed = framing.frame_messages(b"[123456789012345678901234567890]", allow_empty_array=False)
    assert framed == b"123456789012345678901234567890,\n"


def test_json_array_with_a_lone_surrogate_escape_is_handled() -> None:
    try:
        framed = framing.frame_messages(b'["\\ud800"]', allow_empty_array=False)
    except framing.InvalidJson:
        return
    assert json.loads(framing.as_array(framed)) == ["\ud800"]


def test_records_round_trip_and_stop_at_damage() -> None:
    records = [
        Record(CREATE, 1, {"path": "/p", "x": [1, "ü"]}, b"", 0),
        Record(APPEND, 1, {"q": "seq"}, bytes(range(256)), 0),
        Record(APPEND, 1, {}, b"bytes in the data file only", 256, external=27),
        Record(APPEND_MANY, 0, {"parts": [[1, 283, 3], [2, 0, 2]]}, b"abcde"),
        Record(DELETE, 1, {"soft": False, "drop": [1]}),
    ]
    shares = [(i, p, bytes(data)) for i, p, data in records[3].parts()]
    assert shares == [(1, 283, b"abc"), (2, 0, b"de")]
    wire = b"".join(r.encode() for r in records)
    decoded = [record for record, _ in decode_records(wire)]
    # An external record's bytes stay out of the log: replay knows their length only.
    assert decoded[2] == Record(APPEND, 1, {}, b"", 256, external=27)
    assert decoded[2].size == records[2].size == 27
    records[2] = decoded[2]
    assert decoded == records
    for cut in range(len(wire)):
        prefix = [record for record, _ in decode_records(wire[:cut])]
        assert prefix == records[: len(prefix)]
