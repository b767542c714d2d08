"""Logical replication from Postgres: pgoutput decoding, slot, publication and lock.

Knows nothing of shapes or HTTP. See client.py for the startup sequence.
"""

from .aio import AsyncReplicationStream
from .client import (
    DEFAULT_STATUS_INTERVAL,
    ReplicationConnection,
    ReplicationStream,
    SlotInfo,
    SystemIdentity,
    check_identity,
)
from .errors import (
    ConnectionLost,
    IdentityChanged,
    ReplicationError,
    ServerError,
    SlotInUse,
    SlotInvalidated,
    SlotMissing,
    SystemIdChanged,
    TableNotFound,
    TimelineChanged,
)
from .lock import ReplicationLock
from .lsn import format_lsn, parse_lsn
from .names import DEFAULT_NAMES, ReplicationNames
from .pgoutput import UNCHANGED_TOAST, DecodeError, Decoder, PgOutputMessage
from .publication import (
    add_table,
    drop_publication,
    ensure_publication,
    published_tables,
    remove_table,
)

__all__ = [
    "DEFAULT_NAMES",
    "DEFAULT_STATUS_INTERVAL",
    "UNCHANGED_TOAST",
    "AsyncReplicationStream",
    "ConnectionLost",
    "DecodeError",
    "Decoder",
    "IdentityChanged",
    "PgOutputMessage",
    "ReplicationConnection",
    "ReplicationError",
    "ReplicationLock",
    "ReplicationNames",
    "ReplicationStream",
    "ServerError",
    "SlotInUse",
    "SlotInfo",
    "SlotInvalidated",
    "SlotMissing",
    "SystemIdChanged",
    "SystemIdentity",
    "TableNotFound",
    "TimelineChanged",
    "add_table",
    "check_identity",
    "drop_publication",
    "ensure_publication",
    "format_lsn",
    "parse_lsn",
    "published_tables",
    "remove_table",
]
