"""Running a standalone sync service: log engine, shapes, replication and HTTP together.

The replication process (`replicator.py`) streams committed transactions over a pipe;
this process routes them to shape logs and sends back, in order, the end LSN of every
transaction whose shape appends are durable. If the replication process fails (Postgres
restarted, connection dropped) it is restarted with backoff; shape requests get 503 with
Retry-After meanwhile. A new system id or timeline, or a lost slot, means the logs may
miss changes: every shape is dropped and clients refetch (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg

from fusebox.allocator import retain_freed_memory
from fusebox.collector import HeapFreezer, collector_paused
from fusebox.http.server import HttpServer
from fusebox.streams.engine import StreamEngine
from fusebox.streams.store import FileStore
from fusebox.sync import replicator
from fusebox.sync.changes import Transaction, decode_batch
from fusebox.sync.protocol import ShapeProtocol, SyncStatus
from fusebox.sync.replication.names import ReplicationNames
from fusebox.sync.replication.publication import add_table, drop_publication, ensure_publication
from fusebox.sync.schema import Table
from fusebox.sync.shapes import Shapes

log = logging.getLogger("fusebox.sync")

# How long a table checked to be in the publication counts as prepared (`prepare_table`).
PREPARED_SECONDS = 10.0


@dataclass
class SyncSettings:
    database_url: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 3000
    secret: str | None = None
    chunk_bytes: int = 10 * 1024 * 1024
    # Connections one large table's initial snapshot is copied over (`snapshot_parts`).
    snapshot_connections: int = 2
    long_poll_timeout: float = 20.0
    allow_shape_deletion: bool = False
    stream_id: str = "default"


class Replication:
    """Supervises the replication process and applies what it sends."""

    def __init__(self, settings: SyncSettings, shapes: Shapes, status: SyncStatus) -> None:
        self.settings = settings
        self.names = ReplicationNames.for_stream(settings.stream_id)
        self.shapes = shapes
        self.status = status
        self._identity_path = settings.data_dir / "identity.json"
        self._pipe: multiprocessing.connection.Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        # (end LSN, commit LSN, appends to wait for) per transaction, in commit order.
        self._acks: deque[tuple[int, int, list[asyncio.Future[None]]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._durable_lsn = 0
        self._restarts = 0
        # Tables (by oid) known to be published, with when that was checked (`prepare_table`).
        self._prepared: dict[int, float] = {}
        self._preparing: dict[int, asyncio.Future[None]] = {}
        # Told of replication events (the platform turns them into a service's event log).
        self.on_event: Callable[[str, dict], None] = lambda kind, details: None
        # Deletions started from synchronous callbacks, kept so they are not collected.
        self._background: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._terminate()

    # -- tables -------------------------------------------------------------------------

    async def prepare_table(self, table: Table) -> None:
        """Publish a table (REPLICA IDENTITY FULL) before a snapshot of it.

        Checked in Postgres once per table every `PREPARED_SECONDS`, not for every shape:
        the check costs a connection and two transactions, a third of a shape's creation
        when clients create hundreds of shapes of one table. Should someone take the table
        out of the publication meanwhile, a shape created before the next check misses its
        changes, as with Electric; a restart of replication checks again at once.
        """
        # By oid: a table dropped and created again under its name is a new table, which
        # is not in the publication.
        relation, oid = table.relation, table.oid
        last_check = self._prepared.get(oid)
        if last_check is not None and time.monotonic() - last_check < PREPARED_SECONDS:
            return
        pending = self._preparing.get(oid)
        if pending is None:  # concurrent creations of one table's shapes share one check

            def publish() -> None:
                with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                    ensure_publication(conn, self.names.publication)
                    add_table(conn, self.names.publication, relation)

            started = time.monotonic()

            def checked(future: asyncio.Future[None]) -> None:
                del self._preparing[oid]
                if not future.cancelled() and future.exception() is None:
                    self._prepared[oid] = started

            pending = asyncio.get_running_loop().run_in_executor(None, publish)
            pending.add_done_callback(checked)
            self._preparing[oid] = pending
        await asyncio.shield(pending)

    def release(self) -> None:
        """Drop the slot and the publication (the source is being deleted). Blocking."""
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            # The walsender of the stopped process may take a moment to let go of the slot.
            for _ in range(50):
                row = conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                    [self.names.slot],
                ).fetchone()
                if row is None:
                    break
                if not row[0]:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [self.names.slot])
                    break
                time.sleep(0.1)
            drop_publication(conn, self.names.publication)

    # -- the process ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                outcome = await self._run_once()
            except Exception as exc:  # Postgres unreachable: retry, never give up
                outcome = f"{type(exc).__name__}: {exc}"
                self.on_event("connection_error", {"error": outcome})
            if self._stopping:
                return
            self._restarts += 1
            if outcome == "active":
                delay = 0.5
            self.status.state = "starting"
            log.info("replication stopped (%s); restarting in %.1f s", outcome, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _run_once(self) -> str:
        identity = self._stored_identity()
        self._prepared.clear()  # the publication may have changed while we were away

        def publish() -> None:
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                ensure_publication(conn, self.names.publication)

        # In a thread: a slow or hanging connect must not stall the HTTP server.
        await asyncio.get_running_loop().run_in_executor(None, publish)
        config = replicator.ReplicatorConfig(
            self.settings.database_url,
            self.names.publication,
            self.names.slot,
            identity.get("system_id"),
            identity.get("timeline"),
            self._durable_lsn or None,
        )
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=replicator.run, args=(config, child), daemon=True)
        process.start()
        child.close()
        self._pipe, self._process = parent, process
        self._acks.clear()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        reached_active = False

        def readable() -> None:
            # Decoding and routing a batch builds many objects that live until it is done.
            with collector_paused():
                drain()

        def drain() -> None:
            nonlocal reached_active
            try:
                while parent.poll():
                    message = receive()
                    kind = message[0]
                    if kind == "transactions":
                        self._apply(decode_batch(message[1]))
                    elif kind == "status":
                        self.status.state = message[1]
                        self.status.reason = message[2]
                        reached_active = reached_active or message[1] == "active"
                        if message[1] == "waiting":
                            self.on_event("waiting_for_replication_lock", {"detail": message[2]})
                        elif self._restarts:
                            # The first start is announced by whoever started us.
                            self.on_event("ready", {"detail": message[2]})
                    elif kind == "identity":
                        self._check_identity(message[1], message[2])
                    elif kind == "relation":
                        self._check_relation(message[1], message[2], message[3])
                    elif kind == "error":
                        log.warning("replication error (%s): %s", message[1], message[2])
                        names = {
                            "identity": "database_id_or_timeline_changed",
                            "slot": "slot_invalidated",
                        }
                        self.on_event(
                            names.get(message[1], "connection_error"), {"error": message[2]}
                        )
                        if message[1] in ("identity", "slot"):
                            self._purge(message[2])
                        if not done.done():
                            done.set_result(message[1])
            except (EOFError, OSError):
                if not done.done():
                    done.set_result("exited")

        descriptor = parent.fileno()

        def receive():
            # uvloop's add_reader makes the descriptor non-blocking, and `recv` of a
            # message larger than the pipe buffer (64 KiB) would then fail half-way with
            # BlockingIOError. The child is writing the rest: read it whole, blocking.
            blocking = os.get_blocking(descriptor)
            os.set_blocking(descriptor, True)
            try:
                return parent.recv()
            finally:
                os.set_blocking(descriptor, blocking)

        loop.add_reader(descriptor, readable)
        try:
            outcome = await done
        finally:
            loop.remove_reader(descriptor)
            self._terminate()
        return "active" if reached_active and outcome == "connection" else outcome

    def _terminate(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                self._pipe.send(("stop",))
        if self._process is not None:
            self._process.join(timeout=2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    # -- applying changes -----------------------------------------------------------------

    def _apply(self, transactions: list[tuple[Transaction, int]]) -> None:
        for transaction, end_lsn in transactions:
            # The appends of one transaction mostly share a group commit (one future for
            # hundreds of shapes): wait on each distinct commit once.
            commits = list(dict.fromkeys(self.shapes.apply(transaction)))
            self._acks.append((end_lsn, transaction.lsn, commits))
            for commit in commits:
                commit.add_done_callback(lambda _: self._acknowledge())
        self._acknowledge()

    def _acknowledge(self) -> None:
        """Send the end LSN of the newest transaction whose appends are all durable.

        Only then does its commit LSN become `global_last_seen_lsn` too: a client resumes
        from `<that lsn>_0` (SSE does), so announcing it before the shape's items are
        readable could make the client skip them.
        """
        lsn = None
        while self._acks and all(c.done() for c in self._acks[0][2]):
            lsn, commit_lsn, _ = self._acks.popleft()
            self.shapes.last_seen_lsn = max(self.shapes.last_seen_lsn, commit_lsn)
        if lsn is not None:
            self._durable_lsn = max(self._durable_lsn, lsn)
        if lsn is not None and self._pipe is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                self._pipe.send(("ack", lsn))

    # -- invalidation ---------------------------------------------------------------------

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stored_identity(self) -> dict:
        try:
            return orjson.loads(self._identity_path.read_bytes())
        except FileNotFoundError:
            return {}

    def _check_identity(self, system_id: str, timeline: int) -> None:
        stored = self._stored_identity()
        if stored and (stored.get("system_id"), stored.get("timeline")) != (system_id, timeline):
            self._purge(f"database identity changed to {system_id}/{timeline}")
        if stored.get("system_id") != system_id or stored.get("timeline") != timeline:
            temporary = self._identity_path.with_suffix(".tmp")
            temporary.write_bytes(orjson.dumps({"system_id": system_id, "timeline": timeline}))
            temporary.replace(self._identity_path)

    def _check_relation(self, schema: str, name: str, columns: list[tuple[str, int]]) -> None:
        for shape in self.shapes.invalidate_relation((schema, name), columns):
            log.info("schema of %s.%s changed: dropping shape %s", schema, name, shape.handle)
            self._spawn(self.shapes.delete(shape))

    def _purge(self, reason: str) -> None:
        log.warning("dropping every shape: %s", reason)
        for shape in list(self.shapes):
            self._spawn(self.shapes.delete(shape))
        with contextlib.suppress(FileNotFoundError):
            self._identity_path.unlink()


class SyncSource:
    """One replicated database: its shapes, replication and HTTP protocol, on a given engine.

    The standalone server runs one; the platform runs one per Sync source, all sharing one
    log engine.
    """

    def __init__(self, settings: SyncSettings, engine: StreamEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.status = SyncStatus()
        self.shapes = Shapes(
            engine,
            settings.database_url,
            source=settings.stream_id,
            chunk_bytes=settings.chunk_bytes,
            snapshot_connections=settings.snapshot_connections,
        )
        self.replication = Replication(settings, self.shapes, self.status)
        self._loading: asyncio.Task[None] | None = None
        self.shapes.on_table = self.replication.prepare_table
        self.protocol = ShapeProtocol(
            self.shapes,
            self.status,
            secret=settings.secret,
            long_poll_timeout=settings.long_poll_timeout,
            allow_shape_deletion=settings.allow_shape_deletion,
        )

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if await self._load():
            await self.replication.start()
        else:
            # Start anyway, answering 503 (status `starting`), and restore once it is back.
            self._loading = asyncio.create_task(self._load_when_reachable())

    async def _load(self) -> bool:
        """Restore the shapes; False while Postgres (their tables' descriptions) is away."""
        try:
            await self.shapes.load()
        except psycopg.OperationalError as exc:
            log.warning("Postgres is unreachable (%s); shapes load when it is back", exc)
            self.status.reason = "the database is unreachable"
            return False
        return True

    async def _load_when_reachable(self) -> None:
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            if await self._load():
                break
            delay = min(delay * 2, 10.0)
        await self.replication.start()

    async def stop(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        await self.replication.stop()
        await self.shapes.connections.close()

    async def destroy(self) -> None:
        """Stop, drop every shape and its log, and release the slot and publication."""
        await self.stop()
        for shape in list(self.shapes):
            await self.shapes.delete(shape)
        await self.shapes.drop_registry()
        await asyncio.get_running_loop().run_in_executor(None, self.replication.release)


class SyncServer:
    def __init__(self, settings: SyncSettings) -> None:
        self.settings = settings
        self.store = FileStore(settings.data_dir / "log")
        self.engine = StreamEngine(self.store)
        self.source = SyncSource(settings, self.engine)
        self.http = HttpServer(self.source.protocol.handle)
        self.port = settings.port

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.engine.start()
        await self.source.start()
        self.port = await self.http.start(self.settings.host, self.settings.port)

    async def stop(self) -> None:
        await self.http.stop()
        await self.source.stop()
        await self.engine.stop()


async def serve(settings: SyncSettings) -> None:
    retain_freed_memory()
    server = SyncServer(settings)
    await server.start()
    heap = HeapFreezer()
    heap.start()
    log.info(
        "Electric-compatible sync service on http://%s:%d/v1/shape (data in %s)",
        settings.host,
        server.port,
        settings.data_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await heap.stop()
    await server.stop()
