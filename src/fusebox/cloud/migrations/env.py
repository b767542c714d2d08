"""Alembic environment for the control-plane database.

At runtime `fusebox.cloud.db.upgrade()` passes an open connection in
`config.attributes["connection"]`. For development, `alembic -x url=sqlite:///... upgrade head`
(with a config whose script_location is this directory) works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from fusebox.cloud.db import create_db_engine, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode lets later revisions do so.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database with -x url=...")
    engine = create_db_engine(url)
    with engine.connect() as connection:
        _run(connection)
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
_main()
