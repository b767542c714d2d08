"""Shape log items: the JSON objects clients receive, built in Python or in Postgres.

Snapshots build items inside Postgres (text concatenation per row, see
`snapshot_items_sql`) and live changes build them here; both must produce the same keys and
values, so the builders sit side by side in this module.

A key is `"schema"."table"` followed by `/"value"` per primary-key column (`/` doubled,
NULL as `/_`); relation names double `/` and `.`.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from fusebox.sync.schema import Table

Row = dict[str, str | None]


def _escape_relation(part: str) -> str:
    return part.replace("/", "//").replace(".", "..")


def key_prefix(table: Table) -> str:
    return f'"{_escape_relation(table.schema)}"."{_escape_relation(table.name)}"'


def build_key(prefix: str, row: Row, primary_key: Sequence[str]) -> str:
    if len(primary_key) == 1:  # the common case, without the list and join below
        value = row.get(primary_key[0])
        return prefix + ("/_" if value is None else '/"' + value.replace("/", "//") + '"')
    parts = [prefix]
    for column in primary_key:
        value = row.get(column)
        parts.append("/_" if value is None else '/"' + value.replace("/", "//") + '"')
    return "".join(parts)


def change_item(
    operation: str,
    key: str,
    value: Row,
    relation: tuple[str, str],
    lsn: int,
    op_position: int,
    xid: int,
    *,
    old_value: Row | None = None,
    last: bool = False,
    extra: dict | None = None,
) -> bytes:
    headers: dict = {
        "operation": operation,
        "relation": relation,
        "lsn": str(lsn),
        "op_position": op_position,
        "txids": [xid],
    }
    if last:
        headers["last"] = True
    if extra:
        headers.update(extra)
    item: dict = {"key": key, "value": value, "headers": headers}
    if old_value is not None:
        item["old_value"] = old_value
    return orjson.dumps(item)


_OPERATIONS = {
    op: b',"headers":{"operation":"' + op.encode() + b'","relation":'
    for op in ("insert", "update", "delete")
}


class ChangeEncoder:
    """`change_item` for the items of one transaction in one shape, as byte templates.

    Everything but the key, the values and the op position is the same for the whole
    transaction, so it is encoded once; the output is byte-for-byte what `change_item`
    gives. Building the nested dicts for orjson was a third of the routing side's time
    when one shape takes every row.
    """

    __slots__ = ("_lsn", "_middle", "_relation", "_txids", "_xid")

    def __init__(self, relation: tuple[str, str], lsn: int, xid: int) -> None:
        self._relation = relation
        self._lsn = lsn
        self._xid = xid
        self._middle = (
            orjson.dumps(relation) + b',"lsn":"' + str(lsn).encode() + b'","op_position":'
        )
        self._txids = b',"txids":[' + str(xid).encode() + b"]"

    def encode(
        self,
        operation: str,
        key: str,
        value: Row,
        op_position: int,
        old_value: Row | None = None,
        last: bool = False,
        extra: dict | None = None,
    ) -> bytes:
        if extra:  # key changes: rare, and their headers vary
            return change_item(
                operation, key, value, self._relation, self._lsn, op_position, self._xid,
                old_value=old_value, last=last, extra=extra,
            )  # fmt: skip
        parts = [
            b'{"key":',
            orjson.dumps(key),
            b',"value":',
            orjson.dumps(value),
            _OPERATIONS[operation],
            self._middle,
            str(op_position).encode(),
            self._txids,
            b',"last":true}' if last else b"}",
        ]
        if old_value is not None:
            parts.append(b',"old_value":')
            parts.append(orjson.dumps(old_value))
        parts.append(b"}")
        return b"".join(parts)


def control_item(control: str, **fields: object) -> bytes:
    return orjson.dumps({"headers": {"control": control, **fields}})


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def snapshot_item_sql(
    table: Table, columns: tuple[str, ...], extra_headers: dict | None = None
) -> str:
    """A SQL expression rendering one row as its snapshot item (compact JSON text)."""
    # json_object(keys[], values[]) has no argument limit, unlike json_build_object.
    names = ", ".join(quote_literal(column) for column in columns)
    values = ", ".join(_as_text(table, column) for column in columns)
    headers = orjson.dumps(
        {"operation": "insert", "relation": table.relation, **(extra_headers or {})}
    ).decode()
    return (
        "json_build_object("
        f"'key', {_key_sql(table)}, "
        f"'value', json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[]), "
        f"'headers', {quote_literal(headers)}::json"
        ")::text"
    )


# Types whose text output (under `schema.SESSION_SETTINGS`) never holds a character JSON
# escapes (`"`, `\\`, control characters): their values go into an item unescaped. Domains,
# enums, arrays and anything not listed are escaped by `to_json`.
_PLAIN_TYPES = frozenset(
    {
        "bool", "int2", "int4", "int8", "oid", "xid", "xid8", "float4", "float8", "numeric",
        "date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid",
        "bit", "varbit", "macaddr", "macaddr8", "inet", "cidr", "pg_lsn",
    }
)  # fmt: skip
# Of those, the ones whose text never holds `/`, which keys double.
_SLASH_FREE = _PLAIN_TYPES - {"inet", "cidr", "pg_lsn"}


def _plain(table: Table, column: str, types: frozenset[str] = _PLAIN_TYPES) -> bool:
    described = table.column(column)
    return described is not None and described.kind == "b" and described.type_name in types


def snapshot_items_sql(table: Table, columns: tuple[str, ...]) -> str:
    """A SQL expression rendering one row as its framed snapshot item.

    The result is the compact JSON item followed by the log's `,\\n` separator: what
    `change_item` builds for an insert of the row, without the lsn/op_position/txids
    headers. It is plain text concatenation, measured several times cheaper for Postgres
    than `json_build_object`: values of `_PLAIN_TYPES` go in as they are, others through
    `to_json`. Subset snapshots still use `snapshot_item_sql`.
    """
    pieces: list[tuple[bool, str]] = []  # (is SQL, text); literals are JSON text

    def add(text: str, sql: bool = False) -> None:
        if not sql and pieces and not pieces[-1][0]:
            pieces[-1] = (False, pieces[-1][1] + text)
        else:
            pieces.append((sql, text))

    if all(_plain(table, c, _SLASH_FREE) and _not_null(table, c) for c in table.primary_key):
        add('{"key":' + orjson.dumps(key_prefix(table)).decode()[:-1])
        for column in table.primary_key:
            add('/\\"')
            add(_as_text(table, column), sql=True)
            add('\\"')
        add('"')
    else:
        add('{"key":')
        add(f"to_json({_key_sql(table)})::text", sql=True)
    add(',"value":{')
    for index, column in enumerate(columns):
        add(("," if index else "") + orjson.dumps(column).decode() + ":")
        text = _as_text(table, column)
        if not _plain(table, column):
            add(f"coalesce(to_json({text})::text, 'null')", sql=True)
        elif _not_null(table, column):
            add('"')
            add(text, sql=True)
            add('"')
        else:
            add(f"coalesce('\"' || {text} || '\"', 'null')", sql=True)
    headers = orjson.dumps({"operation": "insert", "relation": table.relation}).decode()
    add('},"headers":' + headers + "},\n")
    return " || ".join(text if sql else quote_literal(text) for sql, text in pieces)


def _not_null(table: Table, column: str) -> bool:
    described = table.column(column)
    return described is not None and described.not_null


def _key_sql(table: Table) -> str:
    """The key as SQL text, as `build_key` builds it."""
    parts = [quote_literal(key_prefix(table))]
    for column in table.primary_key:
        text = _as_text(table, column)
        parts.append(f"coalesce('/\"' || replace({text}, '/', '//') || '\"', '/_')")
    return " || ".join(parts)


def _as_text(table: Table, column: str) -> str:
    """A column as its text output, as pgoutput sends it."""
    ident = quote_ident(column)
    described = table.column(column)
    if described is not None and described.type_name == "bpchar":
        # `::text` strips char(n) padding, which pgoutput keeps; concat() keeps it too.
        return f"CASE WHEN {ident} IS NULL THEN NULL ELSE concat({ident}, '') END"
    return f"{ident}::text"
