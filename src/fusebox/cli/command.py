"""What every admin command shares: `--api-url`, `--token`, `--json` (and `--force` on the
destructive ones), the `Cli` handle its body receives, and one place that turns failures
into a message and an exit code.

A command is written as `def name(cli: Cli, <its own options>)` and registered with
`@command(group)`; the shared options are added to its signature, so `--help` shows them
and each command's body holds only what it does.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import typer

from fusebox.cli.client import (
    EXIT_AUTH,
    EXIT_NOT_FOUND,
    ApiClient,
    CliError,
    Settings,
    resolve_settings,
    usage_error,
)
from fusebox.cli.output import Output

GLOBAL_PANEL = "Connection and output"


class Cli:
    """Settings, output and the API client of one command run."""

    def __init__(
        self, api_url: str | None, token: str | None, json_mode: bool, force: bool = False
    ) -> None:
        self.out = Output(json_mode)
        self.force = force
        self._flags = (api_url, token)
        self._settings: Settings | None = None
        self._api: ApiClient | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = resolve_settings(*self._flags, os.environ)
        return self._settings

    def api(self) -> ApiClient:
        """The client with the credential in force; an auth error (3) when there is none."""
        if self._api is None:
            settings = self.settings
            if settings.token is None:
                stored = settings.stored
                if stored is not None:
                    hint = (
                        f"Your stored login is for {stored.api_url}. Sign in to this one with "
                        f"`fusebox auth login --api-url {settings.api_url}`, or set "
                        "FUSEBOX_API_TOKEN."
                    )
                else:
                    hint = (
                        "Sign in with `fusebox auth login`, or set FUSEBOX_API_TOKEN "
                        "(or pass --token) to an API token."
                    )
                    if settings.store.problem:
                        hint = f"The stored login {settings.store.problem}. {hint}"
                raise CliError(
                    f"not signed in to {settings.api_url}",
                    exit_code=EXIT_AUTH,
                    code="unauthorized",
                    hint=hint,
                )
            self._api = ApiClient(
                settings.api_url, settings.token, token_source=settings.token_source
            )
        return self._api

    def anonymous_api(self) -> ApiClient:
        return ApiClient(self.settings.api_url)

    def confirm(self, question: str | Callable[[], str], action: str) -> None:
        """Ask before `action` unless --force; the question may look things up, so a
        callable is only called when there is someone to ask."""
        self.out.confirm(question, force=self.force, action=action)

    # -- lookups shared by several groups --------------------------------------------------

    def workspace_id(self, given: str | None) -> str:
        """--workspace (an ID or name), else FUSEBOX_WORKSPACE_ID, else the API token's
        workspace, else the only workspace the caller can see."""
        value = given or self.settings.workspace_id
        if value:
            return self.resolve_workspace(value)
        whoami = self.api().get("/auth/whoami")
        if whoami.get("token"):
            return whoami["token"]["workspace_id"]
        workspaces = whoami.get("workspaces", [])
        if len(workspaces) == 1:
            return workspaces[0]["id"]
        if not workspaces:
            raise CliError(
                "you have no workspace",
                hint="Create one with `fusebox workspaces create --name NAME`.",
            )
        names = ", ".join(f"{w['name']} ({w['id']})" for w in workspaces)
        raise usage_error(
            f"you can see {len(workspaces)} workspaces: {names}",
            hint="Choose one with --workspace or FUSEBOX_WORKSPACE_ID.",
        )

    def resolve_workspace(self, value: str) -> str:
        if value.startswith("ws_"):
            return value
        return _by_name(self.api().get("/workspaces"), value, "workspace", "workspaces list")

    def resolve_project(self, value: str, workspace: str | None = None) -> str:
        if value.startswith("proj_"):
            return value
        workspace_id = self.resolve_workspace(workspace) if workspace else None
        projects = self.api().get("/projects", workspace_id=workspace_id)
        return _by_name(projects, value, "project", "projects list")

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _by_name(rows: list[dict[str, Any]], name: str, kind: str, listing: str) -> str:
    found = [row for row in rows if row["name"] == name]
    if len(found) == 1:
        return found[0]["id"]
    if not found:
        raise CliError(
            f"no {kind} named {name!r}",
            exit_code=EXIT_NOT_FOUND,
            code="not_found",
            hint=f"See them with `fusebox {listing}`.",
        )
    ids = ", ".join(row["id"] for row in found)
    raise usage_error(f"several {kind}s are named {name!r}: {ids}", hint="Give the ID instead.")


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


_SHARED = [
    _keyword(
        "api_url",
        str | None,
        typer.Option(
            None,
            "--api-url",
            help="Base URL of the Fusebox server (env FUSEBOX_API_URL; default: the stored "
            "login's, else http://127.0.0.1:8080).",
            rich_help_panel=GLOBAL_PANEL,
            show_default=False,
        ),
    ),
    _keyword(
        "token",
        str | None,
        typer.Option(
            None,
            "--token",
            help="API token or session token (env FUSEBOX_API_TOKEN; default: the stored login).",
            rich_help_panel=GLOBAL_PANEL,
            show_default=False,
        ),
    ),
    _keyword(
        "json_output",
        bool,
        typer.Option(
            False,
            "--json",
            help="Print the result as JSON on stdout, and nothing else.",
            rich_help_panel=GLOBAL_PANEL,
        ),
    ),
]
_FORCE = _keyword(
    "force",
    bool,
    typer.Option(
        False,
        "--force",
        help="Do it without asking (required with --json or without a terminal).",
    ),
)


def _root_flags(context: typer.Context) -> tuple[str | None, str | None]:
    """`fusebox --api-url … --token … <command>`: given before the command."""
    obj = context.find_root().obj
    if isinstance(obj, dict):
        return obj.get("api_url"), obj.get("token")
    return None, None


def command(
    group: typer.Typer, name: str | None = None, *, destructive: bool = False, **settings: Any
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(cli, **options)` as a command of `group`, with the shared options."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "cli"]
        shared = [*_SHARED, _FORCE] if destructive else _SHARED
        context = _keyword("typer_context", typer.Context, inspect.Parameter.empty)

        @functools.wraps(fn)
        def run(**options: Any) -> None:
            root_api_url, root_token = _root_flags(options.pop("typer_context"))
            cli = Cli(
                options.pop("api_url") or root_api_url,
                options.pop("token") or root_token,
                options.pop("json_output"),
                options.pop("force", False),
            )
            try:
                fn(cli, **options)
            except CliError as error:
                cli.out.error(error)
                raise typer.Exit(error.exit_code) from None
            finally:
                cli.close()

        run.__signature__ = signature.replace(parameters=[*own, *shared, context])  # type: ignore[attr-defined]
        run.__annotations__ = {}  # the signature above carries the evaluated annotations
        group.command(name, **settings)(run)
        return fn

    return register
