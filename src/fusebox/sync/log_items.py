"""Shape log items: the JSON objects clients receive, built in Python or in Postgres.

Snapshots build items inside Postgres (one `json_build_object` per row, copied out in
binary) and live changes build them here; both must produce the same keys and values, so
the two builders sit side by side in this module.

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
    key_parts = [quote_literal(key_prefix(table))]
    for column in table.primary_key:
        text = _as_text(table, column)
        key_parts.append(f"coalesce('/\"' || replace({text}, '/', '//') || '\"', '/_')")
    # json_object(keys[], values[]) has no argument limit, unlike json_build_object.
    names = ", ".join(quote_literal(column) for column in columns)
    values = ", ".join(_as_text(table, column) for column in columns)
    headers = orjson.dumps(
        {"operation": "insert", "relation": table.relation, **(extra_headers or {})}
    ).decode()
    return (
        "json_build_object("
        f"'key', {' || '.join(key_parts)}, "
        f"'value', json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[]), "
        f"'headers', {quote_literal(headers)}::json"
        ")::text"
    )


def _as_text(table: Table, column: str) -> str:
    """A column as its text output, as pgoutput sends it."""
    ident = quote_ident(column)
    described = table.column(column)
    if described is not None and described.type_name == "bpchar":
        # `::text` strips char(n) padding, which pgoutput keeps; concat() keeps it too.
        return f"CASE WHEN {ident} IS NULL THEN NULL ELSE concat({ident}, '') END"
    return f"{ident}::text"
