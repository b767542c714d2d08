"""`fusebox sync`: run an Electric-compatible sync service for one Postgres database."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

app = typer.Typer(
    help="Electric Sync: Postgres to shapes over Electric's HTTP API.", no_args_is_help=True
)


@app.command()
def serve(
    database_url: str = typer.Option(
        None, envvar="DATABASE_URL", help="Postgres connection string (wal_level=logical)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(3000, help="Port to listen on (0 picks a free one)."),
    data_dir: Path = typer.Option(
        Path(".fusebox/sync"), "--data-dir", help="Where shape logs are stored."
    ),
    secret: str = typer.Option(
        None,
        envvar="ELECTRIC_SECRET",
        help="Clients must send ?secret=… (or api_secret). Required unless --insecure.",
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Serve shapes without a secret."),
    chunk_bytes: int = typer.Option(
        10 * 1024 * 1024, help="Shape log chunk size: responses end at chunk boundaries."
    ),
    snapshot_connections: int = typer.Option(
        2,
        min=1,
        help="Connections a large table's initial snapshot is read over, in parallel.",
    ),
    long_poll_timeout: float = typer.Option(20.0, help="Seconds a live request waits."),
    allow_shape_deletion: bool = typer.Option(False, help="Allow DELETE /v1/shape."),
    replication_stream_id: str = typer.Option(
        "default",
        help="Names the slot and publication: electric_slot_<id>, electric_publication_<id>.",
    ),
) -> None:
    """Serve shapes of DATABASE_URL at http://HOST:PORT/v1/shape."""
    if not database_url:
        raise typer.BadParameter(
            "give --database-url or set DATABASE_URL", param_hint="--database-url"
        )
    if not secret and not insecure:
        raise typer.BadParameter(
            "give --secret (or ELECTRIC_SECRET), or --insecure to serve without one",
            param_hint="--secret",
        )
    import uvloop

    from fusebox.limits import raise_open_files_limit
    from fusebox.sync.service import SyncSettings
    from fusebox.sync.service import serve as run

    settings = SyncSettings(
        database_url=database_url,
        data_dir=data_dir,
        host=host,
        port=port,
        secret=secret if not insecure else None,
        chunk_bytes=chunk_bytes,
        snapshot_connections=snapshot_connections,
        long_poll_timeout=long_poll_timeout,
        allow_shape_deletion=allow_shape_deletion,
        stream_id=replication_stream_id,
    )
    os.makedirs(data_dir, exist_ok=True)
    raise_open_files_limit()
    uvloop.install()
    asyncio.run(run(settings))
