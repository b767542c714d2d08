"""A shape's log: its items in a stream of the log engine, addressed by Electric offsets.

Items are stored as framed JSON (compact item plus `,\\n`, the engine's JSON framing), so
a response is a byte range wrapped in `[ ]` with no parsing. Electric offsets (`0_N` for
snapshot chunk N, `LSN_op` for changes) map to byte positions through boundaries: one at
each snapshot chunk end, each transaction end and each chunk cut. Clients only send back
offsets we returned, and those are all boundaries.

A chunk is cut after the item that takes it past `chunk_bytes`, so no response holds much
more than that. Boundaries become visible only once their bytes are durable, in order, so
no reader sees a position the engine could still lose. `rebuild` derives the same
boundaries from the stored items after a restart, by the same rules.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from array import array

import orjson

from fusebox.streams.engine import StreamEngine
from fusebox.streams.framing import SEPARATOR
from fusebox.streams.model import Stream
from fusebox.sync.log_items import control_item

INFINITY = 2**63 - 1
BEFORE_ALL = (-1, 0)
Offset = tuple[int, int]
# (offset, end position, whether a chunk ends there)
Boundary = tuple[Offset, int, bool]


def format_offset(offset: Offset) -> str:
    if offset == BEFORE_ALL:
        return "-1"
    tx, op = offset
    return f"{tx}_{'inf' if op == INFINITY else op}"


def parse_offset(text: str) -> Offset:
    if text == "-1":
        return BEFORE_ALL
    tx, sep, op = text.partition("_")
    if not sep or not tx.isdigit() or not (op.isdigit() or op == "inf"):
        raise ValueError(f"offset {text!r} is not -1, now, or <int>_<int|inf>")
    return (int(tx), INFINITY if op == "inf" else int(op))


class ShapeLog:
    # Slots: with 10,000 shapes, every transaction touches thousands of logs, and attribute
    # lookups that miss the CPU cache are a large part of an append.
    __slots__ = (
        "_chunk_ends",
        "_chunk_start",
        "_index",
        "_snapshot_chunk",
        "_waiters",
        "chunk_bytes",
        "engine",
        "snapshot_done",
        "snapshot_visible",
        "stream",
    )

    def __init__(self, engine: StreamEngine, stream: Stream, chunk_bytes: int) -> None:
        self.engine = engine
        self.stream = stream
        self.chunk_bytes = chunk_bytes
        # Published boundaries, ascending in offset and in position alike, as three
        # machine integers each: transaction (LSN), op position, and end position * 2 + 1
        # if a chunk ends there. One array for all three, so a transaction extends one
        # object per log; and 24 bytes a boundary where the tuples framing built, kept,
        # were ~180 (four objects) that lived as long as the log and that the cycle
        # collector walked. Offsets past 2**63 would need an LSN Postgres never reaches.
        self._index = array("q")
        self._chunk_ends: list[int] = []  # positions of the cuts (one per chunk: few)
        self._chunk_start = stream.base
        self._snapshot_chunk = 0
        self._waiters: set[asyncio.Future[None]] | None = None  # made by the first `wait`
        # Queued (snapshot_done) and durable (snapshot_visible) ends of the snapshot.
        self.snapshot_done = False
        self.snapshot_visible = False

    # -- writing ------------------------------------------------------------------------

    def append_snapshot(
        self, framed: bytes = b"", end: tuple[int, int, list[int]] | None = None
    ) -> asyncio.Future[None]:
        """Queue framed snapshot items; `end` (xmin, xmax, xip) closes the snapshot.

        `framed` is whole items, each compact JSON plus `,\\n`. Compact JSON holds no raw
        newline, so chunk cuts are found with `find`, not by walking the items.
        """
        position = self.stream.pending.tail
        boundaries: list[Boundary] = []
        search = 0
        while True:
            # The cut follows the first item ending at least chunk_bytes into the chunk.
            threshold = self._chunk_start + self.chunk_bytes - position - len(SEPARATOR)
            found = framed.find(SEPARATOR, max(search, threshold))
            if found < 0:
                break
            search = found + len(SEPARATOR)
            self._cut(boundaries, (0, self._snapshot_chunk), position + search)
        parts = [framed]
        if end is not None:
            xmin, xmax, xip = end
            marker = control_item(
                "snapshot-end", xmin=str(xmin), xmax=str(xmax), xip_list=[str(x) for x in xip]
            )
            parts += (marker, SEPARATOR)
            end_position = position + len(framed) + len(marker) + len(SEPARATOR)
            self._cut(boundaries, (0, self._snapshot_chunk), end_position)
            self.snapshot_done = True
        return self._submit(b"".join(parts), boundaries, end is not None)

    def _cut(self, boundaries: list[Boundary], offset: Offset, at: int) -> None:
        boundaries.append((offset, at, True))
        self._chunk_start = at
        if offset[0] == 0:
            self._snapshot_chunk += 1

    def append_changes(self, items: list[tuple[Offset, bytes]]) -> asyncio.Future[None]:
        """Queue one transaction's items (the last one carries `last: true`)."""
        framed, boundaries = self.frame_changes(items)
        return self._submit(framed, boundaries, False)

    def frame_changes(self, items: list[tuple[Offset, bytes]]) -> tuple[bytes, list[Boundary]]:
        """One transaction's items framed, and their boundaries, for one append.

        The caller appends the bytes (see `Shapes`, which appends a transaction's items to
        all its shapes at once) and hands the commit to `settle`.
        """
        position = self.stream.pending.tail
        boundaries: list[Boundary] = []
        if len(items) == 1:  # the usual case with many shapes: one item per transaction
            offset, item = items[0]
            self._item_end(boundaries, offset, position + len(item) + len(SEPARATOR), True)
            return item + SEPARATOR, boundaries
        parts: list[bytes] = []
        last = len(items) - 1
        for index, (offset, item) in enumerate(items):
            parts.append(item)
            parts.append(SEPARATOR)
            position += len(item) + len(SEPARATOR)
            self._item_end(boundaries, offset, position, index == last)
        return b"".join(parts), boundaries

    def _item_end(
        self, boundaries: list[Boundary], offset: Offset, position: int, ends_transaction: bool
    ) -> None:
        """The boundary after a change item, if any: a chunk cut once the chunk holds
        `chunk_bytes`, else the end of its transaction."""
        if position - self._chunk_start >= self.chunk_bytes:
            self._cut(boundaries, offset, position)
        elif ends_transaction:
            boundaries.append((offset, position, False))

    def _submit(
        self, framed: bytes, boundaries: list[Boundary], ends_snapshot: bool
    ) -> asyncio.Future[None]:
        _, commit = self.engine.append_framed(self.stream, framed)
        commit.add_done_callback(functools.partial(self.settle, boundaries, ends_snapshot))
        return commit

    def settle(
        self, boundaries: list[Boundary], ends_snapshot: bool, commit: asyncio.Future[None]
    ) -> None:
        """Make an append's boundaries visible once its commit is done, unless it failed:
        called from the commit's done callback, registered when the append was submitted.

        That keeps them in order with no queue per log: the store completes commits in
        the order they were submitted, and asyncio runs a commit's callbacks in the order
        they were added. (A queue drained by whichever callback came first would publish
        a later append of the same batch before an earlier one published elsewhere.)
        """
        if commit.cancelled() or commit.exception() is not None:
            return  # storage failed: nothing after this becomes durable either
        self._publish(boundaries, ends_snapshot)
        self._wake()

    def _publish(self, boundaries: list[Boundary], ends_snapshot: bool) -> None:
        if ends_snapshot:
            self.snapshot_visible = True
        if boundaries:
            index = self._index
            for (transaction, op), position, cut in boundaries:
                index.extend((transaction, op, position * 2 + cut))
                if cut:
                    self._chunk_ends.append(position)

    # The newest published boundary is the end of the index, not fields of their own: a
    # field replaced at every append frees the old value's objects, and with 10,000 logs
    # those are cache misses (three per append: the offset tuple, its op and the position).

    @property
    def last_offset(self) -> Offset:
        """The offset of the newest published boundary (-1 before any)."""
        index = self._index
        return (index[-3], index[-2]) if index else BEFORE_ALL

    @property
    def visible_end(self) -> int:
        """The byte position up to which readers may read: the newest published boundary."""
        index = self._index
        return index[-1] >> 1 if index else self.stream.base

    # -- recovery -----------------------------------------------------------------------

    def rebuild(self) -> None:
        """Derive boundaries from the stored items, by the rules appending follows (the
        same `_cut` and `_item_end`)."""
        position = self.stream.base
        tail = self.stream.durable.tail
        read_from = position
        buffer = b""
        while read_from < tail:
            end = min(tail, read_from + (1 << 20))
            buffer += self.engine.read_range(self.stream, read_from, end)
            read_from = end
            cut_at = buffer.rfind(SEPARATOR)
            if cut_at < 0:
                continue
            block, buffer = buffer[: cut_at + 2], buffer[cut_at + 2 :]
            boundaries: list[Boundary] = []
            ends_snapshot = False
            for line in block.split(SEPARATOR)[:-1]:
                position += len(line) + len(SEPARATOR)
                headers = orjson.loads(line).get("headers", {})
                if headers.get("control") == "snapshot-end":
                    self._cut(boundaries, (0, self._snapshot_chunk), position)
                    self.snapshot_done = ends_snapshot = True
                elif "lsn" in headers:
                    offset = (int(headers["lsn"]), int(headers["op_position"]))
                    self._item_end(boundaries, offset, position, bool(headers.get("last")))
                else:  # a snapshot row: a boundary only where a chunk ends
                    self._item_end(boundaries, (0, self._snapshot_chunk), position, False)
            self._publish(boundaries, ends_snapshot)

    # -- reading ------------------------------------------------------------------------

    def seek(self, offset: Offset) -> int:
        """The byte position just after the item at `offset` (the start for -1)."""
        if offset == BEFORE_ALL:
            return self.stream.base
        index = self._index
        count = bisect.bisect_right(
            range(len(index) // 3), offset, key=lambda n: (index[3 * n], index[3 * n + 1])
        )  # boundaries at or before `offset`
        return index[3 * count - 1] >> 1 if count else self.stream.base

    def chunk(self, start: int) -> tuple[bytes, int, Offset]:
        """Framed items from `start` to the end of its chunk or the visible end.

        Returns the bytes, the end position, and the offset to resume from.
        """
        index = bisect.bisect_right(self._chunk_ends, start)
        end = self._chunk_ends[index] if index < len(self._chunk_ends) else self.visible_end
        end = min(end, self.visible_end)
        if end <= start:
            return b"", start, self._offset_at(start)
        return self.engine.read_range(self.stream, start, end), end, self._offset_at(end)

    def boundaries(self) -> list[Boundary]:
        """Every published boundary, oldest first (for inspection: reads bisect)."""
        index = self._index
        return [
            ((index[i], index[i + 1]), index[i + 2] >> 1, bool(index[i + 2] & 1))
            for i in range(0, len(index), 3)
        ]

    def _offset_at(self, position: int) -> Offset:
        """The offset of the last boundary at or before `position`."""
        index = self._index
        count = bisect.bisect_right(
            range(len(index) // 3), position, key=lambda n: index[3 * n + 2] >> 1
        )
        return (index[3 * count - 3], index[3 * count - 2]) if count else BEFORE_ALL

    async def wait(self, position: int, timeout: float) -> bool:
        """Wait until the log is visible past `position`; False on timeout."""
        if self.visible_end > position:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = set()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            if self._waiters is not None:
                self._waiters.discard(waiter)
        return self.visible_end > position

    def _wake(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Wake every waiter: the shape is going away."""
        self._wake()
