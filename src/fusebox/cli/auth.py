"""`fusebox auth`: sign in and out, see who you are, and manage API tokens.

`fusebox auth token …` is also reachable as `fusebox token …`.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.text import Text

from fusebox.cli.client import ApiClient, CliError, StoredLogin, usage_error
from fusebox.cli.command import Cli, command
from fusebox.cli.output import Column, field, stdin_is_tty, when

app = typer.Typer(help="Sign in, see who you are, and manage API tokens.", no_args_is_help=True)
tokens = typer.Typer(
    help="API tokens for scripts and CI: bound to one workspace, limited to scopes.",
    no_args_is_help=True,
)
app.add_typer(tokens, name="token")

TOKEN_COLUMNS = [
    field("id", style="cyan"),
    field("name"),
    Column("SCOPES", lambda t: " ".join(t["scopes"])),
    field("workspace_id", "WORKSPACE"),
    Column("CREATED (UTC)", lambda t: when(t["created_at"])),
]


def read_password(password_stdin: bool, prompt: str = "Password") -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise usage_error("--password-stdin read an empty password")
        return password
    if not stdin_is_tty():
        raise usage_error(
            "there is no terminal to ask for the password on",
            hint="Pipe it in with --password-stdin.",
        )
    return typer.prompt(prompt, hide_input=True, err=True)


@command(app, "login")
def login(
    cli: Cli,
    email: str = typer.Option(None, "--email", help="The account's email (asked if missing)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
) -> None:
    """Sign in with email and password, and store the session for later commands.

    The session is kept in $XDG_CONFIG_HOME/fusebox/auth.json (~/.config/fusebox by
    default), readable by you only, and is only sent to the server it came from.
    """
    if not email:
        if password_stdin or not stdin_is_tty():
            raise usage_error("--email is required when there is no terminal to ask on")
        email = typer.prompt("Email", err=True)
    password = read_password(password_stdin)
    settings = cli.settings
    api = cli.anonymous_api()
    try:
        answer = api.post("/auth/login", {"email": email, "password": password})
    finally:
        api.close()
    user = answer["user"]
    settings.store.save(
        StoredLogin(
            api_url=settings.api_url, token=answer["token"], email=user["email"], user_id=user["id"]
        )
    )
    cli.out.result(
        {"api_url": settings.api_url, "user": user, "config_path": str(settings.store.path)},
        lambda: cli.out.line(
            Text("Signed in to ")
            + Text(settings.api_url, style="bold")
            + Text(" as ")
            + Text(user["email"], style="bold")
            + Text(f". Login stored in {settings.store.path}.")
        ),
    )


def _credential(cli: Cli, whoami: dict[str, Any]) -> str:
    token = whoami.get("token")
    source = cli.settings.token_source
    if token:
        return f"API token {token['id']} ({token['name']}) from {source}"
    if source == "stored login":
        return f"session stored in {cli.settings.store.path}"
    return f"session token from {source}"


@command(app, "password")
def password(
    cli: Cli,
    password_stdin: bool = typer.Option(
        False,
        "--password-stdin",
        help="Read the current password from the first line of stdin, the new one from the second.",
    ),
) -> None:
    """Change your password (needs the current one). Your other sessions end; this one and
    your API tokens go on."""
    current = read_password(password_stdin, "Current password")
    if password_stdin:
        new = read_password(True)
    else:
        new = read_password(False, "New password")
        if typer.prompt("New password again", hide_input=True, err=True) != new:
            raise usage_error("the new passwords differ")
    cli.api().post("/auth/password", {"current_password": current, "new_password": new})
    cli.out.result(
        {"changed": True},
        lambda: cli.out.line("Password changed. Your other sessions have ended."),
    )


@command(app, "whoami")
def whoami(cli: Cli) -> None:
    """Show the signed-in user, the credential in use and the workspaces you can see."""
    answer = cli.api().get("/auth/whoami")

    def human() -> None:
        user, token = answer["user"], answer.get("token")
        pairs: list[tuple[str, Any]] = [
            ("User", f"{user['email']} ({user['id']})"),
            ("Server", f"{cli.settings.api_url} (from {cli.settings.api_url_source})"),
            ("Credential", _credential(cli, answer)),
        ]
        if token:
            pairs += [("Scopes", " ".join(token["scopes"])), ("Workspace", token["workspace_id"])]
        cli.out.record(pairs)
        cli.out.line()
        cli.out.table(
            answer["workspaces"],
            [field("id", "WORKSPACE", style="cyan"), field("name")],
            "No workspaces.",
        )

    cli.out.result({**answer, "api_url": cli.settings.api_url}, human)


@command(app, "logout")
def logout(cli: Cli) -> None:
    """End the stored session on the server and forget it here."""
    settings = cli.settings
    stored = settings.stored
    if stored is None:
        cli.out.result(
            {"logged_out": False, "reason": "not signed in"},
            lambda: cli.out.line("Not signed in: nothing to do."),
        )
        return
    api = ApiClient(stored.api_url, stored.token, token_source="stored login")
    warning = None
    try:
        api.post("/auth/logout")
    except CliError as error:
        if error.status != 401:  # a session that has already ended is fine
            warning = f"the server did not end the session ({error.message}); forgot it here"
    finally:
        api.close()
    settings.store.clear()
    if warning:
        cli.out.warn(warning)
    cli.out.result(
        {"logged_out": True, "api_url": stored.api_url, "server_session_ended": warning is None},
        lambda: cli.out.line(f"Signed out of {stored.api_url}."),
    )
    if settings.token_source in ("--token", "FUSEBOX_API_TOKEN"):
        cli.out.note(
            f"Commands still use the API token from {settings.token_source}; "
            "revoke it with `fusebox auth token revoke` if it should stop working."
        )


# -- API tokens -------------------------------------------------------------------------------


def _scopes(value: str) -> list[str]:
    # Electric Cloud spells scopes `v2:projects:read`; the same names work here.
    scopes = [s.strip().removeprefix("v2:") for s in value.split(",") if s.strip()]
    if not scopes:
        raise usage_error("--scopes needs at least one scope, such as projects:read")
    return scopes


@command(tokens, "create")
def token_create(
    cli: Cli,
    name: str = typer.Option(..., "--name", help="What the token is for, such as ci."),
    scopes: str = typer.Option(
        ...,
        "--scopes",
        help="Comma-separated: projects:read|write, environments:read|write, "
        "services:read|write, services:secrets, tokens:read|write, members:read|write. "
        "Write implies read.",
    ),
    workspace: str = typer.Option(
        None, "--workspace", help="Workspace ID or name (env FUSEBOX_WORKSPACE_ID)."
    ),
) -> None:
    """Create an API token; it is printed this once and never again."""
    body = {"workspace_id": cli.workspace_id(workspace), "name": name, "scopes": _scopes(scopes)}
    created = cli.api().post("/tokens", body)

    def human() -> None:
        cli.out.record(
            [
                ("ID", created["id"]),
                ("Name", created["name"]),
                ("Scopes", " ".join(created["scopes"])),
                ("Workspace", created["workspace_id"]),
                ("Token", Text(created["token"], style="bold")),
            ]
        )
        cli.out.note("Copy the token now: it is not shown again.")

    cli.out.result(created, human)


@command(tokens, "list")
def token_list(
    cli: Cli,
    workspace: str = typer.Option(
        None, "--workspace", help="Only this workspace, ID or name (env FUSEBOX_WORKSPACE_ID)."
    ),
) -> None:
    """List API tokens (never their secrets)."""
    value = workspace or cli.settings.workspace_id
    workspace_id = cli.resolve_workspace(value) if value else None
    rows = cli.api().get("/tokens", workspace_id=workspace_id)
    cli.out.result(rows, lambda: cli.out.table(rows, TOKEN_COLUMNS, "No API tokens."))


@command(tokens, "revoke", destructive=True)
def token_revoke(
    cli: Cli, token_id: str = typer.Argument(..., metavar="ID", help="The token's ID (tok_…).")
) -> None:
    """Revoke an API token: anything using it is refused from now on."""

    def question() -> str:
        found = [t for t in cli.api().get("/tokens") if t["id"] == token_id]
        label = f"{token_id} ({found[0]['name']})" if found else token_id
        return f"Revoke API token {label}? Anything using it stops working"

    cli.confirm(question, action=f"revoke {token_id}")
    cli.api().delete(f"/tokens/{token_id}")
    cli.out.result(
        {"id": token_id, "revoked": True},
        lambda: cli.out.line(f"Revoked API token {token_id}."),
    )
