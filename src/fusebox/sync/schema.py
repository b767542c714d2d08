"""Tables as Postgres describes them: columns, types, primary keys, and the schema header.

The `electric-schema` header tells clients how to parse each column's text value, so its
type names and modifiers follow Postgres's catalog (`typname`, element type for arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import psycopg

# Session settings under which every value is rendered as text, for snapshots and for
# replication alike, so that a value reads the same whichever path delivered it.
SESSION_SETTINGS = {
    "bytea_output": "hex",
    "DateStyle": "ISO, DMY",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "IntervalStyle": "iso_8601",
}


def session_options() -> str:
    """The settings as a libpq `options` value (spaces in values escaped)."""
    return " ".join(
        "-c {}={}".format(key, value.replace(" ", "\\ ")) for key, value in SESSION_SETTINGS.items()
    )


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_name: str
    type_oid: int
    not_null: bool
    pk_index: int | None
    dims: int = 0
    # The element type's name for arrays, else the type's own name.
    element_type: str = ""
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    kind: str = "b"  # typtype: b base, e enum, d domain, c composite, r range


@dataclass(frozen=True, slots=True)
class Table:
    oid: int
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    replica_identity: str = "d"
    by_name: dict[str, Column] = field(default_factory=dict, compare=False, hash=False)

    @property
    def relation(self) -> tuple[str, str]:
        return (self.schema, self.name)

    def column(self, name: str) -> Column | None:
        return self.by_name.get(name)


class TableNotFound(LookupError):
    pass


_TABLE_QUERY = """
SELECT c.oid, n.nspname, c.relname, c.relreplident
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

_COLUMNS_QUERY = """
SELECT a.attname, a.attnotnull, a.atttypid, a.atttypmod, a.attndims,
       t.typname, t.typtype, t.typcategory, et.typname,
       (SELECT array_position(i.indkey::int2[], a.attnum)
          FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _modifiers(type_name: str, typmod: int) -> dict[str, int]:
    if typmod < 0:
        return {}
    if type_name in ("varchar", "bpchar", "bit", "varbit"):
        return {"max_length" if type_name != "bit" else "length": typmod - 4}
    if type_name == "numeric":
        value = typmod - 4
        return {"precision": (value >> 16) & 0xFFFF, "scale": value & 0xFFFF}
    if type_name in ("timestamp", "timestamptz", "time", "timetz", "interval"):
        return {"precision": typmod & 0xFFFF}
    return {}


async def inspect_table(conn: psycopg.AsyncConnection, schema: str, name: str) -> Table:
    """Describe a table or partitioned table; raises TableNotFound."""
    async with conn.cursor() as cursor:
        await cursor.execute(_TABLE_QUERY, (schema, name))
        found = await cursor.fetchone()
        if found is None:
            raise TableNotFound(f'Table "{schema}"."{name}" does not exist')
        oid, nspname, relname, replident = found
        await cursor.execute(_COLUMNS_QUERY, (oid,))
        columns = []
        for row in await cursor.fetchall():
            attname, notnull, typoid, typmod, ndims, typname, typtype, category, elem, pk = row
            is_array = category == "A"
            element = elem if is_array and elem else typname
            mods = _modifiers(element, typmod)
            columns.append(
                Column(
                    name=attname,
                    type_name=typname,
                    type_oid=typoid,
                    not_null=bool(notnull),
                    pk_index=pk,  # indkey is a 0-based int2vector
                    dims=max(ndims, 1) if is_array else 0,
                    element_type=element,
                    max_length=mods.get("max_length"),
                    precision=mods.get("precision"),
                    scale=mods.get("scale"),
                    kind=typtype,
                )
            )
    keyed = sorted((c for c in columns if c.pk_index is not None), key=lambda c: c.pk_index)
    primary_key = tuple(c.name for c in keyed)
    if not primary_key:
        # Without a primary key every column together identifies a row, as in Electric.
        primary_key = tuple(sorted(c.name for c in columns))
    return Table(
        oid,
        nspname,
        relname,
        tuple(columns),
        primary_key,
        replident,
        {c.name: c for c in columns},
    )


def schema_header(table: Table, selected: tuple[str, ...]) -> str:
    """The `electric-schema` header value for the selected columns."""
    described = {}
    for name in selected:
        column = table.by_name[name]
        entry: dict[str, object] = {"type": column.element_type or column.type_name}
        if column.dims:
            entry["dims"] = column.dims
        if column.pk_index is not None:
            entry["pk_index"] = column.pk_index
        if column.not_null:
            entry["not_null"] = True
        if column.max_length is not None:
            entry["max_length"] = column.max_length
        if column.precision is not None:
            entry["precision"] = column.precision
        if column.scale is not None:
            entry["scale"] = column.scale
        described[name] = entry
    return orjson.dumps(described).decode()
