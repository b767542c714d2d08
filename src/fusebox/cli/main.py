"""The `fusebox` command."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fusebox.cli import streams, sync

app = typer.Typer(
    help="Fusebox: Postgres sync and durable HTTP streams, self-hosted.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(streams.app, name="streams")
app.add_typer(sync.app, name="sync")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def main() -> None:
    app()


__all__ = ["Path", "app", "main"]
