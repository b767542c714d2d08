"""The `fusebox` command."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fusebox.cli import auth, members, resources, services, streams, sync
from fusebox.cli.client import EXIT_CODES_HELP
from fusebox.telemetry import redact

app = typer.Typer(
    help="Fusebox: Postgres sync and durable HTTP streams, self-hosted.",
    epilog=(
        "The admin commands reach the server at --api-url (or FUSEBOX_API_URL, else the "
        "stored login's) with --token (or FUSEBOX_API_TOKEN, else the session from `fusebox "
        "auth login`); FUSEBOX_WORKSPACE_ID picks the default workspace. Every admin command "
        "takes --json for scripts.\n\n" + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(streams.app, name="streams")
app.add_typer(sync.app, name="sync")
app.add_typer(auth.app, name="auth")
app.add_typer(auth.tokens, name="token", help="API tokens (the same as `fusebox auth token`).")
app.add_typer(resources.workspaces, name="workspaces")
app.add_typer(resources.projects, name="projects")
app.add_typer(resources.environments, name="environments")
app.add_typer(services.app, name="services")
app.add_typer(members.app, name="members")


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
    api_url: str = typer.Option(
        None, "--api-url", help="Admin commands: the server's base URL.", show_default=False
    ),
    token: str = typer.Option(None, "--token", help="Admin commands: the API token to use."),
) -> None:
    ctx.obj = {"api_url": api_url, "token": token}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    redact.install()
    # Migrations announce every plugin at INFO; only problems are worth a line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The CLI's own API calls would otherwise log a line each.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port for the data plane and the admin API."),
    data_dir: Path = typer.Option(
        Path(".fusebox/platform"), "--data-dir", help="Where everything is stored."
    ),
    public_url: str = typer.Option(
        None, help="The URL clients use to reach this server (default http://HOST:PORT)."
    ),
    owner_email: str = typer.Option(
        None, envvar="FUSEBOX_OWNER_EMAIL", help="Email of the owner account made on first start."
    ),
) -> None:
    """Run the whole platform: admin API, Sync sources and Streams services, one port."""
    import asyncio

    import uvloop

    from fusebox.cloud.serve import ServeSettings
    from fusebox.cloud.serve import serve as run
    from fusebox.limits import raise_open_files_limit

    settings = ServeSettings(
        data_dir=data_dir, host=host, port=port, public_url=public_url, owner_email=owner_email
    )
    raise_open_files_limit()
    uvloop.install()
    asyncio.run(run(settings))


def main() -> None:
    app()
