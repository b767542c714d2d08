"""Where clauses for shapes: one clause, evaluated identically by Postgres and by Python.

`compile_where(where, columns, params)` checks a clause against the table's column types
and returns a `WhereClause` with:

- `matches(row)`: evaluation on a row of Postgres text values (None for NULL);
- `sql`: the clause for `SELECT ... WHERE <sql>`, params inlined as typed literals;
- `referenced_columns` and `index_hint` (for routing changes to candidate shapes);
- `subqueries`: each `column IN (SELECT column FROM table WHERE ...)`, whose result the
  caller loads and keeps current from that table's changes (`tables_read(where)` names
  the tables whose columns `compile_where` then needs).

Semantics are Postgres's for the supported subset; anything outside it is rejected with a
`WhereError` rather than approximated. Text compares in the "C" collation (code-point
order, ASCII-only case folding); the generated SQL asks for `COLLATE "C"` wherever the
collation matters, so Postgres agrees whatever the database's default collation is. The
snapshot and replication sessions must use `SESSION_SETTINGS` (ISO dates, UTC).
"""

from .clause import IndexHint, Subquery, WhereClause, compile_where, tables_read
from .errors import WhereError, WhereEvalError
from .types import ColumnType, PgType

# Session settings the evaluator and the generated SQL assume, for snapshot queries and for
# the replication connection alike (Electric uses the same): ISO dates are what the row
# parsers read, UTC is what zone-less timestamptz literals and date/timestamptz
# conversions mean, and extra_float_digits >= 1 makes float text exact.
SESSION_SETTINGS = {"DateStyle": "ISO, DMY", "TimeZone": "UTC", "extra_float_digits": "1"}

__all__ = [
    "SESSION_SETTINGS",
    "ColumnType",
    "IndexHint",
    "PgType",
    "Subquery",
    "WhereClause",
    "WhereError",
    "WhereEvalError",
    "compile_where",
    "tables_read",
]
