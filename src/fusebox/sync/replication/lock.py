"""One replicating instance per database: a session advisory lock named after the slot.

`pg_advisory_lock(hashtext(<slot>))` as Electric takes it, so a Fusebox instance and an
Electric instance on the same slot also exclude each other. The lock lives on its own
ordinary connection and is held for as long as that connection is open, so a crashed
holder releases it when Postgres notices the connection is gone.

Callers usually `try_acquire()` first and, if that fails, report "waiting" and then block
in `acquire()`.
"""

from __future__ import annotations

import threading
from types import TracebackType

import psycopg
from psycopg import errors

from .errors import ConnectionLost
from .names import check_name


class ReplicationLock:
    def __init__(self, conninfo: str, slot: str, *, connect_timeout: int = 10) -> None:
        self.slot = check_name(slot, "slot name")
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._cancelled = threading.Event()
        self.held = False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self.held = False
            try:
                self._conn = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=self._connect_timeout,
                    application_name=f"fusebox_lock_{self.slot}",
                )
            except psycopg.OperationalError as error:
                raise ConnectionLost(str(error)) from error
        return self._conn

    @property
    def backend_pid(self) -> int | None:
        """The server process holding (or waiting for) the lock, for diagnostics."""
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting."""
        if self.held:
            return True
        try:
            row = (
                self._connection()
                .execute("SELECT pg_try_advisory_lock(hashtext(%s))", [self.slot])
                .fetchone()
            )
        except psycopg.OperationalError as error:
            raise ConnectionLost(str(error)) from error
        self.held = bool(row and row[0])
        return self.held

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock; False if `timeout` seconds passed or `cancel()` was called."""
        if self.held:
            return True
        conn = self._connection()
        self._cancelled.clear()
        try:
            if timeout is not None:
                # lock_timeout bounds the wait inside the server, so no query is left
                # queued behind the holder when we give up.
                milliseconds = max(1, round(timeout * 1000))
                conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{milliseconds}ms"])
            try:
                if self._cancelled.is_set():
                    return False
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [self.slot])
            except (errors.LockNotAvailable, errors.QueryCanceled):
                return False
            finally:
                if timeout is not None:
                    conn.execute("SELECT set_config('lock_timeout', '0', false)")
        except psycopg.OperationalError as error:
            raise ConnectionLost(str(error)) from error
        self.held = True
        return True

    def cancel(self) -> None:
        """Make a blocked `acquire()` return False. Safe from any thread."""
        self._cancelled.set()
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.cancel_safe()

    def is_alive(self) -> bool:
        """Whether the lock connection still works; if not, the lock is gone with it."""
        if self._conn is None or self._conn.closed:
            self.held = False
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.OperationalError:
            self.held = False
            self._conn.close()
            return False
        return True

    def release(self) -> None:
        if self.held and self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [self.slot])
            except psycopg.OperationalError:
                self._conn.close()  # closing the session releases the lock anyway
        self.held = False

    def close(self) -> None:
        self.held = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ReplicationLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
