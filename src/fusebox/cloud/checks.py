"""Pre-flight checks of a Postgres source, as Electric Cloud runs them before connecting.

In order: the `connection` (can we sign in at all), the `replication_permission` (the role
has REPLICATION or is a superuser: logical replication needs it) and the `wal_level`
(`logical`, or there is no logical decoding). Each failure names its check and says how to
fix it. Messages never contain the connection string's password.
"""

from __future__ import annotations

import psycopg

from fusebox.cloud.dsn import scrub
from fusebox.cloud.runtime import CheckName, CheckResult

CONNECT_TIMEOUT_SECONDS = 10


async def check_database(
    database_url: str, *, connect_timeout: int = CONNECT_TIMEOUT_SECONDS
) -> CheckResult:
    passed: list[CheckName] = []
    try:
        connection = await psycopg.AsyncConnection.connect(
            database_url, connect_timeout=connect_timeout, autocommit=True
        )
    except psycopg.Error as exc:
        reason = scrub(str(exc).strip(), database_url)
        return CheckResult.failure(
            "connection",
            f"Could not connect to the database: {reason}. Check the host, port, database "
            "name, user and password in the connection string, and that the database "
            "accepts connections from this server (pg_hba.conf, firewall).",
        )
    except Exception as exc:  # a malformed URL psycopg cannot even parse
        return CheckResult.failure(
            "connection",
            f"Could not connect to the database: {scrub(str(exc), database_url)}. "
            "Check the connection string.",
        )
    async with connection:
        passed.append("connection")
        async with connection.cursor() as cursor:
            await cursor.execute(
                "SELECT current_user, rolreplication, rolsuper FROM pg_roles "
                "WHERE rolname = current_user"
            )
            row = await cursor.fetchone()
            user, replication, superuser = row if row is not None else ("?", False, False)
            if not (replication or superuser):
                return CheckResult.failure(
                    "replication_permission",
                    f"The role {user} lacks the REPLICATION attribute, which logical "
                    f"replication needs. As a superuser, run: ALTER ROLE {_ident(user)} "
                    "WITH REPLICATION; (or connect as a role that has it).",
                    tuple(passed),
                )
            passed.append("replication_permission")
            await cursor.execute("SHOW wal_level")
            row = await cursor.fetchone()
            wal_level = row[0] if row is not None else "unknown"
            if wal_level != "logical":
                return CheckResult.failure(
                    "wal_level",
                    f"wal_level is {wal_level!r}, but logical replication needs 'logical'. "
                    "Run ALTER SYSTEM SET wal_level = logical; and restart Postgres "
                    "(on a managed database, enable logical replication in its settings).",
                    tuple(passed),
                )
            passed.append("wal_level")
    return CheckResult.success(tuple(passed))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
