"""Failures the caller must tell apart, because each calls for a different recovery.

- `ConnectionLost`: transient. Back off, reconnect, resume from the slot; nothing is lost
  because the slot keeps everything after the last acknowledged position.
- `SlotInUse`: transient too; another walsender (often our own previous connection, not
  yet reaped by the server) still holds the slot.
- `SlotMissing` / `SlotInvalidated`: the slot no longer holds our history. Recreate it and
  throw away everything derived from the old one (Electric purges all shapes).
- `IdentityChanged`: a different cluster (new system id) or a point-in-time restore or
  failover (new timeline) is behind the same address. Also a full purge.
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Base class; `sqlstate` is set when Postgres reported the error."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ConnectionLost(ReplicationError):
    """The connection failed or the server ended the stream (restart, shutdown, network)."""


class SlotMissing(ReplicationError):
    """The replication slot does not exist."""


class SlotInvalidated(ReplicationError):
    """The slot exists but the server discarded WAL it needed (`wal_status = 'lost'`)."""


class SlotInUse(ReplicationError):
    """Another connection is streaming from the slot."""


class IdentityChanged(ReplicationError):
    """The server is not the one (or not on the timeline) the caller last saw."""

    def __init__(self, message: str, expected: object, actual: object) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SystemIdChanged(IdentityChanged):
    pass


class TimelineChanged(IdentityChanged):
    pass


class TableNotFound(ReplicationError):
    pass


class ServerError(ReplicationError):
    """Postgres refused a command for a reason not covered above."""
