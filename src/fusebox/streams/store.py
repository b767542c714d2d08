"""Durable storage for stream logs: the storage contract and its local-file backend.

The contract (`LogStore`) is what the engine needs from storage: submit a record and learn
when it is durable, read a byte range of a stream, checkpoint, and on start recover the
last checkpoint plus every record after it. A Postgres backend for cluster mode fits the
same contract (records become rows, a checkpoint a transaction).

The file backend (`FileStore`):

- one shared write-ahead log (WAL), group-committed: records submitted while a flush is
  in progress form the next batch, which costs one write and one fdatasync whatever the
  number of streams it touches (per-stream fsyncs cap a server at 5-7k appends/s here);
- after the WAL is durable, each stream's bytes join that stream's in-memory tail; a tail
  is written to the stream's own data file (pwritev, unsynced) once it holds `tail_bytes`,
  when all tails together pass `buffer_bytes`, and before every checkpoint. Reads are
  served from the file and the tail, so the data files plus tails are the wire bytes.
  Writing out many tails is done a slice at a time, with the WAL writes queued meanwhile
  in between, so that commits are not held back for all of it;
- an append of `direct_bytes` or more is written to its data file and fdatasync'ed first;
  the WAL then records only its length (an "external" record). Its bytes reach the disk
  once instead of twice;
- a checkpoint writes out the tails, makes the data files written since the last one
  durable, writes the engine's snapshot, and drops the WAL segments the snapshot covers.
  Many files are made durable with one `syncfs` of their filesystem instead of an fsync
  each (Linux; see `sync_files`).

Why tails: writing every batch through to the data files costs an open file per stream
it touches. With 10,000 shape logs each getting one small append per batch, the writer
thread spent its time opening and closing descriptors (a bounded cache cannot hold them
all), holding the GIL the event loop needs: CPU per change doubled from 1,000 to 10,000
shapes. The WAL already holds every durable byte, so the data files may lag it until the
next checkpoint; recovery replays the WAL into them.

Why external appends: a shape's initial snapshot arrives as blocks of megabytes. Through
the WAL, each byte was written and synced in the WAL, then written again to the data file:
on this VM that was most of the sync process's CPU for a snapshot. Synced in the data file
before its length record is in the WAL, an external append keeps the rule that a record is
visible only once durable; if the process dies between the two, recovery trims the data
file back to its logged length.

Only the loop thread submits and reads; one writer thread does WAL writes and owns the
tails, another thread does checkpoints. Reads need no lock: the writer only extends a
tail, and swaps in a fresh one after its bytes are in the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from fusebox.limits import open_files_limit
from fusebox.streams.records import APPEND, APPEND_MANY, CREATE, DELETE, Record, decode_records

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"\A(\d{12})\.(wal|snapshot)\Z")


# From this many dirty data files on, a checkpoint syncs their whole filesystem at once.
# Measured here with 10,000 files of 2.5 KB dirty each: an fsync per file took 1.40 s
# (0.54 s of it CPU), one syncfs 0.12 s (2 ms CPU). A checkpoint of 10,000 shape logs,
# every 64 MiB of WAL, cost ~2 us per change the one-by-one way. syncfs also writes back
# other programs' dirty data on that filesystem, so a few files are still synced singly.
SYNCFS_MIN_FILES = 256
# Buffers one pwritev takes at most (1,024 on Linux).
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16
# Tails one writer-thread job writes out; WAL writes queued meanwhile run between jobs.
# A whole write-out in one job held every commit back until it ended: with 10,000 shape
# logs ~0.13 s (`bench/routing_loop.py --in-flight 1`), ~0.5 s beside a busy Postgres,
# and longer with more logs. 256 tails take ~2-13 ms.
_WRITE_OUT_SLICE = 256
# What a tail holds per chunk besides its bytes (the bytes object's header, rounded, and
# the list's slot). Counted with the bytes against `tail_bytes` and `buffer_bytes`, so
# that a stream of one-byte appends cannot hold 48 times its budget.
_CHUNK_COST = 48


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def sync_files(directory: Path, names: list[str]) -> None:
    """Make the named files of `directory` durable (those that exist), and its entries."""
    if len(names) >= SYNCFS_MIN_FILES and _syncfs is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs of {directory}: {os.strerror(error)}")
        finally:
            os.close(fd)
        return
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            _fsync(directory / name)
    _fsync(directory)


class StorageFailed(RuntimeError):
    """Storage could not make a record durable; nothing after it is acknowledged."""


@dataclass
class Recovered:
    snapshot: dict | None
    records: list[Record] = field(default_factory=list)


class LogStore(Protocol):
    async def open(self) -> Recovered: ...

    def attach(
        self, on_durable: Callable[[list[Record]], None], snapshot: Callable[[], dict]
    ) -> None: ...

    async def recovered(self, file_lengths: dict[int, int]) -> None: ...

    def submit(self, record: Record) -> asyncio.Future[None]: ...

    def read(self, stream_id: int, start: int, end: int) -> bytes: ...

    def forget(self, stream_id: int) -> None: ...

    async def close(self) -> None: ...


class _Tail:
    """Durable bytes of one stream not yet in its data file: `chunks` in order, from file
    offset `start` to `end`.

    The chunks are kept as they arrived and written with one `pwritev`, not copied into
    one growing buffer: a buffer grown an item at a time up to `tail_bytes` was
    reallocated and copied ~50 times on the way, and with 10,000 shape logs every copy
    missed the CPU caches (under cachegrind, ~10 last-level misses and 1,500
    instructions per change, the most memory traffic of any one thing the writer did).
    """

    __slots__ = ("chunks", "end", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.end = start
        self.chunks: list[bytes] = []

    def held(self) -> int:
        """The memory it holds, as counted against the limits (see `_CHUNK_COST`)."""
        return self.end - self.start + len(self.chunks) * _CHUNK_COST

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file's offsets, all within this tail."""
        pieces = []
        at = self.start
        # The writer may append meanwhile (never change a chunk); the range asked for is
        # durable, so its chunks are already here.
        for chunk in self.chunks:
            following = at + len(chunk)
            if following > start:
                pieces.append(chunk[max(0, start - at) : end - at])
                if following >= end:
                    break
            at = following
        return b"".join(pieces)


class _FileHandles:
    """A bounded LRU of open file descriptors, one cache per thread that uses it."""

    def __init__(self, directory: Path, flags: int, capacity: int) -> None:
        self._prefix = f"{directory}{os.sep}"  # not pathlib: this is on the write path
        self._flags = flags
        self._capacity = capacity
        self._open: OrderedDict[int, int] = OrderedDict()

    def holds(self, stream_id: int) -> bool:
        return stream_id in self._open

    def get(self, stream_id: int) -> int:
        fd = self._open.get(stream_id)
        if fd is not None:
            self._open.move_to_end(stream_id)
            return fd
        path = f"{self._prefix}{stream_id}.data"
        try:
            fd = os.open(path, self._flags, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._open:
                raise
            # Out of descriptors: the process's limit (often 1,024) can be below what both
            # caches and the sockets may hold together. Give back the older half of this
            # cache, keep it that small from now on, and try once more: a storage error
            # here would stop every write.
            for _ in range((len(self._open) + 1) // 2):
                os.close(self._open.popitem(last=False)[1])
            self._capacity = len(self._open) + 1  # with the one being opened
            fd = os.open(path, self._flags, 0o600)
        self._open[stream_id] = fd
        if len(self._open) > self._capacity:
            _, evicted = self._open.popitem(last=False)
            os.close(evicted)
        return fd

    def drop(self, stream_id: int) -> None:
        fd = self._open.pop(stream_id, None)
        if fd is not None:
            os.close(fd)

    def close_all(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])


def _log_failure(write_out: asyncio.Future[None]) -> None:
    if not write_out.cancelled() and write_out.exception() is not None:
        log.error(
            "writing stream tails to their data files failed; the store takes no more "
            "writes until the server restarts",
            exc_info=write_out.exception(),
        )


def _fsync(path: Path) -> None:
    """fsync a file or a directory (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_bytes: int = 64 * 1024 * 1024,
        # Descriptors the writer keeps open (None: half the process's open-files limit;
        # readers keep an eighth). See `_write_tails` and `fusebox.limits`.
        open_files: int | None = None,
        tail_bytes: int = 64 * 1024,
        # None: a segment's worth. The checkpoint at each segment's end writes out every
        # tail anyway, so a smaller budget only adds write-outs (with 10,000 shape logs a
        # write-out is 10,000 pwrites, ~0.15 s of CPU).
        buffer_bytes: int | None = None,
        direct_bytes: int = 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self._wal_dir = self.directory / "wal"
        self._data_dir = self.directory / "streams"
        self._segment_bytes = segment_bytes
        self._open_files = open_files
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="fusebox-wal")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="fusebox-checkpoint")
        self._queue: list[Record] = []
        self._encoded: list[bytes] = []
        self._batch: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Future[None] | None = None
        self._write_out: asyncio.Future[None] | None = None
        self._segment = 0
        self._wal_fd = -1
        self._wal_size = 0
        self._dirty: set[int] = set()
        self._failed: BaseException | None = None
        self._on_durable: Callable[[list[Record]], None] = lambda records: None
        self._snapshot: Callable[[], dict] = dict
        self._tail_bytes = tail_bytes
        self._buffer_bytes = segment_bytes if buffer_bytes is None else buffer_bytes
        self._direct_bytes = direct_bytes
        self._tails: dict[int, _Tail] = {}
        self._buffered = 0
        limit = open_files_limit()
        writing = open_files if open_files is not None else max(64, limit // 2)
        reading = open_files if open_files is not None else max(64, limit // 8)
        self._write_handles = _FileHandles(self._data_dir, os.O_RDWR | os.O_CREAT, writing)
        self._read_handles = _FileHandles(self._data_dir, os.O_RDONLY, reading)

    # -- start-up ---------------------------------------------------------------------

    async def open(self) -> Recovered:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._recover)

    def _recover(self) -> Recovered:
        self._wal_dir.mkdir(parents=True, exist_ok=True)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        snapshots, segments = self._listing()
        snapshot = None
        first_segment = 0
        if snapshots:
            first_segment = snapshots[-1]
            snapshot = orjson.loads((self._wal_dir / f"{first_segment:012d}.snapshot").read_bytes())
        records: list[Record] = []
        for number in segments:
            if number < first_segment:
                continue
            buffer = (self._wal_dir / f"{number:012d}.wal").read_bytes()
            for record, _ in decode_records(buffer):
                self._apply_files(record)
                records.append(record)
        self._segment = max([first_segment, *segments], default=0)
        return Recovered(snapshot, records)

    def _listing(self) -> tuple[list[int], list[int]]:
        snapshots, segments = [], []
        for entry in os.listdir(self._wal_dir):
            match = _SEGMENT.match(entry)
            if match:
                target = snapshots if match.group(2) == "snapshot" else segments
                target.append(int(match.group(1)))
        return sorted(snapshots), sorted(segments)

    def attach(
        self, on_durable: Callable[[list[Record]], None], snapshot: Callable[[], dict]
    ) -> None:
        """Tell the store how to apply durable records to state and how to snapshot it."""
        self._on_durable = on_durable
        self._snapshot = snapshot

    async def recovered(self, file_lengths: dict[int, int]) -> None:
        """Trim data files to what recovery proved durable, then checkpoint at once."""
        loop = asyncio.get_running_loop()

        def trim() -> None:
            present = {int(p.stem) for p in self._data_dir.glob("*.data") if p.stem.isdigit()}
            for stream_id in present - file_lengths.keys():
                (self._data_dir / f"{stream_id}.data").unlink(missing_ok=True)
            for stream_id, length in file_lengths.items():
                fd = self._write_handles.get(stream_id)
                if os.fstat(fd).st_size != length:
                    os.ftruncate(fd, length)
            self._write_handles.close_all()

        await loop.run_in_executor(self._writer, trim)
        self._dirty = set(file_lengths)
        await self._roll_segment()
        await self._run_checkpoint(self._snapshot(), self._segment)

    # -- writes -------------------------------------------------------------------------

    def submit(self, record: Record) -> asyncio.Future[None]:
        """Queue a record; the future resolves once it is durable and applied to state."""
        if self._failed is not None:
            raise StorageFailed("storage has failed; restart the server") from self._failed
        if record.kind == APPEND and len(record.data) >= self._direct_bytes:
            record.external = len(record.data)
        self._queue.append(record)
        self._encoded.append(record.encode())
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return self._batch

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                records, encoded, batch = self._queue, self._encoded, self._batch
                self._queue, self._encoded, self._batch = [], [], None
                assert batch is not None
                try:
                    await loop.run_in_executor(self._writer, self._write, records, encoded)
                except BaseException as exc:
                    self._failed = exc
                    batch.set_exception(StorageFailed(f"write-ahead log write failed: {exc}"))
                    if self._batch is not None:
                        self._batch.set_exception(StorageFailed("storage has failed"))
                    raise
                for record in records:
                    if record.kind == APPEND_MANY:
                        self._dirty.update(part[0] for part in record.meta["parts"])
                    else:
                        self._dirty.add(record.stream_id)
                self._on_durable(records)
                batch.set_result(None)
                if self._buffered >= self._buffer_bytes and self._write_out is None:
                    self._write_out = asyncio.ensure_future(self._write_out_tails())
                    # Nothing awaits it: a failure is logged (and stops the store).
                    self._write_out.add_done_callback(_log_failure)
                if self._wal_size >= self._segment_bytes and self._checkpoint is None:
                    snapshot = self._snapshot()
                    await self._roll_segment()
                    self._checkpoint = asyncio.ensure_future(
                        self._run_checkpoint(snapshot, self._segment)
                    )
        finally:
            self._flusher = None

    def _write(self, records: list[Record], encoded: list[bytes]) -> None:
        # External appends: their bytes durable in the data files before the WAL says so.
        synced: set[int] = set()
        for record in records:
            if record.external:
                self._pwrite(record.stream_id, record.data, record.file_position)
                synced.add(record.stream_id)
        for stream_id in synced:
            os.fdatasync(self._write_handles.get(stream_id))
        payload = b"".join(encoded)
        view = memoryview(payload)
        while view:
            written = os.write(self._wal_fd, view)
            view = view[written:]
        os.fdatasync(self._wal_fd)
        self._wal_size += len(payload)
        for record in records:
            if record.external:
                # Its bytes are in the file: the tail before them joins them there, or a
                # read spanning both would stop at the tail's end.
                self._write_tail(record.stream_id)
            elif record.kind == APPEND and record.data:
                self._buffer(record.stream_id, record.data, record.file_position)
            elif record.kind == APPEND_MANY:
                self._buffer_parts(record)
            else:
                self._apply_files(record)

    def _buffer_parts(self, record: Record) -> None:
        """`_buffer` each stream's share of an APPEND_MANY record, the usual case inline: a
        record can name 10,000 streams, each extending its tail by an item or two."""
        tails, tail_bytes, data = self._tails, self._tail_bytes, record.data
        added = offset = 0
        for stream_id, position, length in record.meta["parts"]:
            following = offset + length
            tail = tails.get(stream_id)
            if (
                tail is not None
                and tail.end == position
                and tail.end - tail.start + length + (len(tail.chunks) + 1) * _CHUNK_COST
                < tail_bytes
            ):
                # A slice of the record's bytes: one small object, which is what the tail
                # keeps (a view would be larger, and keep the whole record alive).
                tail.chunks.append(data[offset:following])
                tail.end = position + length
                added += length + _CHUNK_COST
            else:
                self._buffer(stream_id, memoryview(data)[offset:following], position)
            offset = following
        self._buffered += added

    def _buffer(self, stream_id: int, data: bytes | memoryview, position: int) -> None:
        tail = self._tails.get(stream_id)
        if tail is not None and tail.end != position:
            self._write_tail(stream_id)  # not contiguous (never expected)
            tail = None
        if tail is None:
            if len(data) >= self._tail_bytes:
                self._pwrite(stream_id, data, position)  # a tail's worth: straight to the file
                return
            tail = self._tails[stream_id] = _Tail(position)
        full = tail.held() + len(data) + _CHUNK_COST >= self._tail_bytes
        # A view stays only until its write: it keeps its whole record alive.
        tail.chunks.append(data if full or type(data) is bytes else bytes(data))
        tail.end = position + len(data)
        self._buffered += len(data) + _CHUNK_COST
        if full:
            self._write_tail(stream_id)  # with the data: one pwritev, nothing copied

    def _write_tail(self, stream_id: int) -> None:
        tail = self._tails.get(stream_id)
        if tail is None:
            return
        fd = self._write_handles.get(stream_id)
        chunks, position = tail.chunks, tail.start
        for first in range(0, len(chunks), _IOV_MAX):
            batch = chunks[first : first + _IOV_MAX]
            size = sum(map(len, batch))
            written = os.pwritev(fd, batch, position)
            if written < size:  # a short write (rare on a regular file): the rest at once
                self._pwrite(stream_id, b"".join(batch)[written:], position + written)
            position += size
        # Only now that the bytes are in the file: a reader that finds no tail reads the
        # file, and one holding this tail still finds its bytes in it.
        del self._tails[stream_id]
        self._buffered -= tail.held()

    async def _write_out_tails(self) -> None:
        """Write every tail there is now to its data file, `_WRITE_OUT_SLICE` at a time,
        so that WAL writes (commits) go on between the slices."""
        loop = asyncio.get_running_loop()
        try:
            order = await loop.run_in_executor(self._writer, self._write_order)
            for first in range(0, len(order), _WRITE_OUT_SLICE):
                chunk = order[first : first + _WRITE_OUT_SLICE]
                await loop.run_in_executor(self._writer, self._write_tails, chunk)
        except Exception as exc:  # (not a cancellation: the tails are still whole)
            self._failed = exc  # as after a failed WAL write: the store takes no more
            raise
        finally:
            if self._write_out is asyncio.current_task():
                self._write_out = None

    async def _write_out_all(self) -> None:
        """Every tail that exists now in its file: after a write-out already running
        (which listed its tails when it began), one more for what came since."""
        while self._write_out is not None:
            await asyncio.shield(self._write_out)
        self._write_out = asyncio.ensure_future(self._write_out_tails())
        await asyncio.shield(self._write_out)

    def _write_order(self) -> list[int]:
        # Streams whose descriptor is open first. In tail order, a cache smaller than the
        # set of tails would evict each descriptor just before its next use and open every
        # file on every write-out; this way the cache's worth of them is reused each time.
        held = self._write_handles.holds
        return sorted(self._tails, key=lambda stream_id: not held(stream_id))

    def _write_tails(self, stream_ids: list[int]) -> None:
        """Write out these streams' tails (on the writer thread)."""
        for stream_id in stream_ids:
            self._write_tail(stream_id)

    def _pwrite(self, stream_id: int, data: bytes | bytearray | memoryview, position: int) -> None:
        fd = self._write_handles.get(stream_id)
        with memoryview(data) as view:
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written

    def _apply_files(self, record: Record) -> None:
        if record.kind in (APPEND, CREATE):
            if record.data and not record.external:
                self._pwrite(record.stream_id, record.data, record.file_position)
            else:
                self._write_handles.get(record.stream_id)  # the file exists from creation on
        elif record.kind == APPEND_MANY:
            for stream_id, position, data in record.parts():
                self._pwrite(stream_id, data, position)
        elif record.kind == DELETE:
            for stream_id in record.meta.get("drop", ()):
                tail = self._tails.pop(stream_id, None)
                if tail is not None:
                    self._buffered -= tail.held()
                self._write_handles.drop(stream_id)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._data_dir / f"{stream_id}.data")

    async def _roll_segment(self) -> None:
        def roll() -> None:
            if self._wal_fd >= 0:
                os.close(self._wal_fd)
            self._segment += 1
            path = self._wal_dir / f"{self._segment:012d}.wal"
            self._wal_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._wal_size = 0
            _fsync(self._wal_dir)

        await asyncio.get_running_loop().run_in_executor(self._writer, roll)

    async def _run_checkpoint(self, snapshot: dict, segment: int) -> None:
        """Make `snapshot` the recovery point for everything before WAL `segment`."""
        dirty, self._dirty = self._dirty, set()
        # The tails hold bytes of the segments this checkpoint drops: into the files first.
        # On the writer thread, which owns the tails, after every write already queued.
        await self._write_out_all()

        def checkpoint() -> None:
            sync_files(self._data_dir, [f"{stream_id}.data" for stream_id in dirty])
            final = self._wal_dir / f"{segment:012d}.snapshot"
            temporary = final.with_suffix(".tmp")
            with open(temporary, "wb") as file:
                file.write(orjson.dumps(snapshot))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
            _fsync(self._wal_dir)
            snapshots, segments = self._listing()
            for number in segments:
                if number < segment:
                    (self._wal_dir / f"{number:012d}.wal").unlink(missing_ok=True)
            for number in snapshots:
                if number < segment:
                    (self._wal_dir / f"{number:012d}.snapshot").unlink(missing_ok=True)

        try:
            await asyncio.get_running_loop().run_in_executor(self._checkpointer, checkpoint)
        finally:
            self._checkpoint = None

    # -- reads --------------------------------------------------------------------------

    def read(self, stream_id: int, start: int, end: int) -> bytes:
        """Bytes [start, end) of a stream's own data file; only durable ranges are asked for."""
        if end <= start:
            return b""
        tail = self._tails.get(stream_id)
        if tail is None or end <= tail.start:
            return os.pread(self._read_handles.get(stream_id), end - start, start)
        if start >= tail.start:
            return tail.read(start, end)
        head = os.pread(self._read_handles.get(stream_id), tail.start - start, start)
        return head + tail.read(tail.start, end)

    def forget(self, stream_id: int) -> None:
        self._read_handles.drop(stream_id)

    # -- shutdown -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        if self._write_out is not None:
            with contextlib.suppress(Exception):
                await self._write_out
        if self._failed is None and self._wal_fd >= 0:
            snapshot = self._snapshot()
            await self._roll_segment()
            await self._run_checkpoint(snapshot, self._segment)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write_handles.close_all)
        self._read_handles.close_all()
        if self._wal_fd >= 0:
            os.close(self._wal_fd)
            self._wal_fd = -1
        self._writer.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
