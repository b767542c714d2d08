"""The publication: which tables' changes the slot streams to us.

Runs on an ordinary connection (a replication connection takes no bind parameters). The
publication starts empty and tables join it as shapes need them; each joining table gets
`REPLICA IDENTITY FULL`, so updates and deletes carry the whole old row and a shape can
tell whether a row moved out of its where clause. Removing a table leaves its replica
identity alone: other tools may rely on it, and FULL is harmless.
"""

from __future__ import annotations

import psycopg
from psycopg import errors, sql

from .errors import TableNotFound
from .names import check_name

# Electric requires all four; a publication created by hand may publish fewer.
PUBLISH_ALL = "insert, update, delete, truncate"


def table_name(table: str | tuple[str, str]) -> tuple[str, str]:
    """`"items"` or `"public.items"` or `("public", "items")` -> `("public", "items")`.

    The string form is for plain names only; pass a tuple for names containing dots or
    quotes.
    """
    if isinstance(table, tuple):
        return table
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else ("public", schema)


def ensure_publication(conn: psycopg.Connection, publication: str) -> bool:
    """Create the publication if missing; True when this call created it.

    A new publication means a slot created before it never saw its changes, so callers
    treat True as "recreate the slot and drop derived state".
    """
    check_name(publication, "publication name")
    with conn.transaction():
        row = conn.execute(
            "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate"
            " FROM pg_publication WHERE pubname = %s",
            [publication],
        ).fetchone()
        if row is None:
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(publication))
                    )
            except errors.DuplicateObject:
                return False  # another instance created it between our check and now
            return True
        if not row[0]:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET (publish = {})").format(
                    sql.Identifier(publication), sql.Literal(PUBLISH_ALL)
                )
            )
        return False


def add_table(conn: psycopg.Connection, publication: str, table: str | tuple[str, str]) -> bool:
    """Publish a table and make its replica identity FULL; True if anything changed."""
    schema, name = table_name(table)
    ident = sql.Identifier(schema, name)
    with conn.transaction():
        row = conn.execute(
            "SELECT c.relreplident, EXISTS ("
            "  SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid"
            "  WHERE p.pubname = %s AND pr.prrelid = c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [publication, schema, name],
        ).fetchone()
        if row is None:
            raise TableNotFound(f"table {schema}.{name} does not exist")
        replica_identity, published = row
        changed = False
        if not published:
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                            sql.Identifier(publication), ident
                        )
                    )
                changed = True
            except errors.DuplicateObject:
                pass  # added concurrently
        if replica_identity != "f":
            conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(ident))
            changed = True
        return changed


def remove_table(conn: psycopg.Connection, publication: str, table: str | tuple[str, str]) -> bool:
    """Stop publishing a table; True if it was published."""
    schema, name = table_name(table)
    with conn.transaction():
        # pg_publication_rel, not pg_publication_tables: the latter lists a partitioned
        # table's partitions rather than the table that was added.
        published = conn.execute(
            "SELECT 1 FROM pg_publication_rel pr"
            " JOIN pg_publication p ON p.oid = pr.prpubid"
            " JOIN pg_class c ON c.oid = pr.prrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE p.pubname = %s AND n.nspname = %s AND c.relname = %s",
            [publication, schema, name],
        ).fetchone()
        if published is None:
            return False
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                sql.Identifier(publication), sql.Identifier(schema, name)
            )
        )
        return True


def published_tables(conn: psycopg.Connection, publication: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2",
        [publication],
    ).fetchall()
    return [(schema, name) for schema, name in rows]


def drop_publication(conn: psycopg.Connection, publication: str) -> None:
    check_name(publication, "publication name")
    with conn.transaction():
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
