"""asyncio access to a `ReplicationStream`, which stays blocking underneath.

Each poll runs on one dedicated thread, so the event loop never waits on the socket and
libpq is only ever touched by that thread. Decoding still holds the GIL, so at high change
rates the stream belongs in its own process; this wrapper is for light use and tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator

from .client import ReplicationStream
from .pgoutput import PgOutputMessage


class AsyncReplicationStream:
    def __init__(self, stream: ReplicationStream) -> None:
        self.stream = stream
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="replication"
        )
        self._inflight: asyncio.Future[list[PgOutputMessage]] | None = None

    async def poll(
        self, timeout: float | None = None, max_messages: int = 1000
    ) -> list[PgOutputMessage]:
        """As `ReplicationStream.poll`. Cancelling the await loses nothing: the messages
        of a poll already under way are returned by the next call instead."""
        if self._inflight is None:
            loop = asyncio.get_running_loop()
            self._inflight = loop.run_in_executor(
                self._executor, self.stream.poll, timeout, max_messages
            )
        try:
            messages = await asyncio.shield(self._inflight)
        except asyncio.CancelledError:
            self.stream.wakeup()  # so the thread returns promptly to whoever polls next
            raise
        except BaseException:
            self._inflight = None
            raise
        self._inflight = None
        return messages

    def acknowledge(self, lsn: int) -> None:
        self.stream.acknowledge(lsn)

    async def __aiter__(self) -> AsyncIterator[PgOutputMessage]:
        while not self.stream.closed:
            for message in await self.poll():
                yield message

    async def close(self) -> None:
        """Wait for any poll under way, then close the stream on its own thread."""
        self.stream.stop()
        if self._inflight is not None:
            # The stream is being closed; the last poll's error no longer matters.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._inflight)
            self._inflight = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.stream.close)
        self._executor.shutdown(wait=False)
