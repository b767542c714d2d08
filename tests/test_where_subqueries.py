"""`column IN (SELECT column FROM table WHERE ...)` in where clauses: what is accepted,
what is refused, the result a caller maintains, and agreement with Postgres."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import psycopg
import pytest

from fusebox.sync.where import ColumnType, WhereClause, WhereError, compile_where, tables_read

TASKS = {"id": ColumnType("int4"), "project_id": ColumnType("int4"), "title": ColumnType("text")}
PROJECTS = {
    "id": ColumnType("int4"),
    "owner": ColumnType("text"),
    "team_id": ColumnType("int4"),
    "amount": ColumnType("numeric"),
}
TEAMS = {"id": ColumnType("int4"), "name": ColumnType("text")}
TABLES = {("public", "projects"): PROJECTS, ("public", "teams"): TEAMS}


def compile_tasks(where: str, params: dict[str, str] | None = None) -> WhereClause:
    return compile_where(where, TASKS, params or {}, TABLES)


def rejects(where: str, fragment: str) -> None:
    with pytest.raises(WhereError) as caught:
        compile_tasks(where, {"1": "x"})
    assert fragment in caught.value.message, caught.value.message
    assert caught.value.field == "where"


def test_tables_read_lists_nested_subqueries_once() -> None:
    where = (
        "project_id IN (SELECT id FROM projects WHERE team_id IN (SELECT id FROM teams)) "
        "OR id IN (SELECT team_id FROM public.projects) OR title IN (SELECT name FROM s.x)"
    )
    assert tables_read(where) == [("public", "projects"), ("public", "teams"), ("s", "x")]


def test_accepted_forms_render_quoted_sql_with_shared_params() -> None:
    clause = compile_tasks(
        "project_id IN (SELECT id FROM projects WHERE owner = $1) AND title <> $1",
        {"1": "o'brien"},
    )
    assert clause.sql == (
        '(("project_id" IN (SELECT "id" FROM "public"."projects" '
        "WHERE (\"owner\" = 'o''brien'::text))) AND (\"title\" <> 'o''brien'::text))"
    )
    assert clause.referenced_columns == {"project_id", "title"}
    (subquery,) = clause.subqueries
    assert subquery.relation == ("public", "projects")
    assert subquery.sql == (
        'SELECT "id" FROM "public"."projects" WHERE ("owner" = \'o\'\'brien\'::text)'
    )
    nested = compile_tasks(
        "NOT project_id IN (SELECT id FROM projects WHERE team_id IN "
        "(SELECT id FROM teams WHERE name LIKE 'a%')) "
        "AND project_id NOT IN (SELECT id FROM projects)"
    )
    assert [s.relation for s in nested.subqueries] == [
        ("public", "projects"),
        ("public", "projects"),
        ("public", "teams"),
    ]
    assert [s.nested for s in nested.subqueries] == [False, False, True]
    assert compile_tasks("project_id IN (SELECT id AS x FROM projects AS p)").subqueries


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("project_id = ANY (SELECT id FROM projects)", "only `value IN (SELECT ...)`"),
        ("EXISTS (SELECT 1 FROM projects)", "only `value IN (SELECT ...)`"),
        ("project_id = (SELECT id FROM projects)", "only `value IN (SELECT ...)`"),
        ("project_id + 1 IN (SELECT id FROM projects)", "must be a column reference"),
        ("(id, project_id) IN (SELECT id, team_id FROM projects)", "must be a column reference"),
        ("project_id IN (SELECT id, team_id FROM projects)", "exactly one column"),
        ("project_id IN (SELECT id + 1 FROM projects)", "plain column reference"),
        ("project_id IN (SELECT count(id) FROM projects)", "plain column reference"),
        ("project_id IN (SELECT * FROM projects)", "plain column reference"),
        ("project_id IN (SELECT id FROM projects LIMIT 1)", "plain `SELECT column FROM"),
        ("project_id IN (SELECT id FROM projects ORDER BY id)", "plain `SELECT column FROM"),
        ("project_id IN (SELECT DISTINCT id FROM projects)", "plain `SELECT column FROM"),
        ("project_id IN (SELECT id FROM projects GROUP BY id)", "plain `SELECT column FROM"),
        ("project_id IN (SELECT id FROM projects UNION SELECT id FROM teams)", "plain `SELECT"),
        ("project_id IN (SELECT id FROM projects FOR UPDATE)", "plain `SELECT column FROM"),
        ("project_id IN (SELECT id FROM projects, teams)", "exactly one table"),
        ("project_id IN (SELECT projects.id FROM projects JOIN teams USING (id))", "one table"),
        ("project_id IN (SELECT id FROM ONLY projects)", "FROM ONLY"),
        ("project_id IN (SELECT projects.id FROM projects)", "unknown reference projects.id"),
        # Correlated: the subquery may only name its own table's columns.
        ("project_id IN (SELECT id FROM projects WHERE owner = title)", "unknown reference title"),
        ("project_id IN (SELECT id FROM projects WHERE nope)", "unknown reference nope"),
        (
            "project_id IN (SELECT owner FROM projects)",
            "has type integer but the subquery returns text",
        ),
        ("title IN (SELECT id FROM projects)", "has type text but the subquery returns integer"),
        (
            "project_id IN (SELECT id FROM projects WHERE owner = $2)",
            "parameter $2 was not provided",
        ),
        ("project_id IN (SELECT id FROM projects WHERE 1 / 0 = id)", "division by zero"),
        ("project_id IN (SELECT id FROM projects WHERE owner)", "must return a boolean"),
    ],
)
def test_rejected_forms(where: str, fragment: str) -> None:
    rejects(where, fragment)


def test_membership_follows_postgres_null_rules() -> None:
    clause = compile_tasks("project_id IN (SELECT team_id FROM projects)")
    negated = compile_tasks("project_id NOT IN (SELECT team_id FROM projects)")
    (inner,) = clause.subqueries
    (inner_negated,) = negated.subqueries

    def both(project_id: str | None) -> tuple[object, object]:
        row = {"id": "1", "project_id": project_id, "title": None}
        return clause._evaluate(row), negated._evaluate(row)

    # Empty result: false even for NULL, so NOT IN is true.
    assert both(None) == (False, True)
    for subquery in (inner, inner_negated):
        subquery.load(["7", None])
    assert both("7") == (True, False)
    assert both("8") == (None, None)  # not found, but the result holds a NULL
    assert both(None) == (None, None)
    for subquery in (inner, inner_negated):
        assert subquery.apply_change({"id": "1", "team_id": None}, None)  # the NULL leaves
    assert both("8") == (False, True)
    assert clause.matches({"project_id": "7"}) and negated.matches({"project_id": "8"})


def test_result_counts_rows_and_reports_values_entering_and_leaving() -> None:
    clause = compile_tasks(
        "project_id IN (SELECT team_id FROM projects WHERE owner = $1)", {"1": "a"}
    )
    (subquery,) = clause.subqueries
    subquery.load(["1", "1"])

    def row(team: str | None, owner: str = "a") -> dict[str, str | None]:
        return {"id": "0", "team_id": team, "owner": owner, "amount": None}

    assert not subquery.apply_change(None, row("1"))  # a third row with 1
    assert not subquery.apply_change(None, row("2", owner="b"))  # not selected
    assert subquery.apply_change(None, row("2"))  # 2 enters
    assert not subquery.apply_change(row("2"), row("2"))  # unchanged value
    assert subquery.apply_change(row("2"), row("3")) == (2, 3)  # 2 leaves, 3 enters
    assert subquery.apply_change(row("3"), row("3", owner="b"))  # 3 moves out
    assert not subquery.apply_change(row("1"), None)
    assert not subquery.apply_change(row("1"), row("1", owner="b"))
    assert subquery.apply_change(row("1"), None)  # the last 1 leaves
    assert len(subquery.result) == 0


def test_numeric_values_compare_by_value_not_text() -> None:
    clause = compile_where(
        "n IN (SELECT amount FROM projects)", {"n": ColumnType("numeric")}, {}, TABLES
    )
    (subquery,) = clause.subqueries
    subquery.load(["1.50"])
    assert clause.matches({"n": "1.5"})
    assert not subquery.apply_change(None, {"amount": "1.500", "id": "9"})


# -- agreement with Postgres ------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn(postgres) -> Iterator[psycopg.Connection]:
    admin = psycopg.connect(postgres.url(), autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS where_subqueries")
    admin.execute("CREATE DATABASE where_subqueries")
    connection = psycopg.connect(postgres.url("where_subqueries"), autocommit=True)
    connection.execute("CREATE TABLE tasks (id int4 PRIMARY KEY, project_id int4, title text)")
    connection.execute(
        "CREATE TABLE projects (id int4 PRIMARY KEY, owner text, team_id int4, amount numeric)"
    )
    connection.execute("CREATE TABLE teams (id int4 PRIMARY KEY, name text)")
    yield connection
    connection.close()
    admin.execute("DROP DATABASE where_subqueries")
    admin.close()


def _fill(conn: psycopg.Connection, seed: int) -> None:
    rng = random.Random(seed)

    def maybe(value: object) -> object:
        return None if rng.random() < 0.15 else value

    conn.execute("TRUNCATE tasks, projects, teams")
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO teams VALUES (%s, %s)",
            [(i, maybe(rng.choice("abc"))) for i in range(6)],
        )
        cursor.executemany(
            "INSERT INTO projects VALUES (%s, %s, %s, %s)",
            [
                (i, maybe(rng.choice("abc")), maybe(rng.randrange(8)), maybe(rng.randrange(3)))
                for i in range(12)
            ],
        )
        cursor.executemany(
            "INSERT INTO tasks VALUES (%s, %s, %s)",
            [(i, maybe(rng.randrange(14)), maybe(rng.choice("abc"))) for i in range(40)],
        )


def _text_rows(conn: psycopg.Connection, table: str) -> list[dict[str, str | None]]:
    result = conn.execute(f"SELECT * FROM {table}").pgresult
    assert result is not None
    names = [result.fname(i).decode() for i in range(result.nfields)]
    return [
        {
            name: None if (v := result.get_value(r, i)) is None else bytes(v).decode()
            for i, name in enumerate(names)
        }
        for r in range(result.ntuples)
    ]


def _texts(conn: psycopg.Connection, sql: str) -> list[str | None]:
    """The first column's text output (what replication delivers, unlike `::text`)."""
    result = conn.execute(sql).pgresult
    assert result is not None
    return [
        None if (v := result.get_value(r, 0)) is None else bytes(v).decode()
        for r in range(result.ntuples)
    ]


WHERES = [
    "project_id IN (SELECT id FROM projects WHERE owner = $1)",
    "project_id NOT IN (SELECT team_id FROM projects)",
    "NOT (project_id IN (SELECT team_id FROM projects WHERE owner <> $1))",
    "(project_id IN (SELECT team_id FROM projects)) IS UNKNOWN",
    "project_id IN (SELECT id FROM projects WHERE team_id IN "
    "(SELECT id FROM teams WHERE name = $1))",
    "title = $1 OR project_id IN (SELECT id FROM projects WHERE owner IS NULL)",
    "project_id IN (SELECT id FROM projects WHERE false)",
    "id IN (SELECT team_id FROM projects WHERE team_id NOT IN (SELECT id FROM teams))",
]


@pytest.mark.parametrize("seed", range(4))
def test_agreement_with_postgres(conn: psycopg.Connection, seed: int) -> None:
    _fill(conn, seed)
    tasks = _text_rows(conn, "tasks")
    for where, owner in itertools.product(WHERES, "ab"):
        clause = compile_tasks(where, {"1": owner})
        for subquery in clause.subqueries:
            subquery.load(_texts(conn, subquery.sql))
        python = {int(r["id"]) for r in tasks if clause.matches(r)}  # type: ignore[arg-type]
        postgres = {r for (r,) in conn.execute(f"SELECT id FROM tasks WHERE {clause.sql}")}
        assert python == postgres, where
        original = where.replace("$1", f"'{owner}'")
        assert {r for (r,) in conn.execute(f"SELECT id FROM tasks WHERE {original}")} == postgres
