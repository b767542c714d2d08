"""Running a standalone Durable Streams server: engine, store and HTTP server together."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from fusebox.allocator import retain_freed_memory
from fusebox.collector import HeapFreezer
from fusebox.http.server import HttpServer, ServerLimits
from fusebox.streams.engine import StreamEngine
from fusebox.streams.protocol import StreamsProtocol
from fusebox.streams.store import FileStore

log = logging.getLogger("fusebox.streams")


@dataclass
class StreamsSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 4437
    long_poll_timeout: float = 30.0
    sse_rotation: float = 60.0
    max_body_bytes: int = 64 * 1024 * 1024
    subscriptions: bool = True


class StreamsServer:
    """A started server; `port` is the bound port (useful when asked for port 0)."""

    def __init__(self, settings: StreamsSettings) -> None:
        self.settings = settings
        self.store = FileStore(settings.data_dir)
        self.engine = StreamEngine(self.store)
        extra = None
        self.subscriptions = None
        if settings.subscriptions:
            from fusebox.streams.subscriptions import Subscriptions

            self.subscriptions = Subscriptions(self.engine, settings.data_dir)
            extra = self.subscriptions.route
        self.protocol = StreamsProtocol(
            self.engine,
            long_poll_timeout=settings.long_poll_timeout,
            sse_rotation=settings.sse_rotation,
            extra_routes=extra,
        )
        self.http = HttpServer(self.protocol.handle, ServerLimits(settings.max_body_bytes))
        self.port = settings.port

    async def start(self) -> None:
        await self.engine.start()
        if self.subscriptions is not None:
            await self.subscriptions.start()
        self.port = await self.http.start(self.settings.host, self.settings.port)

    async def stop(self) -> None:
        await self.http.stop()
        if self.subscriptions is not None:
            await self.subscriptions.stop()
        await self.engine.stop()


async def serve(settings: StreamsSettings, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (checkpointing the log)."""
    retain_freed_memory()
    server = StreamsServer(settings)
    await server.start()
    heap = HeapFreezer()
    heap.start()
    log.info(
        "Durable Streams server listening on http://%s:%d/v1/stream/ (data in %s)",
        settings.host,
        server.port,
        settings.data_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping")
    await heap.stop()
    await server.stop()
