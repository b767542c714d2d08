"""Where clauses for shapes: one clause, evaluated identically by Postgres and by Python.

`compile_where(where, columns, params)` checks a clause against the table's column types
and returns a `WhereClause` with:

- `matches(row)`: evaluation on a row of Postgres text values (None for NULL);
- `sql`: the clause for `SELECT ... WHERE <sql>`, params inlined as typed literals;
- `referenced_columns` and `index_hint` (for routing changes to candidate shapes).

Semantics are Postgres's for the supported subset; anything outside it is rejected with a
`WhereError` rather than approximated. Text compares in the "C" collation (code-point
order, ASCII-only case folding); the generated SQL asks for `COLLATE "C"` wherever the
collation matters, so Postgres agrees whatever the database's default collation is. The
snapshot session must use `SESSION_SETTINGS` (ISO dates, UTC).
"""

from .clause import IndexHint, WhereClause, compile_where
from .errors import WhereError, WhereEvalError
from .types import ColumnType, PgType

# Session settings the generated SQL and the evaluator assume (the same as Electric's).
SESSION_SETTINGS = {"DateStyle": "ISO, DMY", "TimeZone": "UTC"}

__all__ = [
    "SESSION_SETTINGS",
    "ColumnType",
    "IndexHint",
    "PgType",
    "WhereClause",
    "WhereError",
    "WhereEvalError",
    "compile_where",
]
