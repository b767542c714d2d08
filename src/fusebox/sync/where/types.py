"""The Postgres types a where clause can use, and the catalog facts the type checker needs.

Only types whose every operation here is implemented exactly are supported; a column of
any other type (jsonb, interval, bytea, char(n), ...) can exist in the table but cannot be
referenced in a clause.
"""

from __future__ import annotations

from dataclasses import dataclass

INTEGERS = ("int2", "int4", "int8")
FLOATS = ("float4", "float8")
NUMBERS = (*INTEGERS, "numeric", *FLOATS)
STRINGS = ("text", "varchar")
DATETIMES = ("date", "time", "timestamp", "timestamptz")
# jsonb is only readable (IS NULL, ::text, concat): its operators are not implemented.
BUILTINS = frozenset((*NUMBERS, *STRINGS, *DATETIMES, "bool", "uuid", "jsonb"))

# Integer ranges, for overflow checks after every operation, as Postgres checks them.
INT_RANGE = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}

# Names Postgres prints (format_type) or accepts as synonyms, mapped to pg_type names.
_ALIASES = {
    "smallint": "int2",
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "float": "float8",
    "decimal": "numeric",
    "boolean": "bool",
    "character varying": "varchar",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
}

# Readable names for messages, as Postgres spells them in its own errors.
_DISPLAY = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "varchar": "character varying",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
}


@dataclass(frozen=True, slots=True)
class EnumType:
    """A user enum. Labels, when known, let bad literals be rejected at compile time."""

    name: str
    schema: str | None = None
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PgType:
    """A type in the checker: a builtin name or an enum, possibly as an array.

    Postgres does not distinguish array dimensions in types (`int4[]` = `int4[][]`),
    so neither do we; dimensions are a property of values.
    """

    name: str
    array: bool = False
    enum: EnumType | None = None

    @property
    def element(self) -> PgType:
        return PgType(self.name, False, self.enum)

    def array_of(self) -> PgType:
        return PgType(self.name, True, self.enum)

    @property
    def category(self) -> str:
        """pg_type.typcategory: operators and common types are resolved within one."""
        if self.array:
            return "A"
        if self.enum is not None:
            return "E"
        return _CATEGORY.get(self.name, "X")

    @property
    def preferred(self) -> bool:
        return not self.array and self.enum is None and self.name in _PREFERRED

    @property
    def is_unknown(self) -> bool:
        return self.name == "unknown"

    def sql(self) -> str:
        """The type as written in a cast in generated SQL."""
        if self.enum is not None:
            base = quote_ident(self.enum.name)
            if self.enum.schema:
                base = f"{quote_ident(self.enum.schema)}.{base}"
        else:
            base = self.name
        return base + "[]" if self.array else base

    def __str__(self) -> str:
        base = self.enum.name if self.enum is not None else _DISPLAY.get(self.name, self.name)
        return base + "[]" if self.array else base


_CATEGORY = {
    **dict.fromkeys(NUMBERS, "N"),
    **dict.fromkeys(STRINGS, "S"),
    **dict.fromkeys(DATETIMES, "D"),
    "bool": "B",
    "uuid": "U",
    "jsonb": "J",
}
_PREFERRED = frozenset(("float8", "text", "timestamptz", "bool"))

UNKNOWN = PgType("unknown")
BOOL = PgType("bool")
INT2 = PgType("int2")
INT4 = PgType("int4")
INT8 = PgType("int8")
NUMERIC = PgType("numeric")
FLOAT4 = PgType("float4")
FLOAT8 = PgType("float8")
TEXT = PgType("text")
VARCHAR = PgType("varchar")
UUID = PgType("uuid")
DATE = PgType("date")
TIME = PgType("time")
TIMESTAMP = PgType("timestamp")
TIMESTAMPTZ = PgType("timestamptz")

# pg_cast entries with castcontext 'i' between supported types. Implicit casts are what
# operator and common-type resolution may insert without being asked.
_IMPLICIT = {
    "int2": {"int4", "int8", "numeric", "float4", "float8"},
    "int4": {"int8", "numeric", "float4", "float8"},
    "int8": {"numeric", "float4", "float8"},
    "numeric": {"float4", "float8"},
    "float4": {"float8"},
    "varchar": {"text"},
    "text": {"varchar"},
    "date": {"timestamp", "timestamptz"},
    "timestamp": {"timestamptz"},
}


def implicitly_castable(source: PgType, target: PgType) -> bool:
    if source == target or source.is_unknown:
        return True
    if source.array != target.array or source.enum is not None or target.enum is not None:
        return False
    return target.name in _IMPLICIT.get(source.name, ())


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A column's type as the catalog describes it.

    `name` is pg_type.typname (of the element type, for arrays), `dims` > 0 makes it an
    array, and `kind` is pg_type.typtype ("e" for enums). `enum_labels`, when given, lets
    a literal that is not a label be rejected up front, as Postgres would reject it.
    """

    name: str
    dims: int = 0
    kind: str = "b"
    enum_labels: tuple[str, ...] | None = None
    schema: str | None = None

    def to_pg_type(self) -> PgType | None:
        """The checker's type, or None when the type is not supported in where clauses."""
        name = self.name
        array = self.dims > 0
        if name.endswith("[]"):
            name, array = name[:-2], True
        if self.kind == "e" or self.enum_labels is not None:
            labels = tuple(self.enum_labels) if self.enum_labels is not None else None
            return PgType(name, array, EnumType(name, self.schema, labels))
        if name.startswith("_") and name[1:] in BUILTINS:
            name, array = name[1:], True
        name = _ALIASES.get(name, name)
        if name not in BUILTINS or (array and name == "jsonb"):
            return None
        return PgType(name, array)


def builtin_type(names: list[str]) -> PgType | None:
    """A cast target named in SQL (`int4`, `pg_catalog.int4`), if it is a supported builtin."""
    if len(names) == 2 and names[0] == "pg_catalog":
        names = names[1:]
    if len(names) != 1:
        return None
    name = _ALIASES.get(names[0], names[0])
    return PgType(name) if name in BUILTINS else None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
