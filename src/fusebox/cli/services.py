"""`fusebox services`: Sync sources (postgres) and Streams services in an environment."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from fusebox.cli.client import CliError, usage_error
from fusebox.cli.command import Cli, command
from fusebox.cli.output import Column, field, when

app = typer.Typer(
    help="Sync sources (Postgres) and Streams services: create, inspect, secrets, delete.",
    no_args_is_help=True,
)
create = typer.Typer(
    help="Create a service: `postgres` (a Sync source) or `streams`.", no_args_is_help=True
)
app.add_typer(create, name="create")

POLL_SECONDS = 0.5
DEFAULT_WAIT_SECONDS = 300

SERVICE_COLUMNS = [
    field("id", style="cyan"),
    field("name"),
    field("type"),
    field("region"),
    Column("STATE", lambda s: _state(s)),
    field("url", "URL"),
]

# What the newest event means while a service is provisioning, for the progress line.
_PROGRESS = {
    "initializing": "running pre-flight checks",
    "checks_passed": "checks passed, starting",
    "waiting_for_replication_lock": "waiting for the replication lock",
    "ready": "active",
}

_FIX = {
    "connection": "Check the connection string, and that Postgres accepts connections "
    "from this server.",
    "replication_permission": "Grant the role REPLICATION (ALTER ROLE … WITH REPLICATION), or "
    "connect as a role that has it.",
    "wal_level": "Set wal_level = logical and restart Postgres.",
}


def _state(service: dict[str, Any]) -> Text:
    style = {"active": "green", "error": "red", "provisioning": "yellow"}.get(service["state"])
    return Text(service["state"], style=style or "")


def service_pairs(service: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = [
        ("ID", service["id"]),
        ("Name", service["name"]),
        ("Type", service["type"]),
        ("Region", service["region"]),
        ("Environment", service["environment_id"]),
        ("State", _state(service)),
        ("URL", service["url"]),
    ]
    if service.get("database"):
        pairs.append(("Database", service["database"]))
    error = service.get("error")
    if error:
        pairs.append(("Failed check", Text(error["check"], style="red")))
        pairs.append(("Message", error["message"]))
    pairs += [
        ("Created (UTC)", when(service["created_at"])),
        ("Updated (UTC)", when(service["updated_at"])),
    ]
    return pairs


def failure(service: dict[str, Any]) -> CliError:
    error = service.get("error") or {}
    check = error.get("check", "unknown")
    return CliError(
        f"service {service['id']} failed the {check} check: {error.get('message', '')}",
        code=check if check in _FIX else "service_error",
        hint=_FIX.get(check, f"See `fusebox services events {service['id']}`."),
    )


def wait_until_settled(
    cli: Cli, services: Sequence[dict[str, Any]], timeout: float
) -> list[dict[str, Any]]:
    """Poll until every service is `active` or `error`; show a spinner to people."""
    api = cli.api()
    current = {s["id"]: s for s in services}
    deadline = time.monotonic() + timeout
    show = not cli.out.json and cli.out.err.is_terminal
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=cli.out.err,
        transient=True,
        disable=not show,
    ) as progress:
        tasks = {sid: progress.add_task(f"{sid}: provisioning", total=None) for sid in current}
        while True:
            pending = [sid for sid, s in current.items() if s["state"] == "provisioning"]
            for sid in pending:
                current[sid] = api.get(f"/services/{sid}")
                if show:
                    events = api.get(f"/services/{sid}/events", limit=1000)
                    latest = events[-1]["kind"] if events else "provisioning"
                    doing = _PROGRESS.get(latest, latest.replace("_", " "))
                    progress.update(tasks[sid], description=f"{sid}: {doing}")
            if all(s["state"] != "provisioning" for s in current.values()):
                break
            if time.monotonic() > deadline:
                waiting = ", ".join(
                    sid for sid, s in current.items() if s["state"] == "provisioning"
                )
                raise CliError(
                    f"still provisioning after {timeout:g} s: {waiting}",
                    code="timeout",
                    hint="See what it is doing with `fusebox services events <id>`, or wait "
                    "longer with --timeout.",
                )
            time.sleep(POLL_SECONDS)
    for service in current.values():
        mark = (
            Text("✓ ", style="green") if service["state"] == "active" else Text("✗ ", style="red")
        )
        cli.out.note(mark + Text(f"{service['id']} ({service['name']}) is {service['state']}"))
    return list(current.values())


def _show_created(cli: Cli, service: dict[str, Any], settled: dict[str, Any] | None) -> None:
    shown = {**service, **(settled or {}), "secret": service["secret"]}

    def human() -> None:
        pairs = service_pairs(shown)
        pairs.insert(7, ("Secret", Text(service["secret"], style="bold")))
        cli.out.record(pairs, title=f"Created {service['type']} service {service['id']}")
        if shown["state"] == "provisioning":
            cli.out.note(
                f"Provisioning in the background: `fusebox services get {service['id']}` "
                "shows its state (or create with --wait)."
            )

    cli.out.result(shown, human)
    if shown["state"] == "error":
        raise failure(shown)


def _create(cli: Cli, body: dict[str, Any], wait: bool, timeout: int) -> None:
    service = cli.api().post("/services", {k: v for k, v in body.items() if v is not None})
    settled = wait_until_settled(cli, [service], timeout)[0] if wait else None
    _show_created(cli, service, settled)


WAIT = typer.Option(False, "--wait", help="Wait until the service is active (or failed).")
TIMEOUT = typer.Option(
    DEFAULT_WAIT_SECONDS, "--timeout", help="Seconds --wait waits before giving up.", min=1
)
REGION = typer.Option(..., "--region", help="Region label, such as us-east-1.")
ENVIRONMENT = typer.Option(..., "--environment", help="The environment's ID (env_…).")
NAME = typer.Option(None, "--name", help="A name (default: the type, postgres or streams).")


@command(create, "postgres")
def create_postgres(
    cli: Cli,
    environment: str = ENVIRONMENT,
    database_url: str = typer.Option(
        ...,
        "--database-url",
        help="postgresql://user:password@host/db of a role with REPLICATION, on a server "
        "with wal_level=logical. `-` reads it from stdin (keeps it out of `ps`).",
    ),
    region: str = REGION,
    name: str = NAME,
    wait: bool = WAIT,
    timeout: int = TIMEOUT,
) -> None:
    """Create a Sync source: Fusebox checks the connection, the REPLICATION permission and
    wal_level, then replicates. With --wait, exits 1 naming the failed check."""
    if database_url == "-":
        database_url = sys.stdin.readline().strip()
        if not database_url:
            raise usage_error("--database-url - read nothing from stdin")
    body = {
        "type": "postgres",
        "environment_id": environment,
        "database_url": database_url,
        "region": region,
        "name": name,
    }
    _create(cli, body, wait, timeout)


@command(create, "streams")
def create_streams(
    cli: Cli,
    environment: str = ENVIRONMENT,
    region: str = REGION,
    name: str = NAME,
    wait: bool = WAIT,
    timeout: int = TIMEOUT,
) -> None:
    """Create a Streams service: Durable Streams under <url>/<name>, Bearer <secret>."""
    body = {"type": "streams", "environment_id": environment, "region": region, "name": name}
    _create(cli, body, wait, timeout)


@command(app, "list")
def list_services(
    cli: Cli,
    environment: str = typer.Option(
        None, "--environment", help="Only this environment's services (env_…)."
    ),
) -> None:
    """List services (all you can see, or one environment's)."""
    rows = cli.api().get("/services", environment_id=environment)
    cli.out.result(rows, lambda: cli.out.table(rows, SERVICE_COLUMNS, "No services."))


SERVICE_ID = typer.Argument(..., metavar="ID", help="The service's ID (svc_…).")


@command(app, "get")
def get(cli: Cli, service_id: str = SERVICE_ID) -> None:
    """Show a service: state, URL, and which check failed if it is in error."""
    service = cli.api().get(f"/services/{service_id}")
    cli.out.result(service, lambda: cli.out.record(service_pairs(service)))


@command(app, "delete", destructive=True)
def delete(cli: Cli, service_id: str = SERVICE_ID) -> None:
    """Delete a service: stops it, and drops a source's replication slot and publication."""

    def question() -> str:
        service = cli.api().get(f"/services/{service_id}")
        return f"Delete {service['type']} service {service['name']} ({service_id})?"

    cli.confirm(question, action=f"delete {service_id}")
    cli.api().delete(f"/services/{service_id}")
    cli.out.result(
        {"id": service_id, "deleted": True}, lambda: cli.out.line(f"Deleted service {service_id}.")
    )


@command(app, "get-secret")
def get_secret(cli: Cli, service_id: str = SERVICE_ID) -> None:
    """Print the service's secret (needs the services:secrets scope)."""
    answer = cli.api().get(f"/services/{service_id}/secret")
    cli.out.result(answer, lambda: typer.echo(answer["secret"]))


@command(app, "rotate-secret", destructive=True)
def rotate_secret(
    cli: Cli,
    service_id: str = SERVICE_ID,
    overlap_seconds: int = typer.Option(
        3600,
        "--overlap-seconds",
        min=0,
        help="How long the old secret keeps working, so clients can move over.",
    ),
) -> None:
    """Make a new secret; the old one keeps working for --overlap-seconds."""
    cli.confirm(
        f"Rotate the secret of {service_id}? The current one stops working in {overlap_seconds} s",
        action=f"rotate the secret of {service_id}",
    )
    answer = cli.api().post(
        f"/services/{service_id}/rotate-secret", {"overlap_seconds": overlap_seconds}
    )

    def human() -> None:
        cli.out.record(
            [
                ("ID", answer["id"]),
                ("Secret", Text(answer["secret"], style="bold")),
                ("Old secret valid until (UTC)", when(answer["previous_valid_until"])),
            ]
        )

    cli.out.result(answer, human)


def _details(event: dict[str, Any]) -> str:
    details = event.get("details") or {}
    return json.dumps(details, ensure_ascii=False, separators=(", ", ": ")) if details else ""


@command(app, "events")
def events(
    cli: Cli,
    service_id: str = SERVICE_ID,
    limit: int = typer.Option(1000, "--limit", min=1, max=10_000, help="The newest N events."),
) -> None:
    """Show a service's event log, oldest first."""
    rows = cli.api().get(f"/services/{service_id}/events", limit=limit)
    columns = [
        Column("TIME (UTC)", lambda e: when(e["created_at"])),
        field("kind", style="bold"),
        Column("DETAILS", _details),
    ]
    cli.out.result(rows, lambda: cli.out.table(rows, columns, "No events."))


_PARAM = re.compile(r"^([1-9][0-9]{0,3})=(.*)$", re.DOTALL)
_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def _params(values: Sequence[str]) -> dict[str, str] | None:
    params = {}
    for value in values:
        match = _PARAM.match(value)
        if match is None:
            raise usage_error(
                f"--param {value!r} is not N=VALUE", hint="For `where id = $1`: --param 1=42."
            )
        params[match.group(1)] = match.group(2)
    return params or None


def _seconds(value: str) -> int:
    match = _DURATION.match(value.strip())
    if match is None:
        raise usage_error(f"--ttl {value!r} is not a duration", hint="Use 600, 10m, 2h or 1d.")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@command(app, "client-token")
def client_token(
    cli: Cli,
    service_id: str = SERVICE_ID,
    table: str = typer.Option(..., "--table", help="The shape's table, such as items."),
    where: str = typer.Option(None, "--where", help="The shape's where clause."),
    param: list[str] = typer.Option(
        None, "--param", help="A where-clause parameter, N=VALUE for $N (repeatable)."
    ),
    columns: str = typer.Option(None, "--columns", help="Comma-separated columns to include."),
    ttl: str = typer.Option("3600", "--ttl", help="Lifetime: seconds, or 10m, 2h, 1d."),
) -> None:
    """Mint a short-lived token for one shape of a Sync source, safe to give a browser."""
    body: dict[str, Any] = {"table": table, "ttl_seconds": _seconds(ttl)}
    if where is not None:
        body["where"] = where
    if params := _params(param or []):
        body["params"] = params
    if columns is not None:
        body["columns"] = [c.strip() for c in columns.split(",") if c.strip()]
    answer = cli.api().post(f"/services/{service_id}/client-tokens", body)

    def human() -> None:
        cli.out.record(
            [
                ("Token", Text(answer["token"], style="bold")),
                ("Expires (UTC)", when(answer["expires_at"])),
            ]
        )
        cli.out.note(
            f"Clients send it as Authorization: Bearer <token> (or &token=) with "
            f"source_id={service_id} and the same table, where and params."
        )

    cli.out.result(answer, human)
