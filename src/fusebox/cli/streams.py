"""`fusebox streams`: run a standalone Durable Streams server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

app = typer.Typer(help="Electric Streams: a plain Durable Streams server.", no_args_is_help=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(4437, help="Port to listen on (0 picks a free one)."),
    data_dir: Path = typer.Option(
        Path(".fusebox/streams"), "--data-dir", help="Where streams are stored."
    ),
    long_poll_timeout: float = typer.Option(
        30.0, help="Seconds a long-poll waits for new data before answering 204."
    ),
    sse_rotation: float = typer.Option(
        60.0, help="Seconds after which an SSE connection is closed for the client to resume."
    ),
    max_body_mb: int = typer.Option(64, help="Largest accepted request body, in MiB."),
    subscriptions: bool = typer.Option(
        True, help="Serve webhook and pull-wake subscriptions under __ds/."
    ),
) -> None:
    """Serve Durable Streams at http://HOST:PORT/v1/stream/<path>, with no auth."""
    import uvloop

    from fusebox.limits import raise_open_files_limit
    from fusebox.streams.service import StreamsSettings
    from fusebox.streams.service import serve as run

    settings = StreamsSettings(
        data_dir=data_dir,
        host=host,
        port=port,
        long_poll_timeout=long_poll_timeout,
        sse_rotation=sse_rotation,
        max_body_bytes=max_body_mb * 1024 * 1024,
        subscriptions=subscriptions,
    )
    raise_open_files_limit()
    uvloop.install()
    asyncio.run(run(settings))
