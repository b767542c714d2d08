"""The admin CLI against a real `fusebox serve`: every command through `--json`, exit codes,
the stored login, and the services it makes doing real work on the data plane.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from fusebox.cli import output
from fusebox.cli.main import app

pytestmark = pytest.mark.timeout(300)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Fusebox:
    """The `fusebox` command, run in-process with its own config directory."""

    api_url: str
    config_home: Path
    env: dict[str, str | None] = field(default_factory=dict)

    def run(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        environ = {
            "XDG_CONFIG_HOME": str(self.config_home),
            "FUSEBOX_API_URL": self.api_url,
            "FUSEBOX_API_TOKEN": None,
            "FUSEBOX_WORKSPACE_ID": None,
            **self.env,
            **env,
        }
        return CliRunner().invoke(app, list(args), input=input, env=environ)

    def json(self, *args: str, input: str | None = None, **env: str | None) -> Any:
        """Run with --json; it must succeed and print exactly one JSON document."""
        result = self.run(*args, "--json", input=input, **env)
        assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def fails(self, exit_code: int, *args: str, input: str | None = None, **env: str | None):
        result = self.run(*args, input=input, **env)
        assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
        return result

    @property
    def auth_file(self) -> Path:
        return self.config_home / "fusebox" / "auth.json"

    def login(self, platform: Any) -> Any:
        return self.json(
            "auth", "login", "--email", platform.owner_email, "--password-stdin",
            input=platform.owner_password + "\n",
        )  # fmt: skip


@pytest.fixture(scope="module")
def owner(fusebox_platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Fusebox:
    """The owner, signed in (a stored session)."""
    cli = Fusebox(fusebox_platform.url, tmp_path_factory.mktemp("owner-config"))
    cli.login(fusebox_platform)
    return cli


@pytest.fixture(scope="module")
def workspace_id(owner: Fusebox) -> str:
    """The owner's first workspace (passed explicitly: tests may add workspaces)."""
    return owner.json("auth", "whoami")["workspaces"][0]["id"]


@pytest.fixture
def stranger(fusebox_platform: Any, tmp_path: Path) -> Fusebox:
    """Nobody signed in."""
    return Fusebox(fusebox_platform.url, tmp_path / "config")


@dataclass
class Place:
    project: dict[str, Any]
    environment: dict[str, Any]


@pytest.fixture
def place(owner: Fusebox, workspace_id: str) -> Place:
    """A new project with a `staging` environment."""
    project = owner.json("projects", "create", "--name", unique("app"), "--workspace", workspace_id)
    environment = owner.json(
        "environments", "create", "--project", project["id"], "--name", "staging"
    )
    return Place(project, environment)


def make_token(owner: Fusebox, workspace_id: str, *scopes: str) -> dict[str, Any]:
    return owner.json(
        "auth", "token", "create", "--name", unique("tok"), "--scopes", ",".join(scopes),
        "--workspace", workspace_id,
    )  # fmt: skip


# -- signing in ----------------------------------------------------------------------------


def test_login_stores_a_private_session_and_whoami_reads_it(
    fusebox_platform: Any, stranger: Fusebox
) -> None:
    answer = stranger.login(fusebox_platform)
    assert answer["user"]["email"] == fusebox_platform.owner_email
    assert answer["api_url"] == fusebox_platform.url

    assert stranger.auth_file.exists()
    assert stat.S_IMODE(stranger.auth_file.stat().st_mode) == 0o600
    stored = json.loads(stranger.auth_file.read_text())
    assert stored["api_url"] == fusebox_platform.url
    assert "token" not in answer  # the session is stored, never printed

    me = stranger.json("auth", "whoami")
    assert me["user"]["email"] == fusebox_platform.owner_email
    assert me["token"] is None  # a session, not an API token
    assert me["workspaces"]

    human = stranger.run("auth", "whoami")
    assert human.exit_code == 0
    assert fusebox_platform.owner_email in human.stdout
    assert stored["token"] not in human.stdout + human.stderr


def test_stored_login_needs_no_api_url(fusebox_platform: Any, stranger: Fusebox) -> None:
    stranger.login(fusebox_platform)
    me = stranger.json("auth", "whoami", FUSEBOX_API_URL=None)
    assert me["api_url"] == fusebox_platform.url


def test_login_without_a_terminal_needs_password_stdin(
    fusebox_platform: Any, stranger: Fusebox
) -> None:
    result = stranger.fails(2, "auth", "login", "--email", fusebox_platform.owner_email)
    assert "--password-stdin" in result.stderr
    assert not stranger.auth_file.exists()


def test_wrong_password_is_an_auth_error(fusebox_platform: Any, stranger: Fusebox) -> None:
    result = stranger.fails(
        3, "auth", "login", "--email", fusebox_platform.owner_email, "--password-stdin", "--json",
        input="not-the-password\n",
    )  # fmt: skip
    assert result.stdout == ""
    assert json.loads(result.stderr)["error"]["code"] == "unauthorized"
    assert not stranger.auth_file.exists()


def test_not_signed_in_says_how_to_sign_in(stranger: Fusebox) -> None:
    result = stranger.fails(3, "projects", "list")
    assert "fusebox auth login" in result.stderr
    assert result.stdout == ""


def test_an_unreadable_stored_login_is_replaced_by_login(
    fusebox_platform: Any, stranger: Fusebox
) -> None:
    stranger.auth_file.parent.mkdir(parents=True)
    stranger.auth_file.write_text("{not json")
    result = stranger.fails(3, "projects", "list")
    assert "could not be read" in result.stderr and "fusebox auth login" in result.stderr
    stranger.login(fusebox_platform)
    assert stranger.json("auth", "whoami")["user"]["email"] == fusebox_platform.owner_email


def test_logout_ends_the_session_on_the_server(fusebox_platform: Any, stranger: Fusebox) -> None:
    stranger.login(fusebox_platform)
    session = json.loads(stranger.auth_file.read_text())["token"]
    assert stranger.json("auth", "logout")["server_session_ended"] is True
    assert not stranger.auth_file.exists()
    stranger.fails(3, "auth", "whoami")
    # The session itself is dead, not just forgotten here.
    stranger.fails(3, "auth", "whoami", "--token", session)
    assert stranger.json("auth", "logout") == {"logged_out": False, "reason": "not signed in"}


def test_a_stored_session_is_only_sent_to_its_own_server(
    owner: Fusebox, fusebox_platform: Any
) -> None:
    from conftest import free_port

    elsewhere = f"http://127.0.0.1:{free_port()}"
    result = owner.fails(3, "auth", "whoami", "--api-url", elsewhere)
    assert f"not signed in to {elsewhere}" in result.stderr
    assert fusebox_platform.url in result.stderr  # says where the stored login is for


def test_unreachable_server_is_a_clear_error(stranger: Fusebox) -> None:
    from conftest import free_port

    result = stranger.fails(
        1, "auth", "whoami", "--api-url", f"http://127.0.0.1:{free_port()}", "--token", "x"
    )
    assert "cannot reach" in result.stderr
    assert "FUSEBOX_API_URL" in result.stderr


def test_bad_api_url_is_a_usage_error(stranger: Fusebox) -> None:
    result = stranger.fails(2, "auth", "whoami", "--api-url", "localhost:8080")
    assert "not an API URL" in result.stderr


# -- API tokens ----------------------------------------------------------------------------


def test_token_create_list_revoke(owner: Fusebox, workspace_id: str) -> None:
    created = make_token(owner, workspace_id, "projects:read", "v2:environments:read")
    secret = created["token"]
    assert secret.startswith("fbx_")
    assert set(created["scopes"]) == {"projects:read", "environments:read"}

    listing = owner.run("auth", "token", "list", "--json")
    assert listing.exit_code == 0
    assert created["id"] in [t["id"] for t in json.loads(listing.stdout)]
    assert secret not in listing.stdout  # never shown again
    in_workspace = owner.json("token", "list", "--workspace", workspace_id)  # the alias group
    assert created["id"] in [t["id"] for t in in_workspace]

    me = owner.json("auth", "whoami", "--token", secret)
    assert me["token"]["id"] == created["id"]
    assert set(me["token"]["scopes"]) == {"projects:read", "environments:read"}

    # No terminal and no --force: refused, and the token still works.
    refused = owner.fails(2, "auth", "token", "revoke", created["id"])
    assert "--force" in refused.stderr
    owner.json("projects", "list", "--token", secret)

    assert owner.json("token", "revoke", created["id"], "--force") == {
        "id": created["id"],
        "revoked": True,
    }
    gone = owner.fails(3, "projects", "list", "--token", secret)
    assert "revoked or mistyped" in gone.stderr
    assert created["id"] not in [t["id"] for t in owner.json("token", "list")]
    owner.fails(4, "token", "revoke", created["id"], "--force")


def test_missing_scope_is_exit_3_with_the_api_message(owner: Fusebox, workspace_id: str) -> None:
    token = make_token(owner, workspace_id, "projects:read")["token"]
    result = owner.fails(3, "projects", "create", "--name", "x", "--token", token, "--json")
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "forbidden"
    assert "projects:write" in error["message"]


def test_unknown_scope_is_a_validation_error(owner: Fusebox, workspace_id: str) -> None:
    result = owner.fails(
        1, "token", "create", "--name", "x", "--scopes", "projects:fly", "--workspace", workspace_id
    )
    assert "scopes" in result.stderr


def test_credential_precedence_flag_then_env_then_stored(owner: Fusebox, workspace_id: str) -> None:
    token = make_token(owner, workspace_id, "projects:read")
    # Stored login alone: the session.
    assert owner.json("auth", "whoami")["token"] is None
    # The environment beats the stored login (here, a bad token: refused).
    owner.fails(3, "auth", "whoami", FUSEBOX_API_TOKEN="fbx_not_a_real_token")
    # The flag beats the environment.
    me = owner.json("auth", "whoami", "--token", token["token"], FUSEBOX_API_TOKEN="fbx_bad")
    assert me["token"]["id"] == token["id"]
    # ... also when given before the command.
    result = owner.run("--token", token["token"], "auth", "whoami", "--json")
    assert json.loads(result.stdout)["token"]["id"] == token["id"]


def test_api_token_defaults_to_its_workspace(owner: Fusebox, workspace_id: str) -> None:
    token = make_token(owner, workspace_id, "projects:write")["token"]
    project = owner.json("projects", "create", "--name", unique("p"), FUSEBOX_API_TOKEN=token)
    assert project["workspace_id"] == workspace_id


# -- workspaces, projects, environments ----------------------------------------------------


def test_workspaces_and_projects(owner: Fusebox, workspace_id: str) -> None:
    name = unique("team")
    created = owner.json("workspaces", "create", "--name", name)
    assert created["id"].startswith("ws_")
    assert created["id"] in [w["id"] for w in owner.json("workspaces", "list")]

    # With two workspaces there is no obvious default: say so and say what to do.
    ambiguous = owner.fails(2, "projects", "create", "--name", "p")
    assert "--workspace" in ambiguous.stderr

    project = owner.json("projects", "create", "--name", "web", "--workspace", name)  # by name
    assert project["workspace_id"] == created["id"]
    listed = owner.json("projects", "list", "--workspace", created["id"])
    assert [p["id"] for p in listed] == [project["id"]]
    assert project["id"] in [
        p["id"] for p in owner.json("projects", "list", FUSEBOX_WORKSPACE_ID=created["id"])
    ]
    assert project["id"] not in [
        p["id"] for p in owner.json("projects", "list", "--workspace", workspace_id)
    ]

    human = owner.run("projects", "list", "--workspace", created["id"])
    assert human.exit_code == 0
    assert project["id"] in human.stdout and "web" in human.stdout

    owner.fails(4, "projects", "list", "--workspace", unique("no-such-team"))


def test_environments_create_list_delete(owner: Fusebox, place: Place) -> None:
    project_id = place.project["id"]
    made = owner.json("environments", "create", "--project", project_id, "--name", "production")
    assert made["project_id"] == project_id
    names = {e["name"] for e in owner.json("environments", "list", "--project", project_id)}
    assert names == {"staging", "production"}
    # The project can be named instead of its ID.
    by_name = owner.json("environments", "list", "--project", place.project["name"])
    assert {e["id"] for e in by_name} == {place.environment["id"], made["id"]}

    duplicate = owner.fails(
        1, "environments", "create", "--project", project_id, "--name", "production"
    )
    assert "already has an environment named" in duplicate.stderr

    assert owner.json("environments", "delete", made["id"], "--force") == {
        "id": made["id"],
        "deleted": True,
    }
    remaining = owner.json("environments", "list", "--project", project_id)
    assert [e["id"] for e in remaining] == [place.environment["id"]]
    owner.fails(4, "environments", "delete", made["id"], "--force")


def test_destructive_commands_need_force_without_a_terminal(owner: Fusebox, place: Place) -> None:
    environment_id = place.environment["id"]
    for extra in ([], ["--json"]):
        result = owner.fails(2, "environments", "delete", environment_id, *extra)
        assert "--force" in result.stderr
        assert result.stdout == ""
    service = owner.json(
        "services", "create", "streams", "--environment", environment_id, "--region", "local"
    )
    owner.fails(2, "services", "delete", service["id"])
    owner.fails(2, "services", "rotate-secret", service["id"])
    # Nothing was touched.
    assert owner.json("services", "get", service["id"])["state"] in ("provisioning", "active")
    assert owner.json("services", "get-secret", service["id"])["secret"] == service["secret"]
    listed = owner.json("environments", "list", "--project", place.project["id"])
    assert environment_id in [e["id"] for e in listed]


def test_a_person_at_a_terminal_is_asked(
    owner: Fusebox, place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    environment_id = place.environment["id"]

    declined = owner.fails(1, "environments", "delete", environment_id, input="n\n")
    assert "staging" in declined.stderr  # the question names what would go
    listed = owner.json("environments", "list", "--project", place.project["id"])
    assert environment_id in [e["id"] for e in listed]

    accepted = owner.run("environments", "delete", environment_id, input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert owner.json("environments", "list", "--project", place.project["id"]) == []


# -- services ------------------------------------------------------------------------------


def test_streams_service_end_to_end(owner: Fusebox, place: Place) -> None:
    environment_id = place.environment["id"]
    service = owner.json(
        "services", "create", "streams", "--environment", environment_id, "--region", "local",
        "--name", "events", "--wait",
    )  # fmt: skip
    assert service["state"] == "active"
    assert service["name"] == "events"
    url, secret = service["url"], service["secret"]
    assert url.endswith(f"/v1/stream/{service['id']}")

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    with httpx.Client(timeout=30) as http:
        text = {"content-type": "text/plain"}
        assert http.put(f"{url}/log", headers={**bearer(secret), **text}).status_code == 201
        append = http.post(f"{url}/log", content=b"hello", headers={**bearer(secret), **text})
        assert append.status_code in (200, 204)
        read = http.get(f"{url}/log", params={"offset": "-1"}, headers=bearer(secret))
        assert read.status_code == 200 and read.content == b"hello"

        # Secrets: shown by get-secret (plain, for pipes), never by get or list.
        assert owner.json("services", "get-secret", service["id"])["secret"] == secret
        plain = owner.run("services", "get-secret", service["id"])
        assert plain.stdout == secret + "\n"
        shown = owner.run("services", "get", service["id"], "--json")
        assert secret not in shown.stdout and "secret" not in json.loads(shown.stdout)
        listing = owner.run("services", "list", "--environment", environment_id)
        assert service["id"] in listing.stdout and secret not in listing.stdout

        rotated = owner.json("services", "rotate-secret", service["id"], "--force")
        assert rotated["id"] == service["id"] and rotated["secret"] != secret
        assert rotated["previous_valid_until"]
        # During the overlap both secrets work; anything else does not.
        for token in (secret, rotated["secret"]):
            again = http.get(f"{url}/log", params={"offset": "-1"}, headers=bearer(token))
            assert again.status_code == 200 and again.content == b"hello"
        wrong = http.get(f"{url}/log", params={"offset": "-1"}, headers=bearer("fbss_wrong"))
        assert wrong.status_code == 401
        assert owner.json("services", "get-secret", service["id"])["secret"] == rotated["secret"]

        # An overlap of 0 retires the previous secret at once.
        third = owner.json(
            "services", "rotate-secret", service["id"], "--force", "--overlap-seconds", "0"
        )
        old = http.get(f"{url}/log", params={"offset": "-1"}, headers=bearer(rotated["secret"]))
        assert old.status_code == 401
        new = http.get(f"{url}/log", params={"offset": "-1"}, headers=bearer(third["secret"]))
        assert new.status_code == 200

    kinds = [e["kind"] for e in owner.json("services", "events", service["id"])]
    assert "ready" in kinds and "secret_rotated" in kinds
    assert kinds.index("initializing") < kinds.index("ready")
    human_events = owner.run("services", "events", service["id"])
    assert "secret_rotated" in human_events.stdout

    # Client tokens are for Sync sources only: the API's message, exit 1.
    refused = owner.fails(1, "services", "client-token", service["id"], "--table", "items")
    assert "postgres" in refused.stderr

    assert owner.json("services", "delete", service["id"], "--force")["deleted"] is True
    owner.fails(4, "services", "get", service["id"])
    owner.fails(4, "services", "get-secret", service["id"])


def test_unknown_service_is_exit_4(owner: Fusebox) -> None:
    result = owner.fails(4, "services", "get", "svc_aaaaaaaaaaaaaaaaaaaa", "--json")
    assert result.stdout == ""
    error = json.loads(result.stderr)
    assert error["error"]["code"] == "not_found" and error["exit_code"] == 4


def test_bad_client_token_options_are_usage_errors(owner: Fusebox) -> None:
    result = owner.fails(2, "services", "client-token", "svc_x", "--table", "t", "--param", "x")
    assert "N=VALUE" in result.stderr
    owner.fails(2, "services", "client-token", "svc_x", "--table", "t", "--ttl", "soon")
    owner.fails(2, "services", "create", "streams", "--environment", "env_x")  # no --region


def test_per_pull_request_environment_as_ci_runs_it(
    owner: Fusebox, place: Place, workspace_id: str, fusebox_platform: Any
) -> None:
    staging = owner.json(
        "services", "create", "streams", "--environment", place.environment["id"],
        "--region", "local", "--wait",
    )  # fmt: skip
    ci_token = make_token(
        owner, workspace_id, "environments:write", "services:write", "services:secrets"
    )["token"]
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FUSEBOX_")},
        "FUSEBOX_API_URL": fusebox_platform.url,
        "FUSEBOX_API_TOKEN": ci_token,
        "XDG_CONFIG_HOME": str(owner.config_home.parent / "ci-config"),  # no stored login
    }

    def fusebox(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fusebox", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # ENV_ID=$(fusebox environments create ... --clone-from staging --json | jq -r .id)
    created = fusebox(
        "environments", "create", "--project", place.project["id"], "--name", "pr-123",
        "--clone-from", "staging", "--wait", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""  # scripts get JSON on stdout and nothing else
    environment = json.loads(created.stdout)
    env_id = environment["id"]
    assert env_id.startswith("env_") and environment["name"] == "pr-123"

    listed = fusebox("services", "list", "--environment", env_id, "--json")
    [preview] = json.loads(listed.stdout)
    assert preview["type"] == "streams" and preview["id"] != staging["id"]
    assert preview["state"] == "active"
    secret = json.loads(fusebox("services", "get-secret", preview["id"], "--json").stdout)["secret"]
    assert secret != staging["secret"]
    with httpx.Client(timeout=30) as http:
        headers = {"Authorization": f"Bearer {secret}", "content-type": "text/plain"}
        assert http.put(f"{preview['url']}/pr", headers=headers).status_code == 201

    # When the pull request closes.
    refused = fusebox("environments", "delete", env_id, "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    deleted = fusebox("environments", "delete", env_id, "--force", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"id": env_id, "deleted": True}
    assert fusebox("services", "get", preview["id"], "--json").returncode == 4
    # Staging is untouched.
    assert owner.json("services", "get", staging["id"])["state"] == "active"


# -- Sync sources on a real Postgres -------------------------------------------------------


@pytest.fixture
def source_database(postgres: Any) -> Iterator[tuple[str, str]]:
    """(database, url as the superuser) with a table `items` holding one row."""
    name = f"cli_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql("CREATE TABLE items (id int PRIMARY KEY, title text)", name)
    postgres.psql("INSERT INTO items VALUES (1, 'first')", name)
    try:
        yield name, postgres.url(name)
    finally:
        postgres.psql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND NOT active"
        )
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def shape(url: str, params: Mapping[str, str]) -> httpx.Response:
    """One shape request, retried on 503 as Electric's clients do: the platform can call a
    source `active` a moment before its stack answers (a platform issue, not the CLI's)."""
    for _ in range(100):
        response = httpx.get(url, params={"table": "items", "offset": "-1", **params}, timeout=30)
        if response.status_code != 503:
            return response
        time.sleep(0.1)
    return response


def test_postgres_source_becomes_active_with_wait(
    owner: Fusebox, place: Place, source_database: tuple[str, str]
) -> None:
    _, database_url = source_database
    source = owner.json(
        "services", "create", "postgres", "--environment", place.environment["id"],
        "--database-url", "-", "--region", "local", "--wait",
        input=database_url + "\n",  # from stdin: the password stays out of `ps`
    )  # fmt: skip
    try:
        assert source["state"] == "active" and source["error"] is None
        assert source["url"].endswith("/v1/shape")
        rows = shape(source["url"], {"source_id": source["id"], "secret": source["secret"]})
        assert rows.status_code == 200
        assert any(m.get("value", {}).get("title") == "first" for m in rows.json())

        events = [e["kind"] for e in owner.json("services", "events", source["id"])]
        assert "checks_passed" in events and "ready" in events

        # A client token opens that one shape, without the secret.
        minted = owner.json(
            "services", "client-token", source["id"], "--table", "items", "--ttl", "10m"
        )
        token = minted["token"]
        allowed = shape(source["url"], {"source_id": source["id"], "token": token})
        assert allowed.status_code == 200
        other = shape(source["url"], {"source_id": source["id"], "token": token, "where": "id = 2"})
        assert other.status_code == 403

        pinned = owner.json(
            "services", "client-token", source["id"], "--table", "items",
            "--where", "id = $1", "--param", "1=1", "--columns", "id,title",
        )  # fmt: skip
        ok = shape(
            source["url"],
            {
                "source_id": source["id"], "token": pinned["token"], "where": "id = $1",
                "params[1]": "1", "columns": "id,title",
            },
        )  # fmt: skip
        assert ok.status_code == 200
    finally:
        owner.json("services", "delete", source["id"], "--force")


def test_postgres_source_without_replication_names_the_failed_check(
    owner: Fusebox, place: Place, source_database: tuple[str, str], postgres: Any
) -> None:
    database, _ = source_database
    role = f"cli_norepl_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE ROLE {role} LOGIN NOREPLICATION")
    try:
        result = owner.fails(
            1, "services", "create", "postgres", "--environment", place.environment["id"],
            "--database-url", postgres.url(database, user=role), "--region", "local",
            "--wait", "--json",
        )  # fmt: skip
        service = json.loads(result.stdout)  # still printed: scripts need the ID to clean up
        assert service["state"] == "error"
        assert service["error"]["check"] == "replication_permission"
        error = json.loads(result.stderr)["error"]
        assert error["code"] == "replication_permission"
        assert "REPLICATION" in error["message"] and error["hint"]

        shown = owner.run("services", "get", service["id"])
        assert "replication_permission" in shown.stdout and "ALTER ROLE" in shown.stdout
        kinds = [e["kind"] for e in owner.json("services", "events", service["id"])]
        assert "check_failed" in kinds

        # Without --json a person reads which check failed and what to do.
        again = owner.fails(
            1, "services", "create", "postgres", "--environment", place.environment["id"],
            "--database-url", postgres.url(database, user=role), "--region", "local", "--wait",
        )  # fmt: skip
        assert "replication_permission" in again.stderr and "ALTER ROLE" in again.stderr
        for made in owner.json("services", "list", "--environment", place.environment["id"]):
            owner.json("services", "delete", made["id"], "--force")
    finally:
        postgres.psql(f"DROP ROLE IF EXISTS {role}")
