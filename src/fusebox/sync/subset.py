"""Subset snapshots: a one-off, narrowed, ordered page of a shape's rows.

A client may ask for part of a shape (`subset__where`, `subset__limit`, ...) on GET, or in
a POST body. The subset's where clause is ANDed with the shape's own, so it can only
narrow what the shape already exposes. The answer carries the snapshot's visibility, so
the client can tell which later changes the page already reflects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson
from pglast import parser

from fusebox.sync.connections import Connections
from fusebox.sync.log_items import quote_ident, snapshot_item_sql
from fusebox.sync.replication.lsn import parse_lsn
from fusebox.sync.schema import Table
from fusebox.sync.shape import ShapeError
from fusebox.sync.where import ColumnType, WhereError, compile_where

_DIRECTIONS = {"SORTBY_ASC": " ASC", "SORTBY_DESC": " DESC", "SORTBY_DEFAULT": ""}
_NULLS = {"SORTBY_NULLS_FIRST": " NULLS FIRST", "SORTBY_NULLS_LAST": " NULLS LAST"}


@dataclass(frozen=True, slots=True)
class Subset:
    where_sql: str | None
    order_by: str | None
    limit: int | None
    offset: int | None


def _error(key: str, message: str) -> ShapeError:
    error = ShapeError("subset", message)
    error.detail = {key: message}  # type: ignore[attr-defined]
    return error


def _integer(value: object, key: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _error(key, f"{key} must be an integer of at least {minimum}")
    return value


def _order_by(text: str, table: Table, columns: tuple[str, ...]) -> str:
    """Validate ORDER BY as column references only, and render it with quoted names."""
    try:
        tree = orjson.loads(parser.parse_sql_json(f"SELECT 1 FROM t ORDER BY {text}"))
    except parser.ParseError as exc:
        raise _error("order_by", f"invalid ORDER BY: {exc}") from None
    statements = tree.get("stmts", [])
    select = statements[0]["stmt"].get("SelectStmt", {}) if len(statements) == 1 else {}
    if set(select) - {"targetList", "fromClause", "sortClause", "limitOption", "op"}:
        raise _error("order_by", "ORDER BY must list columns only")
    rendered = []
    for item in select.get("sortClause", []):
        sort = item["SortBy"]
        fields = sort["node"].get("ColumnRef", {}).get("fields", [])
        if len(fields) != 1 or "String" not in fields[0]:
            raise _error("order_by", "ORDER BY may only name columns of the table")
        name = fields[0]["String"]["sval"]
        if table.column(name) is None or name not in columns:
            raise _error("order_by", f"unknown column {name!r} in ORDER BY")
        if "useOp" in sort:
            raise _error("order_by", "ORDER BY ... USING is not supported")
        direction = _DIRECTIONS.get(sort.get("sortby_dir", "SORTBY_DEFAULT"), "")
        nulls = _NULLS.get(sort.get("sortby_nulls", ""), "")
        rendered.append(f"{quote_ident(name)}{direction}{nulls}")
    if not rendered:
        raise _error("order_by", "ORDER BY is empty")
    return ", ".join(rendered)


def parse_subset(options: dict, table: Table, columns: tuple[str, ...]) -> Subset:
    """Validate subset options: where, params, limit, offset, order_by.

    The where clause and ORDER BY may name only the shape's own columns: a subset narrows
    what the shape exposes and must not become a way to probe columns it leaves out.
    """
    where = options.get("where")
    params = options.get("params") or {}
    if isinstance(params, str):
        try:
            params = orjson.loads(params)
        except orjson.JSONDecodeError:
            raise _error("params", "params must be a JSON object of $n values") from None
    if isinstance(params, list):
        params = {str(i): v for i, v in enumerate(params, 1)}
    if not isinstance(params, dict):
        raise _error("params", "params must be a JSON object of $n values")
    params = {
        str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in params.items()
    }
    where_sql = None
    if where is not None:
        if not isinstance(where, str):
            raise _error("where", "where must be a string")
        types = {
            c.name: ColumnType(c.element_type or c.type_name, c.dims, c.kind)
            for c in table.columns
            if c.name in columns
        }
        try:
            where_sql = compile_where(where, types, params).sql
        except WhereError as exc:
            raise _error("where", str(exc)) from None
    limit = _integer(options.get("limit"), "limit", 1)
    offset = _integer(options.get("offset"), "offset", 0)
    order_by = options.get("order_by")
    if order_by is not None and not isinstance(order_by, str):
        raise _error("order_by", "order_by must be a string")
    if (limit is not None or offset is not None) and not order_by:
        raise _error("order_by", "order_by is required with limit or offset")
    ordered = _order_by(order_by, table, columns) if order_by else None
    return Subset(where_sql, ordered, limit, offset)


async def query_subset(
    connections: Connections,
    table: Table,
    columns: tuple[str, ...],
    shape_where_sql: str | None,
    subset: Subset,
) -> bytes:
    """Run the subset in one repeatable-read snapshot; returns the response body."""
    mark = random.randint(0, 2**31 - 1)
    conditions = [f"({c})" for c in (shape_where_sql, subset.where_sql) if c]
    sql = f"SELECT {snapshot_item_sql(table, columns, {'snapshot_mark': mark})} "
    sql += f"FROM {quote_ident(table.schema)}.{quote_ident(table.name)}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if subset.order_by:
        sql += f" ORDER BY {subset.order_by}"
    if subset.limit is not None:
        sql += f" LIMIT {subset.limit}"
    if subset.offset is not None:
        sql += f" OFFSET {subset.offset}"
    async with connections.connection() as conn:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor = await conn.execute(
            "SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text"
        )
        row = await cursor.fetchone()
        assert row is not None
        visibility, lsn = row
        cursor = await conn.execute(sql)
        items = [r[0].encode() for r in await cursor.fetchall()]
        await conn.rollback()
    xmin, xmax, xip = visibility.split(":")
    metadata = {
        "xmin": xmin,
        "xmax": xmax,
        "xip_list": [x for x in xip.split(",") if x],
        "snapshot_mark": mark,
        "database_lsn": str(parse_lsn(lsn)),
    }
    return b'{"metadata":' + orjson.dumps(metadata) + b',"data":[' + b",".join(items) + b"]}"
