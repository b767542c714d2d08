"""The control-plane database: SQLAlchemy Core tables, engine creation and migrations.

SQLite is the embedded default (one file in the data directory, WAL so readers never wait
for the writer, foreign keys enforced); Postgres is the cluster choice. The DDL uses only
what both accept: string IDs, JSON columns, partial unique indexes, and times stored as UTC.
The schema is created by Alembic (`migrations/`), never by `metadata.create_all`, so a later
release can change it in place; `upgrade()` runs `upgrade head` programmatically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, Engine, make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DATABASE_FILE = "control.db"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (naive text) and Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the control-plane database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Constraint names are fixed so that migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(32)
# Events and secret versions are append-only and ordered; an integer key gives the order.
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
SERIAL = BigInteger().with_variant(Integer(), "sqlite")


def _times() -> list[Column[Any]]:
    return [
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("deleted_at", UTCDateTime()),
    ]


users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    Column("password_hash", Text),
    *_times(),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, ForeignKey("users.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    *_times(),
)

memberships = Table(
    "memberships",
    metadata,
    Column("workspace_id", ID, ForeignKey("workspaces.id"), primary_key=True),
    Column("user_id", ID, ForeignKey("users.id"), primary_key=True, index=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workspace_id", ID, ForeignKey("workspaces.id"), nullable=False, index=True),
    Column("user_id", ID, ForeignKey("users.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)

projects = Table(
    "projects",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workspace_id", ID, ForeignKey("workspaces.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    *_times(),
)

environments = Table(
    "environments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    *_times(),
)
# `clone_from` accepts a name, so a live environment's name is unique in its project.
Index(
    "uq_environments_live_name",
    environments.c.project_id,
    environments.c.name,
    unique=True,
    sqlite_where=environments.c.deleted_at.is_(None),
    postgresql_where=environments.c.deleted_at.is_(None),
)

services = Table(
    "services",
    metadata,
    Column("id", ID, primary_key=True),
    Column("environment_id", ID, ForeignKey("environments.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("type", String(16), nullable=False),
    Column("region", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("error", JSON),
    # Encrypted (crypto.Keyring): the connection string holds the database password.
    Column("database_url_enc", Text),
    *_times(),
)

service_secrets = Table(
    "service_secrets",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("service_id", ID, ForeignKey("services.id"), nullable=False, index=True),
    Column("secret_enc", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # NULL for the current secret; a rotated-out secret stays valid until this time.
    Column("valid_until", UTCDateTime()),
)

events = Table(
    "events",
    metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("service_id", ID, ForeignKey("services.id"), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


# -- engines ----------------------------------------------------------------------------------


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / DATABASE_FILE}"


def create_db_engine(url: str) -> Engine:
    """An engine for the control-plane database at `url` (sqlite:/// or postgresql://)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # psycopg 3 is the project's Postgres driver; SQLAlchemy would default to psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    # hide_parameters: a failing statement's message must not carry hashes or ciphertexts.
    engine = create_engine(parsed, hide_parameters=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite, which would otherwise begin lazily
        # and let two writers read the same state before either writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front (BEGIN IMMEDIATE, which waits on busy_timeout)
        # so a read-then-write transaction cannot fail halfway with "database is locked".
        if connection.get_execution_options().get("fusebox_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction."""
    with engine.connect() as connection, connection.begin():
        yield connection


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction: serialised against other writers on SQLite; on Postgres, lock
    the rows a decision depends on with `.with_for_update()`."""
    with engine.connect() as connection:
        connection = connection.execution_options(fusebox_write=True)
        with connection.begin():
            yield connection


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (`alembic upgrade head`), no alembic.ini needed."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        # The SQLite begin hook above only sees SQLAlchemy-driven transactions; commit
        # whatever alembic left open explicitly.
        if connection.in_transaction():
            connection.commit()
