"""What the CLI prints: JSON for scripts, Rich tables for people, errors on stderr.

With `--json` the standard output carries exactly one JSON document and nothing else; notes
and progress are for people and are left out; errors go to stderr as a JSON envelope.
Without it, results are tables on stdout and progress, notes and errors go to stderr.
User-supplied text is never read as Rich markup.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fusebox.cli.client import EXIT_ERROR, CliError, usage_error


def stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def when(timestamp: str | None) -> str:
    """`2026-01-02T03:04:05.678Z` as `2026-01-02 03:04:05` (UTC, as the API gives it)."""
    if not timestamp:
        return ""
    return timestamp.replace("T", " ")[:19]


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Mapping[str, Any]], Any]
    style: str | None = None


def field(name: str, header: str | None = None, style: str | None = None) -> Column:
    return Column(header or name.upper(), lambda row: row.get(name), style)


def _cell(value: Any) -> Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, list | tuple):
        return Text(", ".join(str(v) for v in value))
    return Text(str(value))


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        # A pipe gets whole lines: no wrapping or cropping of IDs and URLs at 80 columns.
        self.interactive = sys.stdout.isatty()
        self.console = Console(highlight=False, width=None if self.interactive else 10_000)
        self.err = Console(
            stderr=True, highlight=False, width=None if sys.stderr.isatty() else 10_000
        )

    # -- results --------------------------------------------------------------------------

    def print(self, renderable: Any) -> None:
        if self.interactive:
            self.console.print(renderable)
            return
        # Tables pad every cell to its column's width: no trailing blanks in pipes and logs.
        with self.console.capture() as captured:
            self.console.print(renderable)
        lines = captured.get().splitlines()
        sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))
        sys.stdout.flush()

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def result(self, data: Any, human: Callable[[], None]) -> None:
        """`data` as JSON with --json, else whatever `human` prints."""
        if self.json:
            self.emit_json(data)
        else:
            human()

    def table(
        self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], empty: str
    ) -> None:
        if not rows:
            self.err.print(Text(empty, style="dim"))
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column.header, style=column.style, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(column.value(row)) for column in columns))
        self.print(table)

    def record(self, pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """One resource as `key  value` lines."""
        if title:
            self.print(Text(title, style="bold"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for key, value in pairs:
            grid.add_row(key, value if isinstance(value, Text) else _cell(value))
        self.print(grid)

    def line(self, text: str | Text = "") -> None:
        self.print(text if isinstance(text, Text) else Text(text))

    # -- notes, warnings and errors (stderr) ----------------------------------------------

    def note(self, text: str | Text) -> None:
        """A remark for people; silent with --json."""
        if not self.json:
            self.err.print(text if isinstance(text, Text) else Text(text, style="dim"))

    def warn(self, text: str) -> None:
        if self.json:
            return
        self.err.print(Text("Warning: ", style="yellow bold") + Text(text))

    def error(self, error: CliError) -> None:
        if self.json:
            sys.stderr.write(json.dumps(error.as_json(), ensure_ascii=False) + "\n")
            sys.stderr.flush()
            return
        self.err.print(Text("Error: ", style="red bold") + Text(error.message))
        if error.hint:
            self.err.print(Text(error.hint))

    # -- confirmation ---------------------------------------------------------------------

    def confirm(self, question: str | Callable[[], str], *, force: bool, action: str) -> None:
        """Ask before `action`; without a terminal (or with --json) only --force will do."""
        if force:
            return
        if self.json:
            raise usage_error(
                f"refusing to {action} without --force",
                hint="--json never prompts: add --force to confirm.",
            )
        if not stdin_is_tty():
            raise usage_error(
                f"refusing to {action} without --force",
                hint="There is no terminal to confirm on: add --force to confirm.",
            )
        text = question() if callable(question) else question
        if not typer.confirm(text, default=False, err=True):
            raise CliError("cancelled: nothing was changed", exit_code=EXIT_ERROR, code="cancelled")
