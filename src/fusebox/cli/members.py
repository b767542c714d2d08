"""`fusebox members`: who belongs to a workspace, and with which role."""

from __future__ import annotations

import typer

from fusebox.cli.auth import read_password
from fusebox.cli.client import EXIT_NOT_FOUND, CliError
from fusebox.cli.command import Cli, command
from fusebox.cli.output import Column, field, when

app = typer.Typer(help="Workspace members: owners, admins and members.", no_args_is_help=True)

WORKSPACE = typer.Option(
    None, "--workspace", help="Workspace ID or name (env FUSEBOX_WORKSPACE_ID)."
)
USER = typer.Argument(..., metavar="USER", help="The member's user ID (usr_…) or email.")
ROLE_HELP = "owner, admin or member. Only owners make or unmake owners."

MEMBER_COLUMNS = [
    Column("USER", lambda m: m["user"]["id"], style="cyan"),
    Column("EMAIL", lambda m: m["user"]["email"]),
    Column("NAME", lambda m: m["user"]["name"]),
    field("role"),
    Column("SINCE (UTC)", lambda m: when(m["created_at"])),
]


def _path(workspace_id: str, user_id: str | None = None) -> str:
    path = f"/workspaces/{workspace_id}/members"
    return f"{path}/{user_id}" if user_id else path


def _user_id(cli: Cli, workspace_id: str, user: str) -> str:
    if user.startswith("usr_"):
        return user
    wanted = user.strip().lower()
    for member in cli.api().get(_path(workspace_id)):
        if member["user"]["email"] == wanted:
            return member["user"]["id"]
    raise CliError(
        f"{user} is not a member of {workspace_id}",
        exit_code=EXIT_NOT_FOUND,
        code="not_found",
        hint="See them with `fusebox members list`.",
    )


@command(app, "list")
def members_list(cli: Cli, workspace: str = WORKSPACE) -> None:
    """List a workspace's members and their roles."""
    rows = cli.api().get(_path(cli.workspace_id(workspace)))
    cli.out.result(rows, lambda: cli.out.table(rows, MEMBER_COLUMNS, "No members."))


@command(app, "add")
def members_add(
    cli: Cli,
    email: str = typer.Option(..., "--email", help="The user's email."),
    role: str = typer.Option("member", "--role", help=ROLE_HELP),
    name: str = typer.Option(None, "--name", help="With --password-stdin: the new user's name."),
    password_stdin: bool = typer.Option(
        False,
        "--password-stdin",
        help="Create the account (when no user has this email) with the password on the "
        "first line of stdin; share it with them, and have them change it.",
    ),
    workspace: str = WORKSPACE,
) -> None:
    """Add an existing user to a workspace, or create the account with --password-stdin."""
    body: dict[str, str] = {"email": email, "role": role}
    if password_stdin:
        body["password"] = read_password(True)
    if name:
        body["name"] = name
    added = cli.api().post(_path(cli.workspace_id(workspace)), body)
    cli.out.result(
        added,
        lambda: cli.out.line(
            f"Added {added['user']['email']} ({added['user']['id']}) to "
            f"{added['workspace_id']} as {added['role']}."
        ),
    )


@command(app, "set-role")
def members_set_role(
    cli: Cli,
    user: str = USER,
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    workspace: str = WORKSPACE,
) -> None:
    """Change a member's role (a workspace always keeps one owner)."""
    workspace_id = cli.workspace_id(workspace)
    user_id = _user_id(cli, workspace_id, user)
    changed = cli.api().request("PATCH", _path(workspace_id, user_id), body={"role": role})
    cli.out.result(
        changed,
        lambda: cli.out.line(f"{changed['user']['email']} is now {changed['role']}."),
    )


@command(app, "remove", destructive=True)
def members_remove(cli: Cli, user: str = USER, workspace: str = WORKSPACE) -> None:
    """Remove a member: their sessions stop seeing the workspace, their API tokens for it
    stop working. The last owner cannot be removed."""
    workspace_id = cli.workspace_id(workspace)
    user_id = _user_id(cli, workspace_id, user)
    cli.confirm(
        f"Remove {user} from {workspace_id}? Their API tokens for it stop working",
        action=f"remove {user}",
    )
    cli.api().delete(_path(workspace_id, user_id))
    cli.out.result(
        {"workspace_id": workspace_id, "user_id": user_id, "removed": True},
        lambda: cli.out.line(f"Removed {user} from {workspace_id}."),
    )
