"""Idle Postgres connections of one source, reused by shape creations and snapshots.

A connection costs Postgres a backend process and this server a connect (2.4 ms here, most
of it Postgres starting the backend), and creating a shape took two: one to read its table's
definition, one for its snapshot. Clients that open hundreds of shapes at once (one per
user, per tenant) were paying that for each. Connections come back here after use and the
next creation takes one; a connection that died meanwhile (Postgres restarted) fails a
one-round-trip check and is replaced.

Every connection has Electric's session settings (`schema.session_options`), so values read
through any of them are the same text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg.pq import TransactionStatus

from fusebox.sync.schema import session_options


class Connections:
    def __init__(self, database_url: str, idle: int = 4) -> None:
        self.database_url = database_url
        self._max_idle = idle
        self._idle: list[psycopg.AsyncConnection] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection outside any transaction; kept for reuse if it comes back so."""
        conn = await self._take()
        try:
            yield conn
        except BaseException:
            await _close(conn)  # its state is unknown
            raise
        await self._give_back(conn)

    async def _take(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            try:
                await conn.execute("SELECT 1")
                await conn.rollback()
                return conn
            except psycopg.Error:
                await _close(conn)
        return await psycopg.AsyncConnection.connect(self.database_url, options=session_options())

    async def _give_back(self, conn: psycopg.AsyncConnection) -> None:
        if conn.closed or conn.broken or len(self._idle) >= self._max_idle:
            await _close(conn)
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                await conn.rollback()
            except psycopg.Error:
                await _close(conn)
                return
        self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


async def _close(conn: psycopg.AsyncConnection) -> None:
    with contextlib.suppress(psycopg.Error, OSError):
        await conn.close()
