"""Where clauses (`fusebox.sync.where`): parsing, errors, params, each operator family, and
agreement with a real Postgres.

The agreement tests are the point: hypothesis generates clauses from a grammar of the
supported forms, and for every row of a table with columns of many types (NULLs and edge
values included), `matches` on the row's text output must equal what Postgres answers for
both the generated SQL and the client's original clause. Two databases are used: one
with the C collation (where the original text must mean the same thing) and one with
C.UTF-8, where only the generated SQL (which asks for COLLATE "C") is expected to agree.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusebox.sync.where import (
    SESSION_SETTINGS,
    ColumnType,
    WhereClause,
    WhereError,
    WhereEvalError,
    compile_where,
)
from fusebox.sync.where.analyze import Analyzer, parse
from fusebox.sync.where.evaluate import compile_node, fold
from fusebox.sync.where.types import TEXT
from fusebox.sync.where.values import output_formatter, output_parser

# -- the table ------------------------------------------------------------------------------

COLUMNS: dict[str, ColumnType] = {
    "id": ColumnType("int4"),
    "i2": ColumnType("int2"),
    "i4": ColumnType("int4"),
    "i8": ColumnType("int8"),
    "n": ColumnType("numeric"),
    "f4": ColumnType("float4"),
    "f8": ColumnType("float8"),
    "t": ColumnType("text"),
    "v": ColumnType("varchar"),
    "b": ColumnType("bool"),
    "u": ColumnType("uuid"),
    "d": ColumnType("date"),
    "ts": ColumnType("timestamp"),
    "tz": ColumnType("timestamptz"),
    "tm": ColumnType("time"),
    "e": ColumnType("mood", kind="e", enum_labels=("sad", "ok", "happy")),
    "ai": ColumnType("int4", dims=1),
    "at": ColumnType("text", dims=1),
    "an": ColumnType("numeric", dims=1),
    "af": ColumnType("float8", dims=1),
    "j": ColumnType("jsonb"),
}
SQL_TYPES = {
    "id": "int4 PRIMARY KEY",
    "i2": "int2",
    "i4": "int4",
    "i8": "int8",
    "n": "numeric",
    "f4": "float4",
    "f8": "float8",
    "t": "text",
    "v": "varchar(60)",
    "b": "bool",
    "u": "uuid",
    "d": "date",
    "ts": "timestamp",
    "tz": "timestamptz",
    "tm": "time",
    "e": "mood",
    "ai": "int4[]",
    "at": "text[]",
    "an": "numeric[]",
    "af": "float8[]",
    "j": "jsonb",
}

TEXTS = [
    "",
    "a",
    "A",
    "b",
    "abc",
    "ABC",
    "Abc",
    "a%b",
    "a_b",
    "a\\b",
    "é",
    "É",
    "ß",
    "日本",
    " lead",
    "trail ",
    "NULL",
    "it's",
    "x" * 40,
    "😀",
    "aé",
    "a\nb",
    "%",
    "_",
    "10",
    "9",
]
POOLS: dict[str, list[str | None]] = {
    "i2": ["0", "1", "-1", "2", "32767", "-32768", "7", "100"],
    "i4": ["0", "1", "-1", "2", "3", "2147483647", "-2147483648", "42", "-7", "100"],
    "i8": ["0", "1", "-1", "9223372036854775807", "-9223372036854775808", "5000000000", "3", "42"],
    "n": [
        "0",
        "1",
        "1.0",
        "1.00",
        "-2.5",
        "0.1",
        "3.14159",
        "1e20",
        "-0.000001",
        "NaN",
        "Infinity",
        "-Infinity",
        "123456789012345678901234567890.123",
        "2",
        "42",
        "0.3",
    ],
    "f4": [
        "0",
        "-0",
        "1.1",
        "0.1",
        "3.4028235e38",
        "1e-45",
        "NaN",
        "Infinity",
        "-Infinity",
        "16777217",
        "2.5",
        "1",
        "42",
        "-3",
    ],
    "f8": [
        "0",
        "-0",
        "0.1",
        "1e308",
        "5e-324",
        "NaN",
        "Infinity",
        "-Infinity",
        "9007199254740993",
        "2.5",
        "0.30000000000000004",
        "1",
        "42",
        "-3",
        "1.1",
    ],
    "t": list(TEXTS),
    "v": list(TEXTS),
    "b": ["t", "f"],
    "u": [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "12345678-1234-5678-1234-567812345678",
    ],
    "d": [
        "2024-01-01",
        "2000-02-29",
        "0044-03-15 BC",
        "infinity",
        "-infinity",
        "1999-12-31",
        "9999-12-31",
        "10000-01-01",
        "2024-01-02",
        "1970-01-01",
        "4714-11-24 BC",
    ],
    "ts": [
        "2024-01-01 00:00:00",
        "2024-01-01 12:34:56.789",
        "infinity",
        "-infinity",
        "1970-01-01 00:00:00",
        "0001-01-01 00:00:00 BC",
        "2000-01-01 00:00:00.000001",
        "2024-01-02 00:00:00",
        "2024-01-01 23:59:59.999999",
    ],
    "tz": [
        "2024-01-01 00:00:00+00",
        "2024-01-01 05:30:00+05:30",
        "infinity",
        "-infinity",
        "1970-01-01 00:00:00+00",
        "2023-12-31 23:00:00-01",
        "2024-01-02 00:00:00+00",
        "2000-01-01 00:00:00.5+00",
    ],
    "tm": ["00:00:00", "12:34:56.5", "23:59:59.999999", "24:00:00", "12:00:00"],
    "e": ["sad", "ok", "happy"],
    "ai": [
        "{1,2,3}",
        "{}",
        "{NULL,1}",
        "{{1,2},{3,4}}",
        "[0:1]={5,6}",
        "{2147483647}",
        "{1}",
        "{3,2,1}",
        "{2}",
        "{1,2}",
    ],
    "at": ['{"a","b"}', "{}", '{"",NULL}', '{"a,b","c\\"d"}', "{A,a}", "{a}", '{"x y"}'],
    "an": ["{1.0,2.50}", "{NaN}", "{}", "{1}", "{1.00,-0.5}"],
    "af": ["{0,-0,NaN}", "{1.5}", "{}", "{Infinity,NULL}", "{0.1,0.2}"],
    "j": ['{"a":1}', '[1, "x", null]', '{"b": {"c": 1.50}, "a": true}', '"s"'],
}


def _rows(count: int, seed: int) -> list[dict[str, str | None]]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        row: dict[str, str | None] = {"id": str(index + 1)}
        for name, pool in POOLS.items():
            row[name] = None if rng.random() < 0.15 else rng.choice(pool)
        rows.append(row)
    return rows


class Database:
    """A test table in two databases (C collation, and C.UTF-8), and its rows as text."""

    def __init__(self, c: psycopg.Connection, utf8: psycopg.Connection) -> None:
        self.c = c
        self.utf8 = utf8
        self.rows: dict[int, dict[str, str | None]] = {}

    def __repr__(self) -> str:
        return f"<Database of {len(self.rows)} rows>"

    def load(self, rows: list[dict[str, str | None]]) -> None:
        names = list(SQL_TYPES)
        for conn in (self.c, self.utf8):
            conn.execute("TRUNCATE t")
            with conn.cursor() as cursor:
                placeholders = ", ".join(f"%s::{SQL_TYPES[n].split()[0]}" for n in names)
                cursor.executemany(
                    f"INSERT INTO t ({', '.join(names)}) VALUES ({placeholders})",
                    [[row.get(n) for n in names] for row in rows],
                )
        # Read back Postgres's own text output (not `::text`, which spells booleans out):
        # that is what replication delivers.
        cursor = self.c.execute(f"SELECT {', '.join(names)} FROM t ORDER BY id")
        result = cursor.pgresult
        assert result is not None
        self.rows = {}
        for index in range(result.ntuples):
            raw = [result.get_value(index, column) for column in range(len(names))]
            row = {
                n: None if v is None else bytes(v).decode() for n, v in zip(names, raw, strict=True)
            }
            self.rows[int(row["id"])] = row  # type: ignore[arg-type]


def _session_options() -> str:
    return " ".join(
        "-c {}={}".format(k, v.replace(" ", "\\ ")) for k, v in SESSION_SETTINGS.items()
    )


@pytest.fixture(scope="module")
def database(postgres) -> Iterator[Database]:
    admin = psycopg.connect(postgres.url(), autocommit=True)
    names = {"where_c": "C", "where_utf8": "C.UTF-8"}
    for name, locale in names.items():
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
            f"LC_COLLATE '{locale}' LC_CTYPE '{locale}'"
        )
    connections = {}
    for name in names:
        conn = psycopg.connect(postgres.url(name), autocommit=True, options=_session_options())
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        columns = ", ".join(f"{n} {t}" for n, t in SQL_TYPES.items())
        conn.execute(f"CREATE TABLE t ({columns})")
        connections[name] = conn
    db = Database(connections["where_c"], connections["where_utf8"])
    db.load(_rows(48, seed=7))
    yield db
    for conn in connections.values():
        conn.close()
    admin.close()


# -- unit tests -----------------------------------------------------------------------------


def check(where: str, params: dict[str, str] | None = None) -> WhereClause:
    return compile_where(where, COLUMNS, params or {})


def matches(where: str, params: dict[str, str] | None = None, **row: str | None) -> bool:
    """`where` on a row given as text values; unmentioned columns are NULL."""
    full: dict[str, str | None] = dict.fromkeys(COLUMNS)
    full.update(row)
    return check(where, params).matches(full)


def rejects(where: str, fragment: str, params: dict[str, str] | None = None) -> WhereError:
    with pytest.raises(WhereError) as caught:
        check(where, params)
    assert fragment in caught.value.message, caught.value.message
    return caught.value


def test_typical_clause_compiles() -> None:
    clause = check("i4 = 42 AND t ILIKE '%abc%' AND d >= '2024-01-01'")
    assert clause.referenced_columns == {"i4", "t", "d"}
    assert clause.matches({"i4": "42", "t": "xABCx", "d": "2024-03-01"})
    assert not clause.matches({"i4": "41", "t": "xABCx", "d": "2024-03-01"})


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("i4 = ", "syntax error at end of input"),
        ("i4 = = 1", 'At location 5: syntax error at or near "="'),
        ("i4 = 1; SELECT 1", 'unescaped ";"'),
        ("i4 = 1 LIMIT 2", "malformed query ending with SQL clauses"),
        ("i4 = 1 ORDER BY i4", "malformed query ending with SQL clauses"),
        ("i4 = 1 GROUP BY i4", "malformed query ending with SQL clauses"),
        ("true UNION SELECT 1 FROM t WHERE true", "malformed query"),
        ("", "syntax error"),
        ("nope = 1", "At location 0: unknown reference nope"),
        ("t.i4 = 1", "unknown reference t.i4"),
        ("j = '{}'", "operator = on jsonb is not supported"),
        ("j::int4 = 1", "casting jsonb to integer is not supported"),
        ("'{}'::jsonb IS NULL", "jsonb literals are not supported"),
        ("i4 = 'abc'", 'invalid input syntax for type integer: "abc"'),
        ("i2 = 70000::int4 AND i2 = '70000'", 'value "70000" is out of range for type smallint'),
        ("i4 = t", "operator does not exist: integer = text"),
        ("i8 + d > d", "operator does not exist: bigint + date"),
        ("e = 'meh'", 'invalid input value for enum mood: "meh"'),
        ("u = 'not-a-uuid'", "invalid input syntax for type uuid"),
        ("i4", "WHERE clause must return a boolean, not integer"),
        ("t || 'x'", "must return a boolean"),
        ("i4 AND b", "argument of AND must be type boolean, not type integer"),
        ("NOT t", "argument of NOT must be type boolean"),
        ("'1' + '2' = 3", "operator is not unique: unknown + unknown"),
        ("1/0 = 1", "division by zero"),
        ("i4 = 2147483647 + 1", "integer out of range"),
        ("ai = at", "operator does not exist: integer[] = text[]"),
        ("i4 IN (SELECT 1)", "a subquery must select a plain column reference"),
        ("CASE WHEN b THEN true END", "CASE expressions are not supported"),
        ("ts > now()", "unknown or unsupported function now()"),
        ("d = current_date", "CURRENT_DATE"),
        ("count(*) > 1", "aggregate"),
        ("concat(VARIADIC at) = 'x'", "VARIADIC"),
        ("t ~ 'a.*'", "operator ~ is not supported"),
        ("t SIMILAR TO 'a'", "SIMILAR expressions are not supported"),
        ("j ? 'a'", "operator ? on jsonb is not supported"),
        ("(i4, i2) = (1, 2)", "row expressions are not supported"),
        ("ai[1:2] = '{1}'", "array slices are not supported"),
        ("ARRAY[[1], [2]] = ai", "multidimensional ARRAY[] constructors are not supported"),
        ("t::varchar(3) = 'abc'", "type modifiers"),
        ("n ^ 2 > 1", "numeric power"),
        ("t COLLATE \"en_US\" < 'b'", 'only the "C" collation'),
        ("f8::text = '1'", "converting double precision to text is not supported"),
        ("concat(f4) = '1'", "concat() of real is not supported"),
        ("e < 'ok'", "operator < on enums is not supported"),
        ("ai < '{1}'", "operator < on arrays is not supported"),
        ("t::date = d", "casting a text expression to date"),
        ("d = 'yesterday'", 'date literal "yesterday" is not supported'),
        ("ts = '2024-01-01 00:00+02'", "a time zone in a timestamp without time zone literal"),
        ("ts - ts > '1 day'", "is not supported"),
        ("ARRAY[] = ai", "cannot determine type of empty array"),
        ("i4 = $1", "parameter $1 was not provided"),
        ("NULLIF(i4, 1) = 1", "NULLIF"),
        ("i4 IS OF (int4)", "syntax error"),
    ],
)
def test_rejections(where: str, fragment: str) -> None:
    error = rejects(where, fragment)
    assert error.field == "where"
    assert error.errors() == {"where": [error.message]}


def test_unsupported_column_types() -> None:
    columns = {
        "x": ColumnType("interval"),
        "y": ColumnType("bpchar"),
        "z": ColumnType("jsonb", dims=1),
    }
    for name in columns:
        with pytest.raises(WhereError, match="has a type that where clauses do not support"):
            compile_where(f"{name} IS NULL", columns, {})


def test_jsonb_is_readable_but_has_no_operators() -> None:
    assert matches("j IS NOT NULL AND j::text = '{\"a\": 1}'", j='{"a": 1}')
    assert matches("concat(j, '!') = '[1, 2]!'", j="[1, 2]")
    assert matches("j IS NULL")


def test_nul_characters_are_rejected() -> None:
    rejects("t = 'a\x00'", "NUL character")
    rejects("t = $1", "0x00", params={"1": "a\x00"})


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"1": "a", "3": "b"}, "numbered sequentially, starting from 1"),
        ({"2": "a"}, "numbered sequentially, starting from 1"),
        ({"x": "a"}, "Parameters can only use numbers as keys"),
    ],
)
def test_bad_params(params: dict[str, str], fragment: str) -> None:
    error = rejects("t = $1", fragment, params=params)
    assert error.field == "params"


def test_params_the_clause_does_not_use_are_accepted_as_in_electric() -> None:
    clause = check("t = $1", {"1": "a", "2": "b"})
    assert clause.matches({"t": "a"})


def test_params_are_typed_by_context_and_inlined() -> None:
    clause = check(
        "i8 > $1 AND t = $2 AND d = $3", {"1": "5", "2": "it's a \\ test", "3": "2024-01-31"}
    )
    assert "$" not in clause.sql
    assert "'5'::int8" in clause.sql
    assert "E'it''s a \\\\ test'::text" in clause.sql
    assert "'2024-01-31'::date" in clause.sql
    assert clause.matches({"i8": "6", "t": "it's a \\ test", "d": "2024-01-31"})
    # A param behaves as a literal: the same text may take two types.
    assert matches("i4 = $1 AND t = $1", {"1": "7"}, i4="7", t="7")
    rejects("i4 = $1", 'invalid input syntax for type integer: "x"', params={"1": "x"})


def test_three_valued_logic() -> None:
    assert not matches("i4 = 1")  # NULL = 1 is NULL
    assert not matches("NOT (i4 = 1)")
    assert matches("i4 IS NULL")
    assert matches("i4 = 1 OR true")
    assert not matches("i4 = 1 AND true")
    assert matches("(i4 = 1) IS UNKNOWN")
    assert matches("(i4 = 1) IS NOT TRUE")
    assert not matches("(i4 = 1) IS FALSE")
    assert matches("b IS NOT FALSE")  # b is NULL
    assert not matches("i4 NOT IN (1, NULL)", i4="2")  # 2 <> NULL is NULL
    assert matches("i4 IN (1, NULL)", i4="1")
    assert not matches("NULL")
    assert matches("'yes'")
    assert matches("coalesce(b, true)")


def test_comparisons_by_type() -> None:
    assert matches("i2 < i8", i2="-32768", i8="9223372036854775807")
    assert matches("n = 1", n="1.000")
    assert matches("n > 'Infinity'", n="NaN")  # NaN sorts above everything
    assert matches("n = 'NaN'", n="NaN")
    assert matches("f8 = 'NaN'", f8="NaN")
    assert matches("f8 = 0", f8="-0")
    assert not matches("f4 = 1.1", f4="1.1")  # compared in double precision, as in Postgres
    assert matches("f4 = '1.1'", f4="1.1")  # the literal is a float4 here
    assert matches("f4 IN (1.1, 2)", f4="1.1")  # the IN list's common type is real
    assert matches("i8 = 9007199254740993", i8="9007199254740993")
    # Compared in double precision: both sides round to 2^53.
    assert matches("i8 = 9007199254740993::float8", i8="9007199254740992")
    assert matches("t < 'b'", t="B")  # "C" order: uppercase first
    assert matches("t > 'z'", t="é")  # code points, not a dictionary order
    assert matches("v = 'x' AND v < t", v="x", t="y")
    assert matches(
        "u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", u="a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    )
    assert matches("b > false", b="t")
    assert matches("e = 'ok' AND e <> 'sad'", e="ok")
    assert matches("tm > '23:59:59.999999'", tm="24:00:00")


def test_dates_and_timestamps() -> None:
    assert matches("d < '0001-01-01'", d="0044-03-15 BC")
    assert matches("d > '9999-12-31'", d="infinity")
    assert matches("d = ts", d="2024-01-01", ts="2024-01-01 00:00:00")
    assert matches("d < ts", d="2024-01-01", ts="2024-01-01 00:00:00.000001")
    assert matches("ts = tz", ts="2024-01-01 00:00:00", tz="2024-01-01 00:00:00+00")
    assert matches("tz = '2024-01-01 05:30:00+05:30'", tz="2024-01-01 00:00:00+00")
    assert matches("tz = '2024-01-01'", tz="2024-01-01 00:00:00+00")  # UTC session
    assert matches("tz::date = '2023-12-31'", tz="2023-12-31 23:00:00+00")
    assert matches("d + 1 = '2024-03-01'", d="2024-02-29")
    assert matches("'2024-03-01'::date - d = 1", d="2024-02-29")
    assert matches("d + 30 > d", d="2024-01-01")
    assert matches("ts::time = '12:34:56.5'", ts="2024-01-01 12:34:56.5")
    with pytest.raises(WhereEvalError, match="cannot subtract infinite dates"):
        check("d - d = 0").matches({"d": "infinity"})


def test_arithmetic() -> None:
    assert matches("i4 / 2 = 1", i4="3")  # integer division truncates
    assert matches("i4 / 2 = -1", i4="-3")
    assert matches("i4 % 2 = -1", i4="-3")  # the sign of the dividend
    assert matches("n / 3 = 0.33333333333333333333", n="1")
    assert matches("(n / 3)::text = '0.33333333333333333333'", n="1")
    assert matches("(n * 1.50)::text = '3.000'", n="2.0")
    assert matches("(i4 + 0.5)::text = '2.5'", i4="2")
    assert matches("f8 ^ 2 = 9", f8="-3")
    assert matches("|/ f8 = 3", f8="9")
    assert matches("@ i4 = 5", i4="-5")
    assert matches("-i2 = 7", i2="-7")
    assert matches("i4 & 6 = 2 AND i4 | 1 = 3 AND i4 # 1 = 2 AND ~i4 = -4", i4="3")
    with pytest.raises(WhereEvalError, match="integer out of range"):
        check("i4 + 1 > 0").matches({"i4": "2147483647"})
    with pytest.raises(WhereEvalError, match="smallint out of range"):
        check("-i2 > 0").matches({"i2": "-32768"})
    with pytest.raises(WhereEvalError, match="division by zero"):
        check("1 / i4 > 0").matches({"i4": "0"})
    with pytest.raises(WhereEvalError, match="overflow"):
        check("f8 * 10 > 0").matches({"f8": "1e308"})


def test_and_or_are_lenient_about_errors() -> None:
    # Postgres may evaluate either side first; a FALSE anywhere decides an AND.
    assert not check("1 / i4 > 0 AND i4 <> 0").matches({"i4": "0"})
    assert check("1 / i4 > 0 OR i4 = 0").matches({"i4": "0"})
    with pytest.raises(WhereEvalError):
        check("1 / i4 > 0 AND i4 = 0").matches({"i4": "0"})


def test_folding_follows_postgres_short_circuits() -> None:
    assert check("false AND 1/0 = 1").sql == "FALSE"
    rejects("1/0 = 1 AND false", "division by zero")
    assert check("coalesce(1, 1/0) = 1").sql == "TRUE"
    assert check("i4 = NULL").sql == "CAST(NULL AS bool)"


def test_casts() -> None:
    assert matches("t::int4 = 12", t=" 12 ")
    assert matches("t::int4 = 31", t="0x1F")
    assert matches("t::numeric = 1.5", t="1.50")
    assert matches("t::bool", t="YES")
    assert matches("t::float8 = 'Infinity'", t="inf")
    assert matches("n::int4 = 3", n="2.5")  # numeric rounds half away from zero
    assert matches("f8::int4 = 2", f8="2.5")  # float rounds half to even
    assert matches("f8::numeric = 0.1", f8="0.1")
    assert matches("i4::bool", i4="-1")
    assert matches("b::int4 = 1", b="t")
    assert matches("b::text = 'true' AND b || '' = 'true' AND concat(b) = 't'", b="t")
    assert matches("d::text = '0044-03-15 BC'", d="0044-03-15 BC")
    assert matches("tz::text = '2024-01-01 00:00:00.5+00'", tz="2024-01-01 00:00:00.5+00")
    assert matches("ai::int8[] = '{1,2}'", ai="{1,2}")
    assert matches("at::int4[] = '{1,NULL}'", at="{1,NULL}")
    assert matches("ai::text = '[0:1]={5,6}'", ai="[0:1]={5,6}")
    with pytest.raises(WhereEvalError, match="invalid input syntax for type integer"):
        check("t::int4 = 1").matches({"t": "1.5"})
    with pytest.raises(WhereEvalError, match="integer out of range"):
        check("i8::int4 = 1").matches({"i8": "5000000000"})


def test_like_and_ilike() -> None:
    assert matches("t LIKE 'a%'", t="abc")
    assert matches("t LIKE '_b_'", t="abc")
    assert not matches("t LIKE 'a'", t="abc")
    assert matches("t LIKE 'a\\%'", t="a%")
    assert not matches("t LIKE 'a\\%'", t="ab")
    assert matches("t LIKE 'a#_b' ESCAPE '#'", t="a_b")
    assert matches("t LIKE 'a\\b' ESCAPE ''", t="a\\b")
    assert matches("t ILIKE 'ABC'", t="aBc")
    assert not matches("t ILIKE 'é'", t="É")  # the C collation folds ASCII only
    assert matches("t NOT ILIKE 'x%'", t="abc")
    assert matches("t LIKE '%😀'", t="a😀")
    assert not matches("t LIKE 'a\\'", t="ab")  # a dangling escape never matches here
    # Many `%` must not make matching exponential (the pattern comes from a client).
    assert not matches("t LIKE '%a%a%a%a%a%a%a%a%a%a%a%b'", t="a" * 5000)
    assert matches("t = ANY('{x,y}') AND t LIKE ANY('{%x,z}')", t="x")


def test_in_any_all_between_distinct() -> None:
    assert matches("i4 IN (1, 2, i2)", i4="3", i2="3")
    assert matches("t IN ('a', 'b')", t="b")
    assert matches("i4 = ANY(ai)", i4="2", ai="{1,2}")
    assert not matches("i4 = ANY(ai)", i4="3", ai="{1,NULL}")
    assert matches("i4 <> ALL('{}')")  # an empty array: true even for a NULL scalar
    assert not matches("i4 = ANY('{}')", i4="1")
    assert matches("i4 < ALL(ai)", i4="0", ai="{1,2}")
    assert matches("i4 BETWEEN 1 AND 3", i4="3")
    assert not matches("i4 BETWEEN 3 AND 1", i4="2")
    assert matches("i4 BETWEEN SYMMETRIC 3 AND 1", i4="2")
    assert matches("i4 NOT BETWEEN 1 AND 3", i4="4")
    assert matches("i4 IS DISTINCT FROM NULL", i4="1")
    assert matches("i4 IS NOT DISTINCT FROM i2")
    assert matches("ai IS NOT DISTINCT FROM '{1,NULL}'", ai="{1,NULL}")


def test_text_functions() -> None:
    assert matches("lower(t) = 'abcé'", t="ABCé")
    assert matches("upper(t) = 'ABCé'", t="abcé")
    assert matches("t || v = 'ab'", t="a", v="b")
    assert matches("t || i4 = 'a1' AND i4 || t = '1a'", t="a", i4="1")
    assert not matches("t || v = 'a'", t="a")  # || with NULL is NULL
    assert matches(
        "concat(t, NULL, i4, n, d, ai) = 'a11.502024-01-01{1,NULL}'",
        t="a",
        i4="1",
        n="1.50",
        d="2024-01-01",
        ai="{1,NULL}",
    )
    assert matches("greatest(t, v, 'b') = 'b' AND least(i4, 5, NULL) = 5", t="B", v="a", i4="7")


def test_arrays() -> None:
    assert matches("ai @> '{1}' AND ai <@ '{1,2,3}' AND ai && '{3,2}'", ai="{1,2}")
    assert not matches("ai @> '{NULL}'", ai="{1,NULL}")  # a NULL matches nothing
    assert matches("ai @> '{}'", ai="{}")
    assert matches("ai @> '{{1}}'", ai="{1}")  # dimensions do not matter to @>
    assert matches("ai[1] = 5 AND ai[2] IS NULL", ai="{5}")
    assert matches("ai[0] = 5", ai="[0:1]={5,6}")
    assert matches("ai[2][1] = 3 AND ai[1] IS NULL", ai="{{1,2},{3,4}}")
    assert matches("ai <> '{5,6}'", ai="[0:1]={5,6}")  # bounds are part of equality
    assert matches("array_ndims(ai) = 2", ai="{{1,2},{3,4}}")
    assert matches("array_ndims(ai) IS NULL", ai="{}")
    assert matches("ai || 3 = '{1,3}' AND 0 || ai = '{0,1}' AND ai || ai = '{1,1}'", ai="{1}")
    assert matches("array_append(ai, NULL) = '{1,NULL}'", ai="{1}")
    assert matches("array_prepend(0, ai)::text = '[5:7]={0,1,2}'", ai="[5:6]={1,2}")
    assert matches("array_cat(ai, NULL) = ai", ai="{1}")
    literal = r"""'{"a,b","c\"d",NULL,"NULL"}'"""
    assert matches(f"at = {literal}", at=r'{"a,b","c\"d",NULL,"NULL"}')
    assert matches("an @> '{1}' AND af @> '{NaN}'", an="{1.00}", af="{NaN}")
    assert matches("ARRAY[i4, 2] = '{1,2}'", i4="1")
    assert matches("ARRAY[]::int4[] = '{}'")


def test_sql_uses_typed_literals_and_c_collation() -> None:
    clause = check("t < 'b' AND lower(v) = 'x' AND t ILIKE 'a%' AND ts > '2024-01-01'")
    assert clause.sql == (
        '(("t" COLLATE "C" < \'b\'::text) AND (lower(CAST("v" AS text) COLLATE "C") = \'x\'::text)'
        ' AND ("t" COLLATE "C" ~~* \'a%\'::text)'
        " AND (\"ts\" > '2024-01-01 00:00:00'::timestamp))"
    )
    assert (
        check("tz >= '2024-01-01 05:00+05'").sql
        == "(\"tz\" >= '2024-01-01 00:00:00+00'::timestamptz)"
    )
    assert check("e = 'ok'").sql == '("e" = \'ok\'::"mood")'
    assert check('"i4" = 1').sql == "(\"i4\" = '1'::int4)"


@pytest.mark.parametrize(
    ("where", "hint"),
    [
        ("i4 = 1", ("i4", {"1"})),
        ("1 = i8", ("i8", {"1"})),
        ("i4 IN (1, 2, 2)", ("i4", {"1", "2"})),
        ("i4 = ANY('{3,NULL}')", ("i4", {"3"})),
        ("t = 'a' AND i4 > 3", ("t", {"a"})),
        ("i4 IN (1, 2, 3) AND t = 'a'", ("t", {"a"})),
        ("i4 = 1 OR i4 = 2", ("i4", {"1", "2"})),
        ("v = 'x'", ("v", {"x"})),
        ("b", ("b", {"t"})),
        ("NOT b", ("b", {"f"})),
        ("b IS FALSE", ("b", {"f"})),
        ("b = true", ("b", {"t"})),
        (
            "u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
            ("u", {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}),
        ),
        ("d = '2024-1-2'", ("d", {"2024-01-02"})),
        ("ts = '2024-01-02 03:04:05.500'", ("ts", {"2024-01-02 03:04:05.5"})),
        ("e = 'ok'", ("e", {"ok"})),
        ("i2 = 100000", ("i2", {"100000"})),
        ("i4 = 1 OR t = 'a'", None),
        ("i4 > 1", None),
        ("n = 1", None),
        ("f8 = 1", None),
        ("tz = '2024-01-01'", None),
        ("i4 = 1.5", None),
        ("i4 + 0 = 1", None),
        ("i4 IN (1, i2)", None),
    ],
)
def test_index_hints(where: str, hint: tuple[str, set[str]] | None) -> None:
    found = check(where).index_hint
    if hint is None:
        assert found is None
    else:
        assert found is not None
        assert (found.column, set(found.values)) == hint


@pytest.mark.parametrize(
    ("where", "exact"),
    [
        ("i4 = 1", True),
        ("i4 IN (1, 2) OR i4 = 3", True),
        ("NOT b", True),
        ("t = 'a' AND i4 > 3", False),  # the hint names candidates; i4 > 3 still decides
        ("i4 = 1 AND i4 = 1", False),
        ("n = 1", False),
        ("i4 > 1", False),
    ],
)
def test_a_clause_is_exact_only_when_its_hint_decides_every_row(where: str, exact: bool) -> None:
    # Routing skips evaluating exact clauses for rows their index found (sync/shapes.py).
    assert check(where).exact is exact


def test_referenced_columns() -> None:
    assert check("i4 = 1 AND (t LIKE 'a%' OR ai @> '{1}')").referenced_columns == {"i4", "t", "ai"}
    assert check("1 = 1").referenced_columns == frozenset()


def test_deep_and_long_clauses() -> None:
    rejects("NOT " * 3000 + "true", "nests deeper than")
    rejects("(" * 300 + "i4 = 1" + ")" * 300 + " AND " + "NOT " * 250 + "b", "nests deeper than")
    clause = check("i4 IN (" + ", ".join(map(str, range(20000))) + ")")
    assert clause.matches({"i4": "19999"}) and not clause.matches({"i4": "20000"})
    assert clause.index_hint is not None and len(clause.index_hint.values) == 20000
    clause = check(" AND ".join(f"i4 <> {k}" for k in range(3000)))
    assert clause.matches({"i4": "-1"}) and not clause.matches({"i4": "7"})


def test_missing_row_values_raise() -> None:
    with pytest.raises(WhereEvalError, match="no value for column 'i4'"):
        check("i4 = 1").matches({})


def test_enum_without_known_labels() -> None:
    columns = {"e": ColumnType("mood", kind="e")}
    clause = compile_where("e IN ('ok', 'anything')", columns, {})
    assert clause.matches({"e": "ok"})
    assert clause.sql == '("e" = ANY (\'{ok,anything}\'::"mood"[]))'


# -- agreement ------------------------------------------------------------------------------


def _matching_ids(conn: psycopg.Connection, clauses: list[str]) -> list[set[int] | None]:
    """For each clause, the ids Postgres selects with `WHERE clause` (None: it raised)."""
    if not clauses:
        return []
    union = " UNION ALL ".join(
        f"SELECT {index} AS k, id FROM t WHERE {clause}" for index, clause in enumerate(clauses)
    )
    try:
        found: list[set[int] | None] = [set() for _ in clauses]
        for key, row_id in conn.execute(union).fetchall():
            found[key].add(row_id)  # type: ignore[union-attr]
        return found
    except psycopg.Error:
        pass
    results: list[set[int] | None] = []
    for clause in clauses:
        try:
            results.append({r for (r,) in conn.execute(f"SELECT id FROM t WHERE {clause}")})
        except psycopg.Error:
            results.append(None)
    return results


def _row_results(conn: psycopg.Connection, clause: str) -> dict[int, bool | None]:
    """Per row: True/False when Postgres evaluates `clause`, None when it raises."""
    results: dict[int, bool | None] = {}
    for (row_id,) in conn.execute("SELECT id FROM t").fetchall():
        try:
            query = f"SELECT ({clause}) IS TRUE FROM t WHERE id = {int(row_id)}"
            (value,) = conn.execute(query).fetchone()  # type: ignore[misc]
            results[row_id] = value
        except psycopg.Error:
            results[row_id] = None
    return results


@dataclass
class Tally:
    clauses: int = 0
    rejected: int = 0
    row_checks: int = 0
    pg_errors: int = 0


TALLY = Tally()


def _python_ids(
    clause: WhereClause, rows: dict[int, dict[str, str | None]]
) -> tuple[set[int], set[int]]:
    matched, raised = set(), set()
    for row_id, row in rows.items():
        try:
            if clause.matches(row):
                matched.add(row_id)
        except WhereEvalError:
            raised.add(row_id)
    return matched, raised


def check_agreement(db: Database, wheres: list[str]) -> None:
    compiled: list[tuple[str, WhereClause]] = []
    for where in wheres:
        TALLY.clauses += 1
        try:
            compiled.append((where, compile_where(where, COLUMNS, {})))
        except WhereError as exc:
            # A rejection is either one Postgres shares (a bad literal, '1/0' folded) or a
            # documented gap, whose message says "not supported".
            TALLY.rejected += 1
            if "not supported" not in exc.message:
                assert _pg_rejects(db, where), f"rejected but Postgres accepts: {where!r}: {exc}"
    sql = [c.sql for _, c in compiled]
    original = [w for w, _ in compiled]
    for conn, texts in ((db.c, sql), (db.c, original), (db.utf8, sql)):
        results = _matching_ids(conn, texts)
        for (where, clause), text, ids in zip(compiled, texts, results, strict=True):
            python, raised = _python_ids(clause, db.rows)
            TALLY.row_checks += len(db.rows)
            hint = clause.index_hint
            if hint is not None:
                for row_id in python:
                    assert db.rows[row_id][hint.column] in hint.values, f"{where!r}: hint {hint}"
            if ids is not None and not raised:
                assert python == ids, _explain(where, clause, python, ids)
                continue
            # Somebody raised: compare row by row. Postgres may raise where we do not (it
            # may evaluate in another order), never the reverse.
            TALLY.pg_errors += 1
            per_row = _row_results(conn, text)
            for row_id, expected in per_row.items():
                if expected is None:
                    continue
                assert row_id not in raised, f"{where!r}: raised on row {row_id}, Postgres did not"
                assert (row_id in python) == expected, _explain(where, clause, python, ids or set())


def _pg_rejects(db: Database, where: str) -> bool:
    try:
        db.c.execute(f"SELECT id FROM t WHERE {where}").fetchall()
    except psycopg.Error:
        return True
    return False


def _explain(where: str, clause: WhereClause, python: set[int], postgres: set[int]) -> str:
    return (
        f"disagreement on {where!r} (sql {clause.sql!r}): python-only {sorted(python - postgres)}, "
        f"postgres-only {sorted(postgres - python)}"
    )


# -- the clause grammar ---------------------------------------------------------------------
# Every alternative is picked with equal chance (`choice`), instead of hypothesis flattening
# nested one_of()s into a long list dominated by leaves.

S = st.SearchStrategy


def choice(*options: S[str] | str) -> S[str]:
    strategies = [st.just(o) if isinstance(o, str) else o for o in options]
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


def fmt(template: str, *parts: S[str] | str) -> S[str]:
    strategies = [st.just(p) if isinstance(p, str) else p for p in parts]
    return st.tuples(*strategies).map(lambda values: template.format(*values))


def ops(*names: str) -> S[str]:
    return st.sampled_from(names)


INT_COLUMNS = ["i2", "i4", "i8", "id"]
NUM_COLUMNS = [*INT_COLUMNS, "n", "f4", "f8"]
int_literal = st.sampled_from(
    [
        "0",
        "1",
        "2",
        "3",
        "-1",
        "42",
        "100",
        "7",
        "32767",
        "-32768",
        "2147483647",
        "5000000000",
        "9223372036854775807",
        "(-9223372036854775808)",
        "'5'::int2",
        "0x1F",
        "1_000",
    ]
)
dec_literal = st.sampled_from(
    [
        "0.5",
        "1.0",
        "1.00",
        "2.5",
        "-2.5",
        "0.1",
        "1.1",
        "3.14159",
        "1e20",
        "0.3",
        "1.5e-3",
        "'NaN'::numeric",
        "'-Infinity'::numeric",
        "123456789012345678901234.5",
        "0.000001",
    ]
)
float_literal = st.sampled_from(
    [
        "'1.1'::float8",
        "'NaN'::float8",
        "'Infinity'::float4",
        "'-0'::float8",
        "'0.1'::float4",
        "'2.5'::real",
        "'1e300'::double precision",
        "'16777217'::float4",
        "'1.1'::float4",
    ]
)
text_literal = st.sampled_from(TEXTS).map(lambda s: "'" + s.replace("'", "''") + "'")
date_literal = st.sampled_from(
    [
        "'2024-01-01'",
        "'2000-02-29'",
        "'infinity'",
        "'-infinity'",
        "'1970-01-01'",
        "'0044-03-15 BC'",
        "'epoch'",
        "'10000-01-01'",
    ]
)
ts_literal = st.sampled_from(
    [
        "'2024-01-01 00:00:00'",
        "'2024-01-01 12:34:56.789'",
        "'infinity'",
        "'1970-01-01'",
        "'2024-01-01T23:59:59.999999'",
        "'2024-01-01 12:34'",
    ]
)
tz_literal = st.sampled_from(
    [
        "'2024-01-01 00:00:00+00'",
        "'2024-01-01 05:30:00+05:30'",
        "'2024-01-01'",
        "'-infinity'",
        "'2024-01-01T00:00:00Z'",
        "'2023-12-31 23:00:00-01'",
    ]
)
uuid_literal = st.sampled_from(
    [*POOLS["u"][:3], "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}"]
).map(lambda s: f"'{s}'")


@cache
def int_expr(depth: int) -> S[str]:
    leaves = choice(st.sampled_from(INT_COLUMNS), int_literal, "ai[1]", "ai[2]", "ai[1][2]")
    if depth <= 0:
        return leaves
    sub = int_expr(depth - 1)
    return choice(
        leaves,
        leaves,
        fmt("({} {} {})", sub, ops("+", "-", "*", "/", "%", "&", "|", "#"), sub),
        fmt("(-{})", sub),
        fmt("(@ {})", sub),
        fmt("(~ {})", sub),
        fmt("{}::{}", sub, ops("int2", "int4", "int8", "bigint", "smallint")),
        fmt("coalesce({}, {})", sub, sub),
        fmt("{}({}, {})", ops("greatest", "least"), sub, sub),
        fmt("({} - {})", date_expr(0), date_expr(0)),
        fmt(
            "{}::{}",
            ops("n", "f8", "f4", "1.5", "2.5", "-0.5", "'2.5'::float8"),
            ops("int8", "int4", "int2"),
        ),
        fmt("{}::int4", ops("t", "v", "' 12 '", "'-0'", "'+7'")),
        "array_ndims(ai)",
        "b::int4",
    )


@cache
def num_expr(depth: int) -> S[str]:
    leaves = choice(
        st.sampled_from(NUM_COLUMNS), int_literal, dec_literal, float_literal, "an[1]", "af[1]"
    )
    if depth <= 0:
        return leaves
    sub = num_expr(depth - 1)
    return choice(
        leaves,
        leaves,
        int_expr(depth),
        numeric_expr(depth),
        fmt("({} {} {})", sub, ops("+", "-", "*", "/"), sub),
        fmt("(-{})", sub),
        fmt("(@ {})", sub),
        fmt("{}::{}", sub, ops("numeric", "float8", "float4", "real", "int4", "decimal")),
        fmt("coalesce({}, {})", sub, sub),
        fmt("{}({}, {}, {})", ops("greatest", "least"), sub, sub, sub),
        fmt("({} ^ {})", ops("f8", "f4", "i4", "2", "0.5"), ops("2", "0.5", "f8", "i2", "-1")),
        fmt("(|/ {})", ops("f8", "i4", "f4", "4")),
        fmt(
            "{}::{}",
            ops("t", "v", "'12'", "' 7 '", "'1e3'", "'0x1F'", "'1_0'"),
            ops("numeric", "int8"),
        ),
        fmt(
            "{}::{}",
            ops("t", "'2.5'", "'NaN'", "'-inf'", "' 1.5e-2 '", "'1e-320'", "'0x1p3'"),
            ops("float8", "float4"),
        ),
    )


@cache
def numeric_expr(depth: int) -> S[str]:
    """numeric-typed expressions only: their text output shows the display scale."""
    leaves = choice("n", dec_literal, "an[1]", fmt("{}::numeric", st.sampled_from(INT_COLUMNS)))
    if depth <= 0:
        return leaves
    sub = numeric_expr(depth - 1)
    return choice(
        leaves,
        fmt(
            "({} {} {})",
            sub,
            ops("+", "-", "*", "/", "%"),
            choice(sub, int_literal, st.sampled_from(INT_COLUMNS)),
        ),
        fmt("({} {} {})", sub, ops("/", "*"), sub),
        fmt("(-{})", sub),
        fmt("(@ {})", sub),
        fmt("{}::numeric", ops("f4", "f8", "'0.1'::float8", "'1e-5'::float4", "'1e20'::float8")),
        fmt("coalesce({}, {})", sub, sub),
    )


@cache
def text_expr(depth: int) -> S[str]:
    leaves = choice(st.sampled_from(["t", "v"]), text_literal, "at[1]", "e::text")
    if depth <= 0:
        return leaves
    sub = text_expr(depth - 1)
    scalars = ops("b", "d", "n", "u", "ts", "tm", "e", "ai", "tz", "i4", "at", "an", "j")
    return choice(
        leaves,
        leaves,
        fmt("{}({})", ops("lower", "upper"), sub),
        fmt("({} || {})", sub, sub),
        fmt("({} || {})", sub, choice(int_expr(0), scalars)),
        fmt("({} || {})", scalars, sub),
        st.lists(choice(sub, scalars, "NULL", "i2"), min_size=1, max_size=3).map(
            lambda items: f"concat({', '.join(items)})"
        ),
        fmt("{}::text", scalars),
        fmt("{}::varchar", ops("i8", "d", "t")),
        fmt("coalesce({}, {})", sub, sub),
        fmt("{}({}, {})", ops("greatest", "least"), sub, sub),
        fmt("({})::text", numeric_expr(depth)),
        fmt("concat({}, '|', {})", numeric_expr(depth), int_expr(1)),
        fmt(
            "({})::text",
            ops(
                "ai",
                "array_append(ai, i4)",
                "array_cat(ai, '{{7,8}}')",
                "(ai || ARRAY[NULL::int4])",
                "(at || t)",
                "array_prepend(t, at)",
                "an",
                "(an || n)",
                "ARRAY[d, d + 1]",
            ),
        ),
    )


@cache
def date_expr(depth: int) -> S[str]:
    leaves = choice("d", fmt("{}::date", date_literal), "ts::date", "tz::date")
    if depth <= 0:
        return leaves
    sub = date_expr(depth - 1)
    return choice(
        leaves,
        fmt("({} {} {})", sub, ops("+", "-"), ops("1", "-1", "i2", "30", "i4", "2147483647")),
        fmt("({} + {})", ops("1", "i2"), sub),
        fmt("coalesce({}, {})", sub, sub),
        fmt("{}({}, {})", ops("greatest", "least"), sub, sub),
    )


@cache
def comparable_pairs(depth: int) -> S[tuple[str, str]]:
    """Two expressions that Postgres can compare with <, =, ... (same category)."""
    return st.sampled_from(
        [
            st.tuples(num_expr(depth), num_expr(depth)),
            st.tuples(
                st.sampled_from(NUM_COLUMNS),
                choice(int_literal, dec_literal, float_literal, st.sampled_from(NUM_COLUMNS)),
            ),
            st.tuples(numeric_expr(depth), choice(numeric_expr(depth), dec_literal)),
            st.tuples(text_expr(depth), text_expr(depth)),
            st.tuples(date_expr(depth), choice(date_expr(depth), date_literal, "ts", "tz")),
            st.tuples(
                st.sampled_from(["ts", "tz", "d"]),
                choice(ts_literal, tz_literal, "ts", "tz", "d::timestamp"),
            ),
            st.tuples(
                st.just("tm"),
                st.sampled_from(["'12:00'", "'24:00:00'", "tm", "ts::time", "tz::time"]),
            ),
            st.tuples(
                st.sampled_from(["u", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid"]),
                choice(uuid_literal, "u"),
            ),
            st.tuples(
                st.sampled_from(["b", "(i4 > 0)", "true"]),
                st.sampled_from(["b", "true", "false", "'t'", "NULL", "'yes'"]),
            ),
            st.tuples(st.just("e"), st.sampled_from(["'ok'", "'sad'", "e", "NULL"])),
            st.tuples(
                st.sampled_from(["ai", "'{1,2}'::int4[]", "ARRAY[1,2,3]", "array_append(ai, 1)"]),
                st.sampled_from(
                    [
                        "ai",
                        "'{1,2,3}'",
                        "'[0:1]={5,6}'",
                        "'{}'",
                        "ARRAY[i4, 1]",
                        "ai || 3",
                        "'{{1,2},{3,4}}'",
                    ]
                ),
            ),
            st.tuples(
                st.sampled_from(["at", "ARRAY['a', 'b']"]),
                st.sampled_from(["at", "'{a,b}'", "ARRAY[t]", "'{A,a}'"]),
            ),
        ]
    ).flatmap(lambda strategy: strategy)


@cache
def bool_expr(depth: int) -> S[str]:
    pairs = comparable_pairs(max(depth - 1, 0))
    leaves = choice(
        fmt("({0[0]} {1} {0[1]})", pairs, ops("=", "<>", "<", "<=", ">", ">=", "!=")),
        fmt("({0[0]} {1} {0[1]})", comparable_pairs(0), ops("=", "<>", "<", ">=")),
        "b",
        ops("true", "false", "NULL", "'t'"),
        fmt(
            "({} {} ({}))",
            ops("i4", "i2", "i8", "n", "f4", "f8", "t", "v", "e", "d", "u", "lower(t)"),
            ops("IN", "NOT IN"),
            st.lists(
                choice(
                    int_literal,
                    dec_literal,
                    float_literal,
                    text_literal,
                    "NULL",
                    "'ok'",
                    st.sampled_from(NUM_COLUMNS),
                ),
                min_size=1,
                max_size=4,
            ).map(", ".join),
        ),
        fmt(
            "({} {} ({}))",
            ops("i4", "i8", "n", "f4"),
            ops("IN", "NOT IN"),
            st.lists(
                choice(int_literal, dec_literal, "NULL", "'1.1'", "i2"), min_size=2, max_size=4
            ).map(", ".join),
        ),
        fmt(
            "({0[0]} {2} {0[1]} AND {1[1]})",
            comparable_pairs(0),
            comparable_pairs(0),
            ops("BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC"),
        ),
        fmt(
            "({0[0]} {1} {0[1]})",
            comparable_pairs(0),
            ops("IS DISTINCT FROM", "IS NOT DISTINCT FROM"),
        ),
        fmt(
            "({} {})",
            choice(st.sampled_from(list(COLUMNS)), num_expr(0), text_expr(1)),
            ops("IS NULL", "IS NOT NULL"),
        ),
        fmt(
            "({} {} {}{})",
            ops("t", "v", "lower(t)", "t || v", "at[1]", "e::text"),
            ops("LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"),
            ops(
                "'a%'",
                "'%b'",
                "'_'",
                "'%\\%%'",
                "'a\\_b'",
                "'A%'",
                "'%é%'",
                "'É%'",
                "''",
                "'%'",
                "'a%b%c'",
                "'%_%'",
                "v",
                "t",
                "'%\\\\%'",
                "'a#%'",
                "'%#_'",
                "'A_C'",
                "'__'",
                "'%x\\'",
            ),
            ops("", " ESCAPE '#'", " ESCAPE ''", " ESCAPE 'a'"),
        ),
        fmt(
            "({} {} {})",
            ops("t", "v", "lower(t)"),
            ops("~~", "!~~", "~~*", "!~~*"),
            ops("'a%'", "'%B_'", "t"),
        ),
        fmt(
            "({} {} {}({}))",
            ops("i4", "1", "2", "NULL::int4", "i8", "3", "n", "f4"),
            ops("=", "<>", "<", ">="),
            ops("ANY", "ALL"),
            ops("ai", "'{1,2,NULL}'", "ARRAY[1, i4]", "'{}'::int4[]", "'{1,2}'", "ARRAY[i2, i8]"),
        ),
        fmt(
            "({} {} {}({}))",
            ops("t", "'a'", "v"),
            ops("=", "LIKE", "ILIKE", "<", "NOT ILIKE"),
            ops("ANY", "ALL"),
            ops("at", "'{a,A,NULL}'", "ARRAY['a%', t]"),
        ),
        fmt(
            "({} = {}({}))",
            ops("n", "1.0", "f8", "'NaN'::float8", "0"),
            ops("ANY", "ALL"),
            ops("an", "af"),
        ),
        fmt(
            "({} {} {})",
            ops("ai", "'{1,2}'::int4[]", "ARRAY[i4]", "'{}'::int[]", "array_prepend(1, ai)"),
            ops("@>", "<@", "&&"),
            ops("ai", "'{1}'", "'{1,NULL}'", "'{}'", "ARRAY[2, 3]", "array_cat(ai, '{2}')"),
        ),
        fmt("({0} {1} {0})", ops("at", "an", "af"), ops("@>", "<@", "&&")),
        fmt(
            "({} {})",
            ops("b", "(i4 > 1)", "NULL::bool", "(t = v)"),
            ops(
                "IS TRUE", "IS NOT TRUE", "IS FALSE", "IS NOT FALSE", "IS UNKNOWN", "IS NOT UNKNOWN"
            ),
        ),
    )
    if depth <= 0:
        return leaves
    sub = bool_expr(depth - 1)
    return choice(
        leaves,
        leaves,
        leaves,
        fmt("({} {} {})", sub, ops("AND", "OR"), sub),
        fmt("(NOT {})", sub),
        fmt("coalesce({}, {})", sub, sub),
    )


clauses = bool_expr(2)


AGREEMENT_EXAMPLES = int(os.environ.get("WHERE_AGREEMENT_EXAMPLES", "200"))


@settings(
    max_examples=AGREEMENT_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
@given(batch=st.lists(clauses, min_size=6, max_size=6))
def test_agreement_with_postgres(database: Database, batch: list[str]) -> None:
    check_agreement(database, batch)


# -- expression values ------------------------------------------------------------------------
# Beyond booleans: every value an expression produces must be the value Postgres produces,
# compared through the type's output text (numeric scale, array and date layout), or as
# numbers for floats, whose text layout is not reproduced.


def _evaluator(expression: str) -> tuple[Any, Any]:
    types = {name: column.to_pg_type() for name, column in COLUMNS.items()}
    analyzer = Analyzer(types, {})
    node = analyzer.expr(parse(expression))
    if node.type.is_unknown:
        node = analyzer.coerce(node, TEXT)
    node = fold(node)
    return node, compile_node(node)


def _same_value(node: Any, value: Any, postgres_text: str | None) -> bool:
    if value is None or postgres_text is None:
        return value is None and postgres_text is None
    pg_type = node.type
    if pg_type.name in ("float4", "float8") and not pg_type.array:
        expected = output_parser(pg_type)(postgres_text)
        return value == expected or (value != value and expected != expected)
    if pg_type.name in ("float4", "float8"):
        parse_item = output_parser(pg_type)
        expected_array = parse_item(postgres_text)
        pairs = zip(value.items, expected_array.items, strict=True)
        return (value.dims, value.lbounds) == (expected_array.dims, expected_array.lbounds) and all(
            (a is None and b is None) or (a == b) or (a != a and b != b) for a, b in pairs
        )
    formatter = output_formatter(pg_type)
    assert formatter is not None
    return formatter(value) == postgres_text


def check_values(db: Database, expressions: list[str]) -> None:
    compiled = []
    for expression in expressions:
        try:
            compiled.append((expression, *_evaluator(expression)))
        except WhereError as exc:
            if "not supported" not in exc.message:
                assert _pg_rejects(db, f"({expression}) IS NULL"), f"{expression!r}: {exc}"
    for expression, node, evaluate in compiled:
        for row_id, expected in _values_by_row(db, expression).items():
            if expected is _RAISED:
                continue  # Postgres raises: we may raise or not (evaluation order)
            try:
                value = evaluate(db.rows[row_id])
            except WhereEvalError as exc:
                raise AssertionError(f"{expression!r} raised {exc} on row {row_id}") from None
            assert _same_value(node, value, expected), (  # type: ignore[arg-type]
                f"{expression!r} on row {row_id}: python {value!r}, postgres {expected!r}"
            )


_RAISED = object()


def _values_by_row(db: Database, expression: str) -> dict[int, object]:
    """Postgres's output text of `expression` per row (_RAISED where it raises)."""

    def fetch(where: str) -> dict[int, object]:
        result = db.c.execute(f"SELECT id, ({expression}) FROM t{where}").pgresult
        assert result is not None
        found: dict[int, object] = {}
        for index in range(result.ntuples):
            raw_id, raw = result.get_value(index, 0), result.get_value(index, 1)
            found[int(bytes(raw_id).decode())] = None if raw is None else bytes(raw).decode()  # type: ignore[arg-type]
        return found

    try:
        return fetch("")
    except psycopg.Error:
        pass
    values: dict[int, object] = {}
    for row_id in db.rows:
        try:
            values.update(fetch(f" WHERE id = {int(row_id)}"))
        except psycopg.Error:
            values[row_id] = _RAISED
    return values


values_expressions = choice(
    numeric_expr(2),
    int_expr(2),
    num_expr(1),
    text_expr(2),
    date_expr(2),
    ops(
        *[
            "ai",
            "array_append(ai, i4)",
            "array_cat(ai, '{{7,8}}')",
            "(ai || ARRAY[NULL::int4])",
            "(at || t)",
            "array_prepend(t, at)",
            "(an || n)",
            "ARRAY[d, d + 1]",
            "af",
            "ARRAY[f4, 1.5]",
            "array_cat('[3:4]={1,2}'::int4[], ai)",
            "(ai || '{}')",
            "array_prepend(i4, '[0:0]={9}')",
            "ARRAY[ts, tz::timestamp]",
            "ARRAY[u]::text[]",
            "at::int4[]",
            "ARRAY[t, NULL, '']",
        ]
    ),
)


@settings(
    max_examples=max(AGREEMENT_EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
@given(batch=st.lists(values_expressions, min_size=3, max_size=3))
def test_expression_values_match_postgres(database: Database, batch: list[str]) -> None:
    check_values(database, batch)


# -- constant arithmetic ------------------------------------------------------------------------
# Random operands straight from hypothesis, folded at compile time here and computed by
# Postgres: values must agree exactly, and so must failing (overflow, division by zero).

_decimal_text = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 40
    ),
    st.decimals(min_value=-1000, max_value=1000, places=3),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0", "1", "3", "7", "0.0001", "-1"]).map(
        Decimal
    ),
).map(lambda d: f"'{d}'::numeric")
_int_text = (
    st.tuples(
        st.sampled_from(["int2", "int4", "int8"]),
        st.one_of(
            st.integers(-(2**15), 2**15 - 1),
            st.integers(-(2**31), 2**31 - 1),
            st.integers(-(2**63), 2**63 - 1),
            st.sampled_from([0, 1, -1, 2, 3, 7]),
        ),
    )
    .filter(
        lambda p: (
            -(2 ** {"int2": 15, "int4": 31, "int8": 63}[p[0]])
            <= p[1]
            < 2 ** {"int2": 15, "int4": 31, "int8": 63}[p[0]]
        )
    )
    .map(lambda p: f"'{p[1]}'::{p[0]}")
)
_float_text = st.tuples(st.sampled_from(["float4", "float8"]), st.floats()).map(
    lambda p: f"'{p[1]!r}'::{p[0]}"
)
_operand = st.one_of(_decimal_text, _int_text, _float_text)
constant_expressions = st.one_of(
    st.tuples(
        _decimal_text,
        st.sampled_from(["+", "-", "*", "/", "%"]),
        st.one_of(_decimal_text, _int_text),
    ).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
    st.tuples(_int_text, st.sampled_from(["+", "-", "*", "/", "%", "&", "|", "#"]), _int_text).map(
        lambda p: f"({p[0]} {p[1]} {p[2]})"
    ),
    st.tuples(_operand, st.sampled_from(["+", "-", "*", "/"]), _operand).map(
        lambda p: f"({p[0]} {p[1]} {p[2]})"
    ),
    st.tuples(_float_text, st.sampled_from(["^"]), _float_text).map(lambda p: f"({p[0]} ^ {p[1]})"),
    st.tuples(
        _operand, st.sampled_from(["numeric", "int2", "int4", "int8", "float4", "float8"])
    ).map(lambda p: f"{p[0]}::{p[1]}"),
    st.tuples(st.sampled_from(["-", "@", "|/"]), _operand).map(lambda p: f"({p[0]} {p[1]})"),
    st.tuples(_decimal_text, st.sampled_from(["int4", "int8", "numeric"])).map(
        lambda p: f"({p[0]} / {p[0]})::text"
    ),
)


def check_constants(db: Database, expressions: list[str]) -> None:
    for expression in expressions:
        try:
            node, evaluate = _evaluator(expression)
            ours: Any = ("value", evaluate({}))
        except WhereError as exc:
            if "not supported" in exc.message:
                continue
            ours = ("error", exc.message)
        try:
            result = db.c.execute(f"SELECT {expression}").pgresult
            assert result is not None
            raw = result.get_value(0, 0)
            theirs: Any = ("value", None if raw is None else bytes(raw).decode())
        except psycopg.Error as exc:
            theirs = ("error", str(exc).splitlines()[0])
        assert ours[0] == theirs[0], f"{expression!r}: python {ours}, postgres {theirs}"
        if ours[0] == "value":
            assert _same_value(node, ours[1], theirs[1]), (
                f"{expression!r}: python {ours}, postgres {theirs}"
            )


@settings(
    max_examples=max(AGREEMENT_EXAMPLES // 2, 10),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
@given(batch=st.lists(constant_expressions, min_size=8, max_size=8))
def test_constant_arithmetic_matches_postgres(database: Database, batch: list[str]) -> None:
    check_constants(database, batch)


# -- type resolution ----------------------------------------------------------------------------

MATRIX_OPERANDS = [
    "i2",
    "i4",
    "i8",
    "n",
    "f4",
    "f8",
    "t",
    "v",
    "b",
    "u",
    "d",
    "ts",
    "tz",
    "tm",
    "e",
    "ai",
    "at",
    "'1'",
    "NULL",
    "1",
    "1.5",
]
MATRIX_FORMS = [
    "{} + {}",
    "{} - {}",
    "{} * {}",
    "{} / {}",
    "{} % {}",
    "{} || {}",
    "{} & {}",
    "{} ^ {}",
    "coalesce({}, {})",
    "greatest({}, {})",
    "{} = {}",
    "{} < {}",
    "{} LIKE {}",
    "{} @> {}",
    "{} = ANY(ARRAY[{}])",
    "{} IN ({}, NULL)",
    "{} IS DISTINCT FROM {}",
    "array_cat({}, {})",
    "array_append({}, {})",
    "{} # {}",
]


def _postgres_type(db: Database, expression: str) -> str | None:
    try:
        cursor = db.c.execute(f"SELECT {expression} FROM t LIMIT 0")
    except psycopg.Error:
        return None
    assert cursor.description is not None
    oid = cursor.description[0].type_code
    (name,) = db.c.execute("SELECT format_type(%s, NULL)", [oid]).fetchone()  # type: ignore[misc]
    return name


def test_operator_and_type_resolution_match_postgres(database: Database) -> None:
    """For every pair of operand types: when we accept an expression, Postgres accepts it
    with the same result type; when we reject it, so does Postgres, or we say the form is
    not supported."""
    types = {name: column.to_pg_type() for name, column in COLUMNS.items()}
    accepted = 0
    for form in MATRIX_FORMS:
        for left in MATRIX_OPERANDS:
            for right in MATRIX_OPERANDS:
                expression = form.format(left, right)
                theirs = _postgres_type(database, expression)
                try:
                    analyzer = Analyzer(types, {})
                    node = analyzer.expr(parse(expression))
                    if node.type.is_unknown:
                        node = analyzer.coerce(node, TEXT)
                except WhereError as exc:
                    if "not supported" not in exc.message:
                        assert theirs is None, f"{expression}: Postgres gives {theirs}, we: {exc}"
                    continue
                accepted += 1
                assert theirs == str(node.type), f"{expression}: Postgres {theirs}, we {node.type}"
    assert accepted > 700


TRICKY = [
    "(n / 2)::text = '61728394506172839450617.3'",
    "n::float4 = f4",
    "f4 = 16777217",
    "f4::numeric = n",
    "i8::float4 = 9223372036854775807::float4",
    "'[2:3]={1,2}'::int4[] = ai",
    "ai = '[2:3]={1,2}'",
    "d = 'epoch'",
    "'Infinity'::float8 > f8",
    "'-Infinity'::numeric < n",
    "t LIKE '%' || t || '%'",
    "lower(t) = lower(v)",
    "upper(t) LIKE 'A%'",
    "t ILIKE 'É%' OR t ILIKE 'é%'",
    "greatest(t, v) = coalesce(t, v)",
    "least(f8, f4, n) < 1",
    "greatest(n, i8, 0.5) > 1",
    "concat(n, f4::numeric, i2) <> ''",
    "at[1] IS NULL AND at IS NOT NULL",
    "ai[1] = ANY(ai)",
    "NOT (ai && at::int4[])",
    "tm = ts::time",
    "tz::time < '12:00'",
    "tz::timestamp = ts",
    "d::timestamptz = tz",
    "ts::date = d",
    "b IS DISTINCT FROM (i4 > 0)",
    "(i2 + i2)::int2 IS NULL",
    "i2 * i2 > 0",
    "i4 * i4 > 0",
    "i8 * 2 > 0",
    "n * n > 0",
    "f4 * f4 > 0",
    "f8 / f8 > 0",
    "f4 / f4 > 0",
]
TRICKY_VALUES = [
    "('123456789012345678901234.5'::numeric / 2)::text",
    "('-123456789012345678901234.5'::numeric / 2)::text",
    "(1::numeric / 3)::text",
    "(2::numeric / 3)::text",
    "(10::numeric / 4)::text",
    "('0.0001'::numeric / 7)::text",
    "(1e20::numeric / 7)::text",
    "('1.5'::numeric % '0.7')::text",
    "('-7'::numeric % 3)::text",
    "('Infinity'::numeric % 3)::text",
    "(3 % 'Infinity'::numeric)::text",
    "(0.1::float8)::numeric::text",
    "('1e20'::float8)::numeric::text",
    "('0.1'::float4)::numeric::text",
    "('1e-5'::float4)::numeric::text",
    "(2.5::numeric)::int4",
    "(-2.5::numeric)::int4",
    "(2.5::float8)::int4",
    "(3.5::float8)::int4",
    "'2.5'::float4::int2",
    "'-0'::numeric::text",
    "(-0.0)::text",
    "('1e308'::float8 * 10)",
    "('1e-300'::float8 * '1e-300'::float8)",
    "('3.4e38'::float4 * 10::float4)",
    "('1e-45'::float4 / 10::float4)",
    "(-2147483648)::int4 / -1",
    "(-2147483648)::int4 % -1",
    "(-9223372036854775808)::int8 * -1",
    "'NaN'::float8 / 0",
    "1::float8 / 0",
    "'NaN'::numeric / 0",
    "'-2'::float8 ^ '0.5'",
    "0::float8 ^ -1",
    "'-inf'::float8 ^ 3",
    "'-inf'::float8 ^ -3",
    "'inf'::float8 ^ '-inf'::float8",
    "'nan'::float8 ^ 0",
    "1::float8 ^ 'nan'",
    "|/ -1::float8",
    "'2024-02-29'::date + 365",
    "'5874897-12-31'::date + 1",
    "'infinity'::date + 1",
    "'-infinity'::date - 'infinity'::date",
    "'16777217'::int4::float4::int4",
    "'9007199254740993'::int8::float8::int8",
    "'9223372036854775807'::int8::float4",
    "'1e39'::float8::float4",
    "'1e-50'::float8::float4",
    "'YES'::bool",
    "'of'::bool",
    "'{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}'::uuid",
    "concat(true, NULL, 1.50, '2024-01-01'::date, ARRAY['a b', NULL, ''], 'x'::text)",
    "ARRAY['NULL', 'a\\b', '{}', ' ']::text",
    "array_cat('{{1,2}}'::int4[], '{3,4}')",
    "array_cat('{3,4}'::int4[], '{{1,2}}')",
    "array_cat('[0:1]={1,2}'::int4[], '{3}')",
    "array_cat('{1}'::int4[], '{{1,2}}')",
    "array_append('{{1}}'::int4[], 2)",
]


def test_tricky_cases_agree_with_postgres(database: Database) -> None:
    database.load(_rows(48, seed=11))
    check_agreement(database, TRICKY)
    check_constants(database, TRICKY_VALUES)


# Integer syntax of PostgreSQL 16+ (hex, octal, binary, underscores): we accept it on any
# server, so on older servers Postgres raises where we do not (never the reverse).
POSTGRES_16_INPUT = {
    "' 0x7FFF '::int2": 32767,
    "'0b101'::int4": 5,
    "'1_000'::int8": 1000,
    "'0o17'::numeric": Decimal(15),
    "'-0X_1f'::int8": -31,
}


def test_postgres_16_integer_syntax(database: Database) -> None:
    version = database.c.info.server_version
    for expression, expected in POSTGRES_16_INPUT.items():
        _, evaluate = _evaluator(expression)
        assert evaluate({}) == expected
        if version >= 160000:
            check_constants(database, [expression])
        else:
            assert _pg_rejects(database, f"{expression} IS NULL"), expression


# -- random rows ------------------------------------------------------------------------------


def _array_text(items: list[object]) -> str:
    def element(item: object) -> str:
        if item is None:
            return "NULL"
        return '"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(element(item) for item in items) + "}"


def _pooled(name: str, extra: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from([v for v in POOLS[name] if v is not None]), extra)


_text_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_offsets = st.sampled_from(["+00", "-08", "+05:30", "+14", "-00:30"])
ROW_VALUES: dict[str, st.SearchStrategy[str | None]] = {
    "i2": _pooled("i2", st.integers(-(2**15), 2**15 - 1).map(str)),
    "i4": _pooled("i4", st.integers(-(2**31), 2**31 - 1).map(str)),
    "i8": _pooled("i8", st.integers(-(2**63), 2**63 - 1).map(str)),
    "n": _pooled(
        "n",
        st.decimals(allow_nan=False, allow_infinity=False, places=None)
        .filter(lambda d: abs(d.adjusted()) < 60)
        .map(str),
    ),
    "f4": _pooled("f4", st.floats(width=32).map(repr)),
    "f8": _pooled("f8", st.floats().map(repr)),
    "t": _pooled("t", st.text(_text_chars, max_size=6)),
    "v": _pooled("v", st.text(_text_chars, max_size=6)),
    "b": st.sampled_from([None, "t", "f"]),
    "u": _pooled("u", st.uuids().map(str)),
    "d": _pooled("d", st.dates().map(lambda d: d.isoformat())),
    "ts": _pooled("ts", st.datetimes().map(lambda d: d.isoformat(" "))),
    "tz": _pooled(
        "tz", st.tuples(st.datetimes(), _offsets).map(lambda p: p[0].isoformat(" ") + p[1])
    ),
    "tm": _pooled("tm", st.times().map(lambda t: t.isoformat())),
    "e": st.sampled_from([None, "sad", "ok", "happy"]),
    "ai": _pooled(
        "ai", st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=4).map(_array_text)
    ),
    "at": _pooled(
        "at",
        st.lists(st.one_of(st.none(), st.text(_text_chars, max_size=3)), max_size=3).map(
            _array_text
        ),
    ),
    "an": _pooled(
        "an",
        st.lists(st.sampled_from(["1", "1.0", "2.50", "NaN", "-0.5"]), max_size=3).map(_array_text),
    ),
    "af": _pooled(
        "af", st.lists(st.floats(), max_size=3).map(lambda xs: _array_text([repr(x) for x in xs]))
    ),
}
random_rows = st.lists(st.fixed_dictionaries(ROW_VALUES), min_size=1, max_size=8).map(
    lambda rows: [{"id": str(i + 1), **row} for i, row in enumerate(rows)]
)


@settings(
    max_examples=max(AGREEMENT_EXAMPLES // 3, 10),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
@given(rows=random_rows, batch=st.lists(clauses, min_size=6, max_size=6))
def test_agreement_on_random_rows(
    database: Database, rows: list[dict[str, str | None]], batch: list[str]
) -> None:
    """Random values of every type (hypothesis's), not only the edge-value pools."""
    database.load(rows)
    check_agreement(database, batch)


def test_generated_clauses_were_mostly_accepted() -> None:
    """Guards the grammar: agreement proves little if most generated clauses are rejected."""
    if TALLY.clauses < 200:
        pytest.skip("the agreement tests did not run in this session")
    assert TALLY.rejected < 0.4 * TALLY.clauses, TALLY
    assert TALLY.row_checks > 20 * TALLY.clauses, TALLY


# -- clauses that are exactly their index hint ------------------------------------------------

EXACT_CLAUSES = [
    "i4 = 7",
    "7 = i8",
    "i2 IN (1, 2, 3)",
    "i4 = ANY('{5,6,NULL}'::int4[])",
    "t = 'a/b'",
    "v = 'x'",
    "t IN ('a', 'b') OR t = 'c'",
    "b",
    "NOT b",
    "b IS TRUE",
    "b IS FALSE",
    "u = '00000000-0000-0000-0000-00000000002a'",
    "e = 'ok'",
    "i4 = $1",
]
# Only what Postgres's text output can be for these types (replication sends nothing else).
CANONICAL = {
    "i2": st.integers(-5, 5).map(str),
    "i4": st.integers(-10, 10).map(str),
    "i8": st.integers(-10, 10).map(str),
    "t": st.sampled_from(["a", "b", "c", "a/b", "A", ""]),
    "v": st.sampled_from(["x", "y", "X"]),
    "b": st.sampled_from(["t", "f"]),
    "u": st.sampled_from(
        ["00000000-0000-0000-0000-00000000002a", "00000000-0000-0000-0000-000000000000"]
    ),
    "e": st.sampled_from(["sad", "ok", "happy"]),
}


@given(
    where=st.sampled_from(EXACT_CLAUSES),
    row=st.fixed_dictionaries({name: st.none() | values for name, values in CANONICAL.items()}),
)
def test_exact_hint_lookup_agrees_with_the_evaluator(where: str, row: dict) -> None:
    """A clause that is exactly its index hint is evaluated as a set lookup; it must agree
    with walking the tree on every row replication can deliver."""
    clause = check(where, {"1": "3"})
    assert clause.index_hint is not None and clause.exact
    walked = compile_node(clause.tree)(row) is True
    assert clause.matches(row) is walked
