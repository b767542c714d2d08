"""The log engine: streams, appends, producers, forks, expiry and live wake-ups.

The engine holds state and knows nothing of HTTP. Every change is decided synchronously
on the event loop thread (so decisions are serialised per stream and producer without
locks), written as a self-describing record, and acknowledged once the store reports it
durable. The same two functions apply a record live and on recovery: `_apply` for
the registry and pending state at decision time, `_apply_durable` for what readers see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from fusebox.streams import framing
from fusebox.streams.errors import (
    ConfigurationConflict,
    ContentTypeConflict,
    InvalidRequest,
    ProducerSequenceGap,
    SequenceConflict,
    StaleProducerEpoch,
    StreamClosed,
    StreamGone,
    StreamNotFound,
)
from fusebox.streams.model import Stream, StreamConfig, Version
from fusebox.streams.records import APPEND, APPEND_MANY, CREATE, DELETE, Record
from fusebox.streams.store import LogStore

# Reads return at most this much per response: large enough for catch-up throughput,
# small enough that one reader does not hold the loop for long.
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
# Batches larger than this are not kept in memory for live readers; they read the file.
RECENT_LIMIT = 256 * 1024


@dataclass(slots=True)
class Producer:
    id: str
    epoch: int
    seq: int


@dataclass(slots=True)
class ForkSpec:
    source: str
    offset: int | None
    sub_offset: int


@dataclass(slots=True)
class AppendOutcome:
    next_position: int
    closed: bool
    duplicate: bool
    producer: Producer | None


@dataclass(slots=True)
class Chunk:
    data: bytes
    next_position: int
    up_to_date: bool
    closed: bool


class StreamEngine:
    def __init__(
        self,
        store: LogStore,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._chunk_bytes = chunk_bytes
        self._clock = clock
        self._streams: dict[str, Stream] = {}
        self._by_id: dict[int, Stream] = {}
        # Streams whose creation is durable and which no durable delete has dropped.
        self._durable: dict[int, Stream] = {}
        self._next_id = 1
        self._reaper: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[Stream, int], None]] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        recovered = await self._store.open()
        if recovered.snapshot is not None:
            self._load_snapshot(recovered.snapshot)
        for record in recovered.records:
            self._apply(record)
            self._apply_durable(record)
        # Reads renew sliding TTLs in memory only; after a restart nobody can tell when the
        # last one happened, so count the restart as an access: expiry may come later than
        # before the crash, never earlier than a client was promised.
        now = self._clock()
        for stream in self._by_id.values():
            stream.ready = None
            stream.last_access = max(stream.last_access, now)
        self._store.attach(self._on_durable, self.snapshot)
        lengths = {s.id: s.durable.tail - s.base for s in self._durable.values()}
        await self._store.recovered(lengths)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_periodically())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for stream in self._by_id.values():
            self._wake(stream)
        await self._store.close()

    # -- lookups ------------------------------------------------------------------------

    def lookup(self, path: str, *, touch: bool = True) -> Stream:
        """The live stream at `path`; expired streams are reaped here and are not found."""
        stream = self._streams.get(path)
        if stream is None:
            raise StreamNotFound(f"no stream at {path}")
        if stream.gone:
            raise StreamGone(f"stream {path} was deleted")
        now = self._clock()
        if stream.expired(now):
            self._delete(stream)
            raise StreamNotFound(f"no stream at {path} (it expired)")
        if touch:
            stream.last_access = now
        return stream

    async def ready(self, stream: Stream) -> None:
        if stream.ready is not None:
            await asyncio.shield(stream.ready)

    # -- create -------------------------------------------------------------------------

    async def create(
        self,
        path: str,
        config: StreamConfig | None,
        body: bytes,
        closed: bool,
        fork: ForkSpec | None = None,
    ) -> tuple[Stream, bool]:
        """Create the stream, or confirm an identical one exists; True when created."""
        existing = self._streams.get(path)
        if existing is not None and existing.expired(self._clock()) and not existing.gone:
            self._delete(existing)
            existing = None
        parent, base, config = self._resolve_fork(fork, config)
        if existing is not None:
            if existing.gone:
                raise ConfigurationConflict(f"stream {path} is deleted but still forked from")
            if not self._same_stream(existing, config, closed, parent, base):
                raise ConfigurationConflict(
                    f"stream {path} already exists with a different configuration"
                )
            await self.ready(existing)
            existing.last_access = self._clock()
            return existing, False
        is_json = framing.is_json(config.content_type)
        if is_json and body:
            try:
                body = framing.frame_messages(body, allow_empty_array=True)
            except framing.InvalidJson as exc:
                raise InvalidRequest(str(exc)) from None
        now = self._clock()
        meta = {
            "path": path,
            "ct": config.content_type,
            "ttl": config.ttl,
            "exp": config.expires_at,
            "expts": config.expires_ts,
            "at": now,
            "from": parent.id if parent is not None else None,
            "base": base,
            "c": closed,
        }
        record = Record(CREATE, self._next_id, meta, body, 0)
        self._next_id += 1
        stream = self._apply(record)
        await self._commit(stream, record)
        return stream, True

    def _resolve_fork(
        self, fork: ForkSpec | None, config: StreamConfig | None
    ) -> tuple[Stream | None, int, StreamConfig]:
        if fork is None:
            if config is None:
                config = StreamConfig("application/octet-stream")
            return None, 0, config
        source = self._streams.get(fork.source)
        if source is None or (source.expired(self._clock()) and not source.gone):
            raise StreamNotFound(f"fork source {fork.source} does not exist")
        if source.gone:
            raise ConfigurationConflict(f"fork source {fork.source} was deleted")
        if source.ready is not None:
            raise StreamNotFound(f"fork source {fork.source} is still being created")
        tail = source.durable.tail
        position = tail if fork.offset is None else fork.offset
        if position > tail:
            raise InvalidRequest(f"fork offset is beyond the end of {fork.source}")
        if source.is_json and not self._at_boundary(source, position):
            raise InvalidRequest("fork offset is inside a message of a JSON stream")
        if fork.sub_offset:
            position = self._advance(source, position, fork.sub_offset)
        if config is None:
            config = StreamConfig(source.config.content_type)
        elif config.content_type.lower() != source.config.content_type.lower():
            raise ContentTypeConflict(
                f"fork content type {config.content_type} differs from the source's "
                f"{source.config.content_type}"
            )
        if config.ttl is None and config.expires_at is None:
            config.ttl = source.config.ttl
            config.expires_at = source.config.expires_at
            config.expires_ts = source.config.expires_ts
        return source, position, config

    def _advance(self, source: Stream, position: int, count: int) -> int:
        """The position `count` bytes (or JSON messages) after `position` in `source`."""
        tail = source.durable.tail
        if not source.is_json:
            if position + count > tail:
                raise InvalidRequest("fork sub-offset is beyond the end of the source")
            return position + count
        data = self.read_range(source, position, tail)
        skipped = framing.skip_messages(data, count)
        if skipped is None:
            raise InvalidRequest("fork sub-offset counts more messages than the source has")
        return position + skipped

    @staticmethod
    def _same_stream(
        stream: Stream, config: StreamConfig, closed: bool, parent: Stream | None, base: int
    ) -> bool:
        if not stream.config.matches(config) or stream.pending.closed != closed:
            return False
        if parent is None:
            return stream.parent is None
        return stream.parent is parent and stream.base == base

    # -- append -------------------------------------------------------------------------

    async def append(
        self,
        stream: Stream,
        body: bytes,
        content_type: str | None,
        *,
        close: bool = False,
        seq: str | None = None,
        producer: Producer | None = None,
    ) -> AppendOutcome:
        await self.ready(stream)
        if stream.gone:
            raise StreamGone(f"stream {stream.path} was deleted")
        state = stream.pending
        known = state.producers.get(producer.id) if producer is not None else None
        if producer is not None and known is not None and producer.epoch < known[0]:
            raise StaleProducerEpoch(
                f"producer epoch {producer.epoch} is older than the current epoch {known[0]}",
                known[0],
            )
        if state.closed:
            if producer is not None and state.closed_by == (
                producer.id,
                producer.epoch,
                producer.seq,
            ):
                return await self._settled(stream, True, producer)
            if close and not body and producer is None:
                return await self._settled(stream, False, None)
            raise StreamClosed(f"stream {stream.path} is closed", state.tail)
        if body:
            if content_type is None:
                raise InvalidRequest("Content-Type is required to append data")
            if _media_type(content_type) != _media_type(stream.config.content_type):
                raise ContentTypeConflict(
                    f"Content-Type {content_type} does not match the stream's "
                    f"{stream.config.content_type}"
                )
        elif not close:
            raise InvalidRequest("an append needs a body (or Stream-Closed: true to close)")
        if producer is not None:
            if known is None or producer.epoch > known[0]:
                if producer.seq != 0:
                    expected_from = "a new producer" if known is None else "a new epoch"
                    raise InvalidRequest(f"{expected_from} must start at Producer-Seq 0")
            elif producer.seq <= known[1]:
                return await self._settled(stream, False, Producer(producer.id, known[0], known[1]))
            elif producer.seq > known[1] + 1:
                raise ProducerSequenceGap(
                    f"expected Producer-Seq {known[1] + 1}, got {producer.seq}",
                    known[1] + 1,
                    producer.seq,
                )
        if seq is not None and state.last_seq is not None and seq <= state.last_seq:
            raise SequenceConflict(
                f"Stream-Seq {seq!r} does not sort after the last one, {state.last_seq!r}"
            )
        if body and stream.is_json:
            try:
                body = framing.frame_messages(body, allow_empty_array=False)
            except framing.InvalidJson as exc:
                raise InvalidRequest(str(exc)) from None
        meta: dict = {}
        if close:
            meta["c"] = True
        if seq is not None:
            meta["q"] = seq
        if producer is not None:
            meta["pr"] = (producer.id, producer.epoch, producer.seq)
        record = Record(APPEND, stream.id, meta, body, state.tail - stream.base)
        self._apply(record)
        end = stream.pending.tail  # this append's end; appends queued behind it move the tail
        await self._commit(stream, record)
        return AppendOutcome(end, close or state.closed, False, producer)

    def append_framed(self, stream: Stream, framed: bytes) -> tuple[int, asyncio.Future[None]]:
        """Append already-framed bytes from trusted code (the sync engine's shape logs).

        Returns the new pending tail and the commit to await; submitting synchronously lets
        a caller queue many appends in order before the first is durable.
        """
        if stream.gone or stream.pending.closed:
            raise StreamClosed(f"stream {stream.path} is closed", stream.pending.tail)
        record = Record(APPEND, stream.id, {}, framed, stream.pending.tail - stream.base)
        self._apply(record)
        commit = self._store.submit(record)
        stream.last_commit = commit
        return stream.pending.tail, commit

    def append_framed_many(self, appends: list[tuple[Stream, bytes]]) -> asyncio.Future[None]:
        """`append_framed` to many streams at once, as one record; returns its commit.

        One replicated transaction can reach thousands of shape logs with an item or two
        each. As one record it costs one encoding, one entry in the writer's batch and one
        durable callback, where separate appends cost each of those per stream.
        """
        for stream, _ in appends:
            if stream.gone or stream.pending.closed:
                raise StreamClosed(f"stream {stream.path} is closed", stream.pending.tail)
        parts = []
        streams = []
        for stream, framed in appends:
            # What `_apply` does on replay, inline: thousands of streams per call.
            pending = stream.pending
            parts.append((stream.id, pending.tail - stream.base, len(framed)))
            pending.tail += len(framed)
            streams.append(stream)
        data = b"".join([framed for _, framed in appends])
        record = Record(APPEND_MANY, 0, {"parts": parts}, data, streams=streams)
        commit = self._store.submit(record)
        for stream in streams:
            stream.last_commit = commit
        return commit

    async def _settled(
        self, stream: Stream, closed_by_this: bool, producer: Producer | None
    ) -> AppendOutcome:
        """Answer a duplicate only once what it duplicates is durable."""
        if stream.last_commit is not None and not stream.last_commit.done():
            await asyncio.shield(stream.last_commit)
        return AppendOutcome(stream.durable.tail, stream.durable.closed, True, producer)

    # -- delete -------------------------------------------------------------------------

    async def delete(self, path: str) -> None:
        stream = self.lookup(path, touch=False)
        await self.ready(stream)
        self._delete(stream)  # decides, applies and submits the record: await, not resubmit
        await asyncio.shield(stream.last_commit)

    def _delete(self, stream: Stream) -> Record:
        """Decide and apply a delete: soft while forks read it, else drop (cascading)."""
        drop: list[int] = []
        soft = stream.children > 0
        if not soft:
            drop.append(stream.id)
            parent = stream.parent
            child = stream
            while parent is not None and parent.gone and parent.children == 1:
                drop.append(parent.id)
                child, parent = parent, parent.parent
            del child
        record = Record(DELETE, stream.id, {"soft": soft, "drop": drop})
        self._apply(record)
        stream.last_commit = self._store.submit(record)
        return record

    # -- applying records ---------------------------------------------------------------

    def _apply(self, record: Record) -> Stream:
        """Registry and pending-state effects of a record (live and on replay)."""
        if record.kind == APPEND:
            stream = self._by_id[record.stream_id]
            stream.pending.apply_append(record.meta, record.size)
            return stream
        if record.kind == APPEND_MANY:
            by_id = self._by_id
            for stream_id, _, length in record.meta["parts"]:
                by_id[stream_id].pending.tail += length
            return by_id[record.meta["parts"][0][0]]
        if record.kind == CREATE:
            meta = record.meta
            parent = self._by_id.get(meta["from"]) if meta["from"] is not None else None
            config = StreamConfig(meta["ct"], meta["ttl"], meta["exp"], meta["expts"])
            stream = Stream(
                record.stream_id,
                meta["path"],
                config,
                meta["at"],
                parent,
                meta["base"],
                framing.is_json(meta["ct"]),
            )
            stream.pending.apply_append({"c": meta["c"]}, len(record.data))
            stream.ready = asyncio.get_event_loop().create_future()
            if parent is not None:
                parent.children += 1
            self._streams[stream.path] = stream
            self._by_id[stream.id] = stream
            self._next_id = max(self._next_id, stream.id + 1)
            return stream
        stream = self._by_id[record.stream_id]
        if record.meta["soft"]:
            stream.gone = True
        for stream_id in record.meta["drop"]:
            dropped = self._by_id.pop(stream_id)
            if self._streams.get(dropped.path) is dropped:
                del self._streams[dropped.path]
            dropped.gone = True
            if dropped.parent is not None:
                dropped.parent.children -= 1
        return stream

    def _on_durable(self, records: list[Record]) -> None:
        for record in records:
            self._apply_durable(record)

    def _apply_durable(self, record: Record) -> None:
        """What readers see of a record, once it is on disk."""
        if record.kind == APPEND:
            stream = self._by_id.get(record.stream_id)
            if stream is None:
                return
            start = stream.durable.tail
            stream.durable.apply_append(record.meta, record.size)
            self._publish(stream, start, record.data)
        elif record.kind == APPEND_MANY:
            by_id, listeners, data = self._by_id, self.listeners, record.data
            parts = record.meta["parts"]
            streams = record.streams or [by_id.get(part[0]) for part in parts]
            offset = 0
            for stream, (_, position, length) in zip(streams, parts, strict=True):
                # Skip a stream dropped since (`_apply` of its delete marks it gone and
                # takes it out of the registry; a soft-deleted one is still there).
                if stream is not None and (not stream.gone or by_id.get(stream.id) is stream):
                    # The durable tail, as records apply in order: from the record, not
                    # the old tail's int (one object fewer per stream, thousands per call).
                    start = stream.base + position
                    stream.durable.tail = start + length
                    if stream.waiters or listeners:
                        self._publish(stream, start, data[offset : offset + length])
                    else:
                        stream.recent = None
                offset += length
        elif record.kind == CREATE:
            stream = self._by_id.get(record.stream_id)
            if stream is None:
                return
            stream.durable.apply_append({"c": record.meta["c"]}, len(record.data))
            self._durable[stream.id] = stream
            if stream.ready is not None and not stream.ready.done():
                stream.ready.set_result(None)
            stream.ready = None
            for listener in self.listeners:
                listener(stream, stream.base)
        else:
            stream = self._durable.get(record.stream_id)
            if stream is not None and record.meta["soft"]:
                stream.durable_gone = True
            for stream_id in record.meta["drop"]:
                dropped = self._durable.pop(stream_id, None)
                self._store.forget(stream_id)
                if dropped is not None:
                    dropped.recent = None
                    self._wake(dropped)
            if stream is not None:
                self._wake(stream)

    def _publish(self, stream: Stream, start: int, data: bytes) -> None:
        if stream.waiters:
            recent = stream.recent
            if recent is not None and recent[0] + len(recent[1]) == start:
                joined = recent[1] + data
                if len(joined) <= RECENT_LIMIT:
                    stream.recent = (recent[0], joined)
                else:
                    stream.recent = (start, data) if len(data) <= RECENT_LIMIT else None
            else:
                stream.recent = (start, data) if len(data) <= RECENT_LIMIT else None
            self._wake(stream)
        else:
            stream.recent = None
        for listener in self.listeners:
            listener(stream, start)

    async def _commit(self, stream: Stream, record: Record) -> None:
        commit = self._store.submit(record)
        stream.last_commit = commit
        # The request may be cancelled (its client left); the commit must still happen.
        await asyncio.shield(commit)

    # -- reads --------------------------------------------------------------------------

    def read(self, stream: Stream, position: int, max_bytes: int | None = None) -> Chunk:
        """Durable bytes from `position`, ending on a message boundary for JSON streams."""
        tail = stream.durable.tail
        if position > tail:
            raise InvalidRequest("offset is beyond the end of the stream")
        if stream.is_json and not self._at_boundary(stream, position):
            raise InvalidRequest("offset is inside a message; use an offset this server issued")
        limit = self._chunk_bytes if max_bytes is None else max_bytes
        end = min(tail, position + limit)
        data = self.read_range(stream, position, end)
        if stream.is_json and end < tail:
            cut = framing.whole_messages(data)
            while cut == 0 and end < tail:
                # One message larger than the chunk size: send it whole.
                end = min(tail, end + limit)
                data = self.read_range(stream, position, end)
                cut = framing.whole_messages(data)
            data = data[:cut]
            end = position + cut
        closed = stream.durable.closed and end == tail
        return Chunk(data, end, end == tail, closed)

    def _at_boundary(self, stream: Stream, position: int) -> bool:
        """True when `position` starts a message of a JSON stream (or is its tail)."""
        if position == 0 or position >= stream.durable.tail:
            return True
        if position < len(framing.SEPARATOR):
            return False  # no message is shorter than its separator
        return self.read_range(stream, position - 2, position) == framing.SEPARATOR

    def read_range(self, stream: Stream, start: int, end: int) -> bytes:
        """Bytes [start, end) in `stream`'s offset space, stitched across fork ancestors."""
        if start >= end:
            return b""
        parts = []
        if start < stream.base:
            assert stream.parent is not None
            parts.append(self.read_range(stream.parent, start, min(end, stream.base)))
            start = stream.base
            if start >= end:
                return parts[0]
        recent = stream.recent
        if recent is not None and recent[0] <= start and end <= recent[0] + len(recent[1]):
            own = recent[1][start - recent[0] : end - recent[0]]
        else:
            own = self._store.read(stream.id, start - stream.base, end - stream.base)
        if not parts:
            return own
        parts.append(own)
        return b"".join(parts)

    async def wait(self, stream: Stream, position: int, timeout: float) -> bool:
        """Wait until durable bytes exist past `position`, the stream closes, or it goes."""
        if stream.durable.tail > position or stream.durable.closed or stream.gone:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        if stream.waiters is None:
            stream.waiters = set()
        stream.waiters.add(waiter)
        timer = loop.call_later(timeout, _expire_waiter, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            if stream.waiters is not None:
                stream.waiters.discard(waiter)

    def _wake(self, stream: Stream) -> None:
        waiters = stream.waiters
        if waiters:
            stream.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

    # -- expiry -------------------------------------------------------------------------

    async def _reap_periodically(self, every: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.reap()

    def reap(self) -> int:
        """Delete every expired stream now; returns how many were reaped."""
        now = self._clock()
        expired = [s for s in self._streams.values() if not s.gone and s.expired(now)]
        for stream in expired:
            if stream.ready is None and self._streams.get(stream.path) is stream:
                self._delete(stream)
        return len(expired)

    # -- snapshots ----------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Durable state only: a checkpoint must never claim what the log has not got."""
        streams = []
        for stream in self._durable.values():
            durable = stream.durable
            config = stream.config
            streams.append(
                {
                    "id": stream.id,
                    "path": stream.path,
                    "ct": config.content_type,
                    "ttl": config.ttl,
                    "exp": config.expires_at,
                    "expts": config.expires_ts,
                    "at": stream.created_at,
                    "from": stream.parent.id if stream.parent is not None else None,
                    "base": stream.base,
                    "tail": durable.tail,
                    "closed": durable.closed,
                    "closed_by": durable.closed_by,
                    "producers": durable.producers,
                    "seq": durable.last_seq,
                    "gone": stream.durable_gone,
                    "access": stream.last_access,
                }
            )
        return {"version": 1, "next_id": self._next_id, "streams": streams}

    def _load_snapshot(self, snapshot: dict) -> None:
        self._next_id = snapshot["next_id"]
        for entry in sorted(snapshot["streams"], key=lambda e: e["id"]):
            parent = self._by_id.get(entry["from"]) if entry["from"] is not None else None
            config = StreamConfig(entry["ct"], entry["ttl"], entry["exp"], entry["expts"])
            stream = Stream(
                entry["id"],
                entry["path"],
                config,
                entry["at"],
                parent,
                entry["base"],
                framing.is_json(entry["ct"]),
            )
            closed_by = tuple(entry["closed_by"]) if entry["closed_by"] else None
            producers = {k: (v[0], v[1]) for k, v in entry["producers"].items()}
            stream.durable = Version(
                entry["tail"], entry["closed"], closed_by, producers, entry["seq"]
            )
            stream.pending = stream.durable.copy()
            stream.gone = stream.durable_gone = entry["gone"]
            stream.last_access = entry["access"]
            if parent is not None:
                parent.children += 1
            self._by_id[stream.id] = stream
            self._durable[stream.id] = stream
            if not stream.gone or stream.path not in self._streams:
                self._streams[stream.path] = stream

    # -- introspection ------------------------------------------------------------------

    def live_streams(self, prefix: str = "") -> list[Stream]:
        """Streams under `prefix` that are neither deleted nor expired."""
        now = self._clock()
        return [
            stream
            for path, stream in list(self._streams.items())
            if path.startswith(prefix) and not stream.gone and not stream.expired(now)
        ]

    def __len__(self) -> int:
        return len(self._streams)


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _expire_waiter(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
