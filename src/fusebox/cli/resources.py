"""`fusebox workspaces`, `fusebox projects` and `fusebox environments`."""

from __future__ import annotations

import typer
from rich.text import Text

from fusebox.cli.command import Cli, command
from fusebox.cli.output import Column, field, when
from fusebox.cli.services import (
    SERVICE_COLUMNS,
    TIMEOUT,
    failure,
    wait_until_settled,
)

workspaces = typer.Typer(
    help="Workspaces: a team's projects, tokens and members.", no_args_is_help=True
)
projects = typer.Typer(
    help="Projects: one per app, holding its environments.", no_args_is_help=True
)
environments = typer.Typer(
    help="Environments: production, staging, one per pull request.", no_args_is_help=True
)

CREATED = Column("CREATED (UTC)", lambda row: when(row["created_at"]))
WORKSPACE_OPTION = typer.Option(
    None, "--workspace", help="Workspace ID or name (env FUSEBOX_WORKSPACE_ID)."
)


@command(workspaces, "list")
def workspaces_list(cli: Cli) -> None:
    """List the workspaces you can see."""
    rows = cli.api().get("/workspaces")
    columns = [field("id", style="cyan"), field("name"), CREATED]
    cli.out.result(rows, lambda: cli.out.table(rows, columns, "No workspaces."))


@command(workspaces, "create")
def workspaces_create(
    cli: Cli, name: str = typer.Option(..., "--name", help="The workspace's name.")
) -> None:
    """Create a workspace, owned by you (needs a signed-in session, not an API token)."""
    created = cli.api().post("/workspaces", {"name": name})
    cli.out.result(
        created, lambda: cli.out.line(f"Created workspace {created['name']} ({created['id']}).")
    )


@command(projects, "list")
def projects_list(cli: Cli, workspace: str = WORKSPACE_OPTION) -> None:
    """List projects (of every workspace you can see, or of one)."""
    value = workspace or cli.settings.workspace_id
    workspace_id = cli.resolve_workspace(value) if value else None
    rows = cli.api().get("/projects", workspace_id=workspace_id)
    columns = [
        field("id", style="cyan"),
        field("name"),
        field("workspace_id", "WORKSPACE"),
        CREATED,
    ]
    cli.out.result(rows, lambda: cli.out.table(rows, columns, "No projects."))


@command(projects, "create")
def projects_create(
    cli: Cli,
    name: str = typer.Option(..., "--name", help="The project's name."),
    workspace: str = WORKSPACE_OPTION,
) -> None:
    """Create a project (in --workspace, or your only workspace, or the token's)."""
    body = {"workspace_id": cli.workspace_id(workspace), "name": name}
    created = cli.api().post("/projects", body)
    cli.out.result(
        created,
        lambda: cli.out.line(
            f"Created project {created['name']} ({created['id']}) in {created['workspace_id']}."
        ),
    )


PROJECT_HELP = "The project's ID (proj_…) or name."


@command(environments, "list")
def environments_list(
    cli: Cli, project: str = typer.Option(None, "--project", help=PROJECT_HELP)
) -> None:
    """List environments (of every project you can see, or of one)."""
    project_id = cli.resolve_project(project) if project else None
    rows = cli.api().get("/environments", project_id=project_id)
    columns = [field("id", style="cyan"), field("name"), field("project_id", "PROJECT"), CREATED]
    cli.out.result(rows, lambda: cli.out.table(rows, columns, "No environments."))


@command(environments, "create")
def environments_create(
    cli: Cli,
    project: str = typer.Option(..., "--project", help=PROJECT_HELP),
    name: str = typer.Option(..., "--name", help="Such as staging, or pr-123."),
    clone_from: str = typer.Option(
        None,
        "--clone-from",
        help="An environment (ID or name) of the same project whose services to recreate "
        "here, each with a new secret.",
    ),
    wait: bool = typer.Option(
        False, "--wait", help="With --clone-from: wait until the new services are active."
    ),
    timeout: int = TIMEOUT,
) -> None:
    """Create an environment, optionally with copies of another one's services.

    For CI: ENV_ID=$(fusebox environments create --project P --name pr-$N
    --clone-from staging --json | jq -r .id)
    """
    body = {"project_id": cli.resolve_project(project), "name": name}
    if clone_from:
        body["clone_from"] = clone_from
    created = cli.api().post("/environments", body)
    services = []
    if clone_from and (wait or not cli.out.json):
        services = cli.api().get("/services", environment_id=created["id"])
        if wait:
            services = wait_until_settled(cli, services, timeout)

    def human() -> None:
        cli.out.line(
            f"Created environment {created['name']} ({created['id']}) in {created['project_id']}."
        )
        if clone_from:
            cli.out.line(f"Services recreated from {clone_from}:")
            cli.out.table(services, SERVICE_COLUMNS, "(it had no services)")
            if services:
                cli.out.note(
                    "Each has a new secret: read it with `fusebox services get-secret <id>`."
                )

    cli.out.result(created, human)
    failed = [s for s in services if s["state"] == "error"]
    if failed:
        raise failure(failed[0])


@command(environments, "delete", destructive=True)
def environments_delete(
    cli: Cli,
    environment_id: str = typer.Argument(..., metavar="ID", help="The environment's ID (env_…)."),
) -> None:
    """Delete an environment and every service in it."""

    def question() -> str:
        found = [e for e in cli.api().get("/environments") if e["id"] == environment_id]
        services = cli.api().get("/services", environment_id=environment_id) if found else []
        label = f"{found[0]['name']} ({environment_id})" if found else environment_id
        return f"Delete environment {label} and its {len(services)} service(s)?"

    cli.confirm(question, action=f"delete {environment_id}")
    cli.api().delete(f"/environments/{environment_id}")
    cli.out.result(
        {"id": environment_id, "deleted": True},
        lambda: cli.out.line(Text(f"Deleted environment {environment_id} and its services.")),
    )
