"""The shapes of one source: creation, snapshots, routing of changes, invalidation.

Each shape owns a log (a stream in the log engine). The registry itself is a small JSON
stream in the same engine (`create` / `delete` records), so shapes survive a restart with
their handles and logs, and there is one storage mechanism for everything.

A where clause with subqueries (`col IN (SELECT col FROM other WHERE ...)`) makes the shape
depend on the tables they read. Each subquery's result is loaded in the shape's snapshot
transaction and then kept current from those tables' changes, in commit order, skipping
what the snapshot saw, exactly as the shape's own rows are; a transaction's changes to
them are followed before its changes to the shape's table are judged. When a value enters
or leaves a result, rows of the shape's table would move in or out without changing
themselves: the shape is invalidated (409, the client refetches), as Electric first did.
Results live only in memory, so such shapes are dropped on restart (see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
import psycopg

from fusebox.streams.engine import StreamEngine
from fusebox.streams.errors import StreamNotFound
from fusebox.streams.framing import SEPARATOR
from fusebox.streams.model import StreamConfig
from fusebox.sync.changes import Transaction, fill_unchanged, shape_items
from fusebox.sync.connections import Connections
from fusebox.sync.log_items import ChangeEncoder, build_key, key_prefix
from fusebox.sync.router import Router
from fusebox.sync.schema import Table, TableNotFound, inspect_table
from fusebox.sync.shape import ShapeDefinition, ShapeError
from fusebox.sync.shape_log import ShapeLog
from fusebox.sync.snapshot import (
    BLOCK_BYTES,
    Visibility,
    begin_snapshot,
    copy_items,
    export_snapshot,
    join_snapshot,
    snapshot_parts,
    snapshot_query,
    table_layout,
)
from fusebox.sync.where import (
    ColumnType,
    Subquery,
    WhereClause,
    WhereError,
    WhereEvalError,
    compile_where,
    tables_read,
)

log = logging.getLogger("fusebox.sync")

# A shape's log items for one transaction, with their offsets (lsn, op position).
Items = list[tuple[tuple[int, int], bytes]]


@dataclass(eq=False, slots=True)
class Shape:
    handle: str
    definition: ShapeDefinition
    table: Table
    columns: tuple[str, ...]
    where: WhereClause | None
    log: ShapeLog
    visibility: Visibility | None = None
    # Transactions that arrived while the snapshot was still being copied.
    held: list[Transaction] = field(default_factory=list)
    snapshot: asyncio.Task[None] | None = None
    # While the snapshot task runs (routing reads this, not the task: one object less to
    # load per shape and transaction).
    copying: bool = False
    # Resolves once the transactions held during the snapshot are durable in the log:
    # until then their LSNs must not be acknowledged to Postgres.
    released: asyncio.Future[None] | None = None
    failed: str | None = None
    deleted: bool = False
    # The tables the where clause's subqueries read, and the commit LSN of the newest
    # transaction whose changes to them are in the subqueries' results.
    dependencies: dict[tuple[str, str], Table] = field(default_factory=dict)
    subqueries_lsn: int = 0
    # Derived once: routing uses them for every change.
    relation: tuple[str, str] = field(init=False, repr=False)
    key_of: Callable[[dict], str] = field(init=False, repr=False)
    full: bool = field(init=False, repr=False)
    subqueries: tuple[Subquery, ...] = field(init=False, repr=False)
    # The where clause is exactly its index hint (`tenant = 7`): an insert or delete the
    # router found this shape for matches it, and need not load the clause to say so.
    exact: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.relation, self.key_of, every_column = _table_parts(self.table)
        if self.columns == every_column:
            self.columns = every_column
        self.subqueries = self.where.subqueries if self.where is not None else ()
        self.full = self.definition.replica == "full"
        self.exact = self.where is not None and self.where.exact

    def matches(self, row: dict) -> bool:
        if self.where is None:
            return True
        try:
            return self.where.matches(row)
        except WhereEvalError:
            # Where Postgres would raise (say, a division by zero), the row cannot be in
            # the snapshot either: it does not match.
            return False


@functools.lru_cache(maxsize=1024)
def _table_parts(table: Table) -> tuple[tuple[str, str], Callable[[dict], str], tuple[str, ...]]:
    """What a shape derives from its table (relation, key function, every column), made
    once per table: 10,000 shapes of one table then share three objects instead of holding
    30,000, and routing a change touches fewer cache lines."""
    prefix, primary_key = key_prefix(table), table.primary_key
    return (
        table.relation,
        lambda row: build_key(prefix, row, primary_key),
        tuple(c.name for c in table.columns),
    )


class Shapes:
    def __init__(
        self,
        engine: StreamEngine,
        database_url: str,
        *,
        source: str = "default",
        chunk_bytes: int = 10 * 1024 * 1024,
        snapshot_connections: int = 2,
        on_table: Callable[[Table], asyncio.Future[None] | None] | None = None,
    ) -> None:
        self.engine = engine
        self.connections = Connections(database_url)
        self.chunk_bytes = chunk_bytes
        self.snapshot_connections = snapshot_connections
        self._prefix = f"/__sync/{source}"
        self._registry_path = f"{self._prefix}/shapes"
        self._by_handle: dict[str, Shape] = {}
        self._by_definition: dict[ShapeDefinition, Shape] = {}
        self.router = Router()
        self._tables: dict[tuple[str, str], Table] = {}
        self.on_table = on_table
        self._creating: dict[ShapeDefinition, asyncio.Future[Shape]] = {}
        # The newest commit whose items are durable in every shape it touched (service.py).
        self.last_seen_lsn = 0
        # No shape log holds a change of a later commit than this: a transaction past it
        # cannot be a resend, and skips the per-shape check (a cache miss per shape).
        self._newest_lsn = 0
        # No shape's snapshot can see a transaction committed at or past this (see
        # `Visibility.horizon`): past it, routing skips the per-shape visibility check.
        self._visibility_horizon = 0

    # -- start-up -----------------------------------------------------------------------

    async def load(self) -> None:
        """Restore shapes from the registry; shapes whose snapshot never finished are dropped."""
        try:
            registry = self.engine.lookup(self._registry_path)
        except StreamNotFound:
            await self.engine.create(
                self._registry_path, StreamConfig("application/json"), b"", False
            )
            return
        data = self.engine.read_range(registry, registry.base, registry.durable.tail)
        live: dict[str, dict] = {}
        for line in data.split(SEPARATOR)[:-1]:
            entry = orjson.loads(line)
            if entry["op"] == "create":
                live[entry["handle"]] = entry
            else:
                live.pop(entry["handle"], None)
        async with self.connections.connection() as conn:
            for handle, entry in live.items():
                if handle in self._by_handle:
                    continue  # restored by an earlier attempt that lost its connection
                definition = ShapeDefinition.from_json(entry["definition"])
                try:
                    shape = await self._build(conn, handle, definition, create_log=False)
                except (ShapeError, StreamNotFound) as exc:
                    log.warning("dropping shape %s on restart: %s", handle, exc)
                    await self._forget(handle)
                    continue
                if shape.subqueries:
                    # Their results were in memory only; rebuilt from Postgres now they
                    # would not match the position replication resumes from.
                    log.info("dropping shape %s on restart: its where has subqueries", handle)
                    await self.delete(shape)
                    continue
                shape.log.rebuild()
                if not shape.log.snapshot_done:
                    await self.delete(shape)
                    continue
                self._newest_lsn = max(self._newest_lsn, shape.log.last_offset[0])
                if entry.get("visibility"):
                    self._set_visibility(shape, Visibility.from_json(entry["visibility"]))
                self._register(shape)

    # -- lookup and creation ------------------------------------------------------------

    def get(self, handle: str) -> Shape | None:
        return self._by_handle.get(handle)

    def find(self, definition: ShapeDefinition) -> Shape | None:
        return self._by_definition.get(definition)

    async def get_or_create(self, definition: ShapeDefinition) -> Shape:
        existing = self._by_definition.get(definition)
        if existing is not None:
            return existing
        pending = self._creating.get(definition)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Shape] = asyncio.get_running_loop().create_future()
        self._creating[definition] = future
        try:
            shape = await self._create(definition)
            future.set_result(shape)
            return shape
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._creating[definition]

    async def validate(self, definition: ShapeDefinition) -> None:
        """Check a definition against the database without creating a shape."""
        async with self.connections.connection() as conn:
            await self._build(conn, "", definition, create_log=False, dry_run=True)

    async def _create(self, definition: ShapeDefinition) -> Shape:
        handle = f"{int(definition.fingerprint(), 16) % 10**8}-{time.time_ns() // 1000}"
        async with self.connections.connection() as conn:
            shape = await self._build(conn, handle, definition, create_log=True)
        if self.on_table is not None:
            for table in (shape.table, *shape.dependencies.values()):
                prepared = self.on_table(table)
                if prepared is not None:
                    await prepared
        self._register(shape)
        if definition.log_mode == "changes_only" and not shape.subqueries:
            shape.log.append_snapshot(end=(0, 0, []))
            await self._record(
                {"op": "create", "handle": handle, "definition": definition.to_json()}
            )
        else:
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            shape.released = asyncio.get_running_loop().create_future()
            shape.copying = True
            shape.snapshot = asyncio.create_task(self._run_snapshot(shape, started))
            await started
        return shape

    async def _build(
        self,
        conn: psycopg.AsyncConnection,
        handle: str,
        definition: ShapeDefinition,
        *,
        create_log: bool,
        dry_run: bool = False,
    ) -> Shape:
        table = await self._table(conn, definition.schema, definition.table)
        columns = definition.columns
        if columns is None:
            columns = tuple(c.name for c in table.columns)
        else:
            unknown = [c for c in columns if table.column(c) is None]
            if unknown:
                raise ShapeError(
                    "columns", f"The following columns could not be found: {', '.join(unknown)}"
                )
            missing = [c for c in table.primary_key if c not in columns]
            if missing:
                raise ShapeError(
                    "columns",
                    "The list of columns must include all primary key columns, missing: "
                    + ", ".join(missing),
                )
        where = None
        dependencies: dict[tuple[str, str], Table] = {}
        if definition.where:
            try:
                for relation in tables_read(definition.where):
                    dependencies[relation] = await self._table(conn, *relation)
                where = compile_where(
                    definition.where,
                    _column_types(table),
                    dict(definition.params),
                    {relation: _column_types(t) for relation, t in dependencies.items()},
                )
            except WhereError as exc:
                raise ShapeError(getattr(exc, "field", "where"), str(exc)) from None
        elif definition.params:
            raise ShapeError("params", "params were given but the where clause uses none")
        if dry_run:
            return None  # type: ignore[return-value]
        path = f"{self._prefix}/logs/{handle}"
        if create_log:
            stream, _ = await self.engine.create(path, StreamConfig("application/json"), b"", False)
        else:
            stream = self.engine.lookup(path)
        shape_log = ShapeLog(self.engine, stream, self.chunk_bytes)
        return Shape(
            handle, definition, table, columns, where, shape_log, dependencies=dependencies
        )

    async def _table(self, conn: psycopg.AsyncConnection, schema: str, name: str) -> Table:
        cached = self._tables.get((schema, name))
        if cached is not None:
            return cached
        try:
            table = await inspect_table(conn, schema, name)
        except TableNotFound as exc:
            raise ShapeError("table", str(exc)) from None
        self._tables[(schema, name)] = table
        return table

    def _set_visibility(self, shape: Shape, visibility: Visibility) -> None:
        shape.visibility = visibility
        self._visibility_horizon = max(self._visibility_horizon, visibility.horizon)

    def _register(self, shape: Shape) -> None:
        self._by_handle[shape.handle] = shape
        self._by_definition[shape.definition] = shape
        self.router.add(shape)

    async def _record(self, entry: dict) -> None:
        registry = self.engine.lookup(self._registry_path)
        _, commit = self.engine.append_framed(registry, orjson.dumps(entry) + SEPARATOR)
        await asyncio.shield(commit)

    # -- snapshots ----------------------------------------------------------------------

    async def _run_snapshot(self, shape: Shape, started: asyncio.Future[None]) -> None:
        try:
            async with self.connections.connection() as conn:
                visibility = await begin_snapshot(conn)
                self._set_visibility(shape, visibility)
                await self._record(
                    {
                        "op": "create",
                        "handle": shape.handle,
                        "definition": shape.definition.to_json(),
                        "visibility": visibility.to_json(),
                    }
                )
                started.set_result(None)
                # The subqueries' results as of the snapshot: changes it did not see follow.
                for subquery in shape.subqueries:
                    subquery.load(await _column_texts(conn, subquery.sql))
                copy_rows = shape.definition.log_mode != "changes_only"
                if copy_rows:
                    await self._copy_rows(conn, shape)
                await conn.rollback()
            end = (visibility.xmin, visibility.xmax, sorted(visibility.xip))
            if not copy_rows:
                end = (0, 0, [])  # as for any changes_only shape
            await asyncio.shield(shape.log.append_snapshot(end=end))
            # Transactions held while the snapshot ran: those it already saw are skipped
            # (some arrived before its visibility was known). More are held while these
            # commit, until the task ends: drain until none is left.
            while shape.held:
                held, shape.held = shape.held, []
                commits = [
                    self._deliver(shape, transaction)
                    for transaction in held
                    if not visibility.sees(transaction.xid)
                ]
                for commit in commits:
                    if commit is not None:
                        await asyncio.shield(commit)
        except Exception as exc:
            log.exception("snapshot of shape %s failed", shape.handle)
            shape.failed = f"snapshot failed: {exc}"
            if not started.done():
                started.set_exception(exc)
                started.exception()
            await self.delete(shape)
        finally:
            shape.copying = False
            if shape.released is not None and not shape.released.done():
                shape.released.set_result(None)

    async def _copy_rows(self, conn: psycopg.AsyncConnection, shape: Shape) -> None:
        where_sql = shape.where.sql if shape.where is not None else None
        layout = await table_layout(conn, shape.table)
        parts = snapshot_parts(layout, where_sql, self.snapshot_connections)
        if parts == 1:
            query = snapshot_query(shape.table, shape.columns, where_sql, layout)
            await self._copy_part(conn, shape, query)
            return
        # Helpers join this transaction's snapshot; the parts' blocks interleave in the log
        # (a snapshot's rows have no order).
        snapshot_id = await export_snapshot(conn)
        async with contextlib.AsyncExitStack() as stack:
            connections = [conn]
            for _ in range(parts - 1):
                helper = await stack.enter_async_context(self.connections.connection())
                await join_snapshot(helper, snapshot_id)
                connections.append(helper)
            try:
                async with asyncio.TaskGroup() as group:
                    for index, connection in enumerate(connections):
                        query = snapshot_query(
                            shape.table, shape.columns, where_sql, layout, (index, parts)
                        )
                        group.create_task(self._copy_part(connection, shape, query))
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None  # the first failure names the cause

    async def _copy_part(self, conn: psycopg.AsyncConnection, shape: Shape, query: str) -> None:
        previous: asyncio.Future[None] | None = None
        async for framed in copy_items(conn, query, BLOCK_BYTES):
            commit = shape.log.append_snapshot(framed)
            # Keep at most one block in flight: memory stays bounded.
            if previous is not None:
                await asyncio.shield(previous)
            previous = commit

    # -- changes ------------------------------------------------------------------------

    def apply(self, transaction: Transaction) -> list[asyncio.Future[None]]:
        """Route a committed transaction to its shapes; returns the commits to wait for."""
        commits: list[asyncio.Future[None]] = []
        fresh = transaction.lsn > self._newest_lsn  # (set first: an error below cannot undo it)
        self._newest_lsn = max(self._newest_lsn, transaction.lsn)
        may_be_seen = transaction.lsn < self._visibility_horizon
        for relation in transaction.truncated:
            for shape in self.router.shapes_of(relation):
                reason = f"truncate of {relation[0]}.{relation[1]}"
                commits.append(self.invalidate(shape, reason))
        # Which changes each candidate shape must consider, in transaction order, and which
        # changes to the tables its subqueries read.
        per_shape: dict[Shape, list[int]] = {}
        followed: dict[Shape, list[int]] = {}
        encoders: dict[tuple[str, str], ChangeEncoder] = {}  # one per table, not per shape
        for index, change in enumerate(transaction.changes):
            rows = [row for row in (change.new, change.old) if row is not None]
            for shape in self.router.candidates(change.relation, rows):
                per_shape.setdefault(shape, []).append(index)
            for shape in self.router.dependents(change.relation):
                followed.setdefault(shape, []).append(index)
        for shape in followed:
            per_shape.setdefault(shape, [])
        staged: list[tuple[Shape, Items]] = []
        for shape, indexes in per_shape.items():
            if shape.deleted:
                continue
            visibility = shape.visibility
            if may_be_seen and visibility is not None and visibility.sees(transaction.xid):
                continue
            if shape.copying:
                shape.held.append(transaction)
                if shape.released is not None:
                    commits.append(shape.released)
                continue
            commit = self._deliver(
                shape, transaction, indexes, followed.get(shape, ()), encoders, staged, fresh
            )
            if commit is not None:
                commits.append(commit)
        if staged:
            commits.append(self._append_staged(staged))
        return commits

    def _append_staged(self, staged: list[tuple[Shape, Items]]) -> asyncio.Future[None]:
        """Append one transaction's items to all its shapes' logs as one engine append."""
        if len(staged) == 1:
            shape, items = staged[0]
            return shape.log.append_changes(items)  # a large one may skip the WAL
        logs = []
        appends = []
        for shape, items in staged:
            framed, boundaries = shape.log.frame_changes(items)
            appends.append((shape.log.stream, framed))
            logs.append((shape.log, boundaries))
        commit = self.engine.append_framed_many(appends)

        def settle(done: asyncio.Future[None]) -> None:
            for shape_log, boundaries in logs:
                shape_log.settle(boundaries, False, done)

        commit.add_done_callback(settle)
        return commit

    def _deliver(
        self,
        shape: Shape,
        transaction: Transaction,
        indexes: list[int] | None = None,
        followed: Sequence[int] | None = None,
        encoders: dict[tuple[str, str], ChangeEncoder] | None = None,
        staged: list[tuple[Shape, Items]] | None = None,
        fresh: bool = False,
    ) -> asyncio.Future[None] | None:
        """Follow the transaction's changes to the subqueries' tables, then append the
        shape's own items; a subquery result that changes invalidates the shape instead.

        With `staged`, the items are added to it for one append with other shapes' items.
        `fresh`: the transaction is newer than everything in any log, so it is no resend.
        """
        if shape.deleted:
            return None
        if shape.subqueries and transaction.lsn > shape.subqueries_lsn:
            # (Not again for a transaction Postgres resends after a replication restart.)
            shape.subqueries_lsn = transaction.lsn
            if followed is None:
                followed = [
                    i for i, c in enumerate(transaction.changes) if c.relation in shape.dependencies
                ]
            moved = self._follow(shape, transaction, followed)
            if moved is not None:
                return self.invalidate(shape, moved)
        if indexes is not None and not indexes:
            return None
        if not fresh and transaction.lsn <= shape.log.last_offset[0]:
            # Already in this shape's log: Postgres can resend a transaction whose
            # acknowledgement it lost over a restart.
            return None
        items = self._items(shape, transaction, indexes, encoders)
        if not items:
            return None
        if staged is not None:
            staged.append((shape, items))
            return None
        return shape.log.append_changes(items)

    @staticmethod
    def _follow(shape: Shape, transaction: Transaction, followed: Sequence[int]) -> str | None:
        """Apply changes to the subqueries' results; why the shape is stale, if it is.

        A value of a subquery of the clause itself may come and go within the transaction:
        the shape's rows are judged against the results as the transaction leaves them
        (its items reach clients together), so only a value in or out at the end counts.
        A nested subquery's result is read by another subquery's where clause, whose
        counts any value in or out there may have made wrong: that invalidates at once.
        """
        toggled: dict[tuple[int, object], bool] = {}  # (subquery, key): present before
        subqueries = shape.subqueries
        for index in followed:
            change = transaction.changes[index]
            old = change.old if change.operation != "insert" else None
            new = change.new if change.operation != "delete" else None
            if change.operation == "update":
                if old is None:
                    return f"an update of {change.relation} without its old row"
                assert new is not None
                new = fill_unchanged(new, old)
            for position, subquery in enumerate(subqueries):
                if subquery.relation != change.relation:
                    continue
                keys = subquery.apply_change(old, new)
                if keys and subquery.nested:
                    return f"the result of a nested subquery on {change.relation} changed"
                for key in keys:
                    toggled.setdefault((position, key), key not in subquery.result)
        for (position, key), present in toggled.items():
            if (key in subqueries[position].result) != present:
                return f"the result of a subquery on {subqueries[position].relation} changed"
        return None

    def _items(
        self,
        shape: Shape,
        transaction: Transaction,
        indexes: list[int] | None = None,
        encoders: dict[tuple[str, str], ChangeEncoder] | None = None,
    ) -> Items:
        """The shape's log items for the transaction, with their offsets.

        `indexes` are the changes the router found the shape for; None: every change to
        its table, each still to be matched.
        """
        relation = shape.relation
        changes = transaction.changes
        routed = indexes is not None and shape.exact
        if indexes is None:
            indexes = [i for i, c in enumerate(changes) if c.relation == relation]
        # Positional calls: with 10,000 shapes this runs once per change, for one item.
        matches, columns, key_of, full = shape.matches, shape.columns, shape.key_of, shape.full
        primary_key = shape.table.primary_key
        items = []
        for index in indexes:
            items += shape_items(
                changes[index], index * 2, matches, columns, primary_key, key_of, full, routed
            )
        if not items:
            return []
        encoder = encoders.get(relation) if encoders is not None else None
        if encoder is None:
            encoder = ChangeEncoder(relation, transaction.lsn, transaction.xid)
            if encoders is not None:
                encoders[relation] = encoder
        lsn = transaction.lsn
        last = items[-1]
        encode = encoder.encode
        return [
            (
                (lsn, item.op_position),
                encode(
                    item.operation,
                    item.key,
                    item.value,
                    item.op_position,
                    item.old_value,
                    item is last,
                    item.headers,
                ),
            )
            for item in items
        ]

    # -- removal ------------------------------------------------------------------------

    async def delete(self, shape: Shape) -> None:
        """Remove a shape and its log; its clients get 409 and refetch."""
        if shape.deleted:
            return
        self._detach(shape)
        await self._forget(shape.handle)

    def invalidate(self, shape: Shape, reason: str) -> asyncio.Future[None]:
        """Delete a shape that has gone stale: at once for routing and readers (nothing
        more is appended, requests get 409), durably when the returned future is done."""
        if shape.deleted:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        log.info("shape %s is invalidated: %s", shape.handle, reason)
        self._detach(shape)
        return asyncio.ensure_future(self._forget(shape.handle))

    def _detach(self, shape: Shape) -> None:
        shape.deleted = True
        if self._by_handle.get(shape.handle) is shape:
            del self._by_handle[shape.handle]
        if self._by_definition.get(shape.definition) is shape:
            del self._by_definition[shape.definition]
        self.router.remove(shape)
        snapshot = shape.snapshot
        if snapshot is not None and not snapshot.done() and snapshot is not asyncio.current_task():
            snapshot.cancel()
        shape.log.close()

    async def drop_registry(self) -> None:
        """Delete the registry itself (the source is being deleted)."""
        with contextlib.suppress(StreamNotFound):
            await self.engine.delete(self._registry_path)

    async def _forget(self, handle: str) -> None:
        await self._record({"op": "delete", "handle": handle})
        with contextlib.suppress(StreamNotFound):
            await self.engine.delete(f"{self._prefix}/logs/{handle}")

    def invalidate_relation(
        self, relation: tuple[str, str], columns: list[tuple[str, int]]
    ) -> list[Shape]:
        """The shapes a Relation message makes stale: their table's columns changed."""
        stale = []
        for shape in self.router.shapes_of(relation):
            table = shape.table if shape.relation == relation else shape.dependencies[relation]
            known = [(c.name, c.type_oid) for c in table.columns]
            if known != [tuple(c) for c in columns]:
                stale.append(shape)
        if stale:
            self._tables.pop(relation, None)
        return stale

    def __iter__(self):
        return iter(list(self._by_handle.values()))

    def __len__(self) -> int:
        return len(self._by_handle)


def _column_types(table: Table) -> dict[str, ColumnType]:
    return {
        column.name: ColumnType(
            column.element_type or column.type_name, column.dims, column.kind, schema=None
        )
        for column in table.columns
    }


async def _column_texts(conn: psycopg.AsyncConnection, sql: str) -> list[str | None]:
    """The first column of `sql` as Postgres's text output (None for NULL): what
    replication delivers, not what a cast to text gives (`t`, not `true`)."""
    cursor = await conn.execute(sql)
    result = cursor.pgresult
    assert result is not None
    values = (result.get_value(row, 0) for row in range(result.ntuples))
    return [None if value is None else bytes(value).decode() for value in values]
