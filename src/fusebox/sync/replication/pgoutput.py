"""Decoder for `pgoutput`, Postgres's built-in logical decoding output plugin.

Covers the message formats of protocol versions 1 and 2 ("Logical Replication Message
Formats" in the Postgres protocol docs): Begin, Commit, Origin, Relation, Type, Insert,
Update, Delete, Truncate, Message, and v2's Stream Start/Stop/Commit/Abort. Versions 3
and 4 only add messages for options we never request (two-phase commit, parallel
streaming), except that a v4 Stream Abort may carry two extra fields, which we read when
present.

The decoder is stateful for two reasons the protocol imposes:
- Changes name their table by relation id only; the Relation message that describes it
  comes once, earlier in the session, so we cache it and hand the cached `Relation` to
  each change.
- Between Stream Start and Stream Stop, Relation, Type, Insert, Update, Delete, Truncate
  and Message carry a leading transaction id that they lack elsewhere. Stream Start and
  Relation name the top-level transaction, but a change made in a subtransaction names
  the subtransaction, which is what a Stream Abort for that subtransaction refers to: a
  consumer buffering a streamed transaction must keep changes by that xid.

Values stay as Postgres renders them in text, decoded from UTF-8 (the client opens the
connection with `client_encoding=UTF8`, and the walsender converts to it). `None` is SQL
NULL and `UNCHANGED_TOAST` is a TOASTed value the update did not touch, which the server
does not resend: they must not be confused, since one means "now NULL" and the other
"whatever it was".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias


class DecodeError(ValueError):
    """Bytes that are not a pgoutput message we understand."""


class UnchangedToast:
    """The value of a TOASTed column that an update left alone (tuple kind `u`)."""

    __slots__ = ()
    _instance: UnchangedToast | None = None

    def __new__(cls) -> UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        # Pickle by name, so the sentinel stays one object (and `is` keeps working) when
        # messages cross into another process.
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = UnchangedToast()

# One column of a tuple: text, NULL, unchanged TOAST, or bytes (only with `binary 'true'`).
Value: TypeAlias = str | UnchangedToast | bytes | None
Row: TypeAlias = tuple[Value, ...]

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def pg_timestamp_to_datetime(microseconds: int) -> datetime:
    """Protocol timestamps count microseconds since 2000-01-01 UTC."""
    return _PG_EPOCH + timedelta(microseconds=microseconds)


@dataclass(slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    # Part of the replica identity (the primary key by default): flag bit 1 in the protocol.
    is_key: bool


@dataclass(slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    # pg_class.relreplident: d default (primary key), n nothing, f full, i index.
    replica_identity: str
    columns: tuple[Column, ...]
    xid: int | None = None
    # Derived from `columns` once, since it is read for every row (columns never change).
    column_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.column_names = tuple(column.name for column in self.columns)

    def as_dict(self, row: Row) -> dict[str, Value]:
        return dict(zip(self.column_names, row, strict=True))


@dataclass(slots=True)
class Begin:
    final_lsn: int
    commit_ts: int
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    # What to acknowledge once the transaction is durable: replication resumed from here
    # skips this transaction, resumed from `commit_lsn` would replay it.
    end_lsn: int
    commit_ts: int


@dataclass(slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(slots=True)
class Type:
    type_oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(slots=True)
class Insert:
    relation: Relation
    new_tuple: Row
    xid: int | None = None

    @property
    def relation_id(self) -> int:
        return self.relation.relation_id


@dataclass(slots=True)
class Update:
    relation: Relation
    new_tuple: Row
    # `K`: the old key (the key changed, or the identity is an index), other columns None;
    # `O`: the whole old row (REPLICA IDENTITY FULL); None: no old tuple was sent.
    old_kind: str | None = None
    old_tuple: Row | None = None
    xid: int | None = None

    @property
    def relation_id(self) -> int:
        return self.relation.relation_id


@dataclass(slots=True)
class Delete:
    relation: Relation
    old_kind: str
    old_tuple: Row
    xid: int | None = None

    @property
    def relation_id(self) -> int:
        return self.relation.relation_id


@dataclass(slots=True)
class Truncate:
    relations: tuple[Relation, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None

    @property
    def relation_ids(self) -> tuple[int, ...]:
        return tuple(relation.relation_id for relation in self.relations)


@dataclass(slots=True)
class Message:
    """A `pg_logical_emit_message` payload (only sent with `messages 'true'`)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(slots=True)
class StreamStop:
    pass


@dataclass(slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(slots=True)
class StreamAbort:
    xid: int
    # Equal to `xid` when the whole transaction aborted, else the aborted subtransaction.
    subxact_xid: int
    # Only sent by protocol 4 with parallel streaming.
    abort_lsn: int | None = None
    abort_ts: int | None = None


PgOutputMessage: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | Message
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
)

_U8 = struct.Struct(">B").unpack_from
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from
_STREAM_COMMIT = struct.Struct(">IBQQq").unpack_from
_STREAM_START = struct.Struct(">IB").unpack_from
_STREAM_ABORT = struct.Struct(">II").unpack_from
_STREAM_ABORT_V4 = struct.Struct(">QQ").unpack_from
_COLUMN = struct.Struct(">Ii").unpack_from
_MESSAGE_HEAD = struct.Struct(">BQ").unpack_from

_TRUNCATE_CASCADE = 1
_TRUNCATE_RESTART_IDENTITY = 2

_TEXT = ord("t")
_NULL = ord("n")
_TOAST = ord("u")
_BINARY = ord("b")
_NEW = ord("N")
_KEY = ord("K")
_OLD = ord("O")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[Row, int]:
    # The hot path: one call per row image. Kept flat (no helper calls per column).
    ncols = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(ncols):
        kind = buf[pos]
        if kind == _TEXT:
            start = pos + 5
            pos = start + _U32(buf, pos + 1)[0]
            append(buf[start:pos].decode())
        elif kind == _NULL:
            append(None)
            pos += 1
        elif kind == _TOAST:
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == _BINARY:
            start = pos + 5
            pos = start + _U32(buf, pos + 1)[0]
            append(buf[start:pos])
        else:
            raise DecodeError(f"unknown tuple column kind {kind!r}")
    if pos > len(buf):
        raise DecodeError("tuple data runs past the end of the message")
    return tuple(values), pos


class Decoder:
    """Turns pgoutput payloads (the data of XLogData messages) into message objects.

    One decoder per replication session: the relation cache is only valid for the
    session that sent the Relation messages.
    """

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.in_stream = False
        self._handlers = {
            ord("B"): self._begin,
            ord("C"): self._commit,
            ord("O"): self._origin,
            ord("R"): self._relation,
            ord("Y"): self._type,
            ord("I"): self._insert,
            ord("U"): self._update,
            ord("D"): self._delete,
            ord("T"): self._truncate,
            ord("M"): self._message,
            ord("S"): self._stream_start,
            ord("E"): self._stream_stop,
            ord("c"): self._stream_commit,
            ord("A"): self._stream_abort,
        }

    def decode(self, buf: bytes, pos: int = 0) -> PgOutputMessage:
        """Decode the message starting at `buf[pos]` and running to the end of `buf`."""
        if pos >= len(buf):
            raise DecodeError("empty message")
        handler = self._handlers.get(buf[pos])
        if handler is None:
            raise DecodeError(f"unsupported pgoutput message type {chr(buf[pos])!r}")
        try:
            message, end = handler(buf, pos + 1)
        except (struct.error, IndexError, ValueError) as error:
            if isinstance(error, DecodeError):
                raise
            raise DecodeError(f"malformed {chr(buf[pos])!r} message: {error}") from error
        if end != len(buf):
            raise DecodeError(
                f"{chr(buf[pos])!r} message has {len(buf) - end} unexpected trailing bytes"
            )
        return message

    def _xid(self, buf: bytes, pos: int) -> tuple[int | None, int]:
        if self.in_stream:
            return _U32(buf, pos)[0], pos + 4
        return None, pos

    def _lookup(self, relation_id: int) -> Relation:
        try:
            return self.relations[relation_id]
        except KeyError:
            raise DecodeError(
                f"change for relation {relation_id} before its Relation message"
            ) from None

    def _begin(self, buf: bytes, pos: int) -> tuple[Begin, int]:
        return Begin(*_BEGIN(buf, pos)), pos + 20

    def _commit(self, buf: bytes, pos: int) -> tuple[Commit, int]:
        return Commit(*_COMMIT(buf, pos)), pos + 25

    def _origin(self, buf: bytes, pos: int) -> tuple[Origin, int]:
        (lsn,) = _U64(buf, pos)
        name, pos = _cstring(buf, pos + 8)
        return Origin(lsn, name), pos

    def _relation(self, buf: bytes, pos: int) -> tuple[Relation, int]:
        xid, pos = self._xid(buf, pos)
        (relation_id,) = _U32(buf, pos)
        namespace, pos = _cstring(buf, pos + 4)
        name, pos = _cstring(buf, pos)
        replica_identity = chr(buf[pos])
        (ncols,) = _U16(buf, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            column_name, pos = _cstring(buf, pos + 1)
            type_oid, type_modifier = _COLUMN(buf, pos)
            pos += 8
            columns.append(Column(column_name, type_oid, type_modifier, bool(flags & 1)))
        relation = Relation(relation_id, namespace, name, replica_identity, tuple(columns), xid)
        # A later Relation for the same id (after ALTER TABLE) replaces the old shape.
        self.relations[relation_id] = relation
        return relation, pos

    def _type(self, buf: bytes, pos: int) -> tuple[Type, int]:
        xid, pos = self._xid(buf, pos)
        (type_oid,) = _U32(buf, pos)
        namespace, pos = _cstring(buf, pos + 4)
        name, pos = _cstring(buf, pos)
        return Type(type_oid, namespace, name, xid), pos

    def _insert(self, buf: bytes, pos: int) -> tuple[Insert, int]:
        xid, pos = self._xid(buf, pos)
        relation = self._lookup(_U32(buf, pos)[0])
        if buf[pos + 4] != _NEW:
            raise DecodeError("insert without a new tuple")
        row, pos = _tuple(buf, pos + 5)
        return Insert(relation, row, xid), pos

    def _update(self, buf: bytes, pos: int) -> tuple[Update, int]:
        xid, pos = self._xid(buf, pos)
        relation = self._lookup(_U32(buf, pos)[0])
        pos += 4
        kind = buf[pos]
        old_kind = None
        old_tuple = None
        if kind in (_KEY, _OLD):
            old_kind = chr(kind)
            old_tuple, pos = _tuple(buf, pos + 1)
            kind = buf[pos]
        if kind != _NEW:
            raise DecodeError("update without a new tuple")
        row, pos = _tuple(buf, pos + 1)
        return Update(relation, row, old_kind, old_tuple, xid), pos

    def _delete(self, buf: bytes, pos: int) -> tuple[Delete, int]:
        xid, pos = self._xid(buf, pos)
        relation = self._lookup(_U32(buf, pos)[0])
        kind = buf[pos + 4]
        if kind not in (_KEY, _OLD):
            raise DecodeError("delete without an old tuple")
        row, pos = _tuple(buf, pos + 5)
        return Delete(relation, chr(kind), row, xid), pos

    def _truncate(self, buf: bytes, pos: int) -> tuple[Truncate, int]:
        xid, pos = self._xid(buf, pos)
        (count,) = _U32(buf, pos)
        options = buf[pos + 4]
        pos += 5
        ids = struct.unpack_from(f">{count}I", buf, pos)
        relations = tuple(self._lookup(relation_id) for relation_id in ids)
        truncate = Truncate(
            relations,
            bool(options & _TRUNCATE_CASCADE),
            bool(options & _TRUNCATE_RESTART_IDENTITY),
            xid,
        )
        return truncate, pos + 4 * count

    def _message(self, buf: bytes, pos: int) -> tuple[Message, int]:
        xid, pos = self._xid(buf, pos)
        flags, lsn = _MESSAGE_HEAD(buf, pos)
        prefix, pos = _cstring(buf, pos + 9)
        (length,) = _U32(buf, pos)
        content = bytes(buf[pos + 4 : pos + 4 + length])
        if len(content) != length:
            raise DecodeError("message content runs past the end of the message")
        return Message(bool(flags & 1), lsn, prefix, content, xid), pos + 4 + length

    def _stream_start(self, buf: bytes, pos: int) -> tuple[StreamStart, int]:
        xid, first = _STREAM_START(buf, pos)
        self.in_stream = True
        return StreamStart(xid, first == 1), pos + 5

    def _stream_stop(self, buf: bytes, pos: int) -> tuple[StreamStop, int]:
        self.in_stream = False
        return StreamStop(), pos

    def _stream_commit(self, buf: bytes, pos: int) -> tuple[StreamCommit, int]:
        return StreamCommit(*_STREAM_COMMIT(buf, pos)), pos + 29

    def _stream_abort(self, buf: bytes, pos: int) -> tuple[StreamAbort, int]:
        xid, subxact_xid = _STREAM_ABORT(buf, pos)
        pos += 8
        if len(buf) - pos >= 16:
            abort_lsn, abort_ts = _STREAM_ABORT_V4(buf, pos)
            return StreamAbort(xid, subxact_xid, abort_lsn, abort_ts), pos + 16
        return StreamAbort(xid, subxact_xid), pos
