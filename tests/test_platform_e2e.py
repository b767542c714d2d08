"""The whole platform end to end, as a new user meets it.

A fresh `fusebox serve`; everything administrative through the `fusebox` CLI run as a
subprocess with `--json` (sign in, a workspace, a project, an environment, a Sync source on
a real Postgres database that becomes `active`, a Streams service); then the data plane
through the official clients only: `@electric-sql/client` reads a shape by `source_id` and
`secret` (initial rows and a live insert), and the PyPI `durable-streams` client creates,
appends to and reads a stream under the service URL with `Authorization: Bearer <secret>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_streams import DurableStream, DurableStreamError, stream

from conftest import run_node
from platform_helpers import Platform, items_database, running_platform
from postgres import PostgresCluster

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[tuple[str, str]]:
    """(name, url) of a database with a table `items` holding two rows."""
    with items_database(postgres, "e2e") as database:
        yield database


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, database: tuple[str, str]
) -> Iterator[Platform]:
    """A fresh `fusebox serve` (set up after the database, so stopped before it is dropped:
    a database with a replicating slot cannot be dropped)."""
    with running_platform(tmp_path_factory.mktemp("e2e")) as platform:
        yield platform


class Cli:
    """`fusebox` as a separate process, with its own config directory (the stored login)."""

    def __init__(self, api_url: str, config_home: Path) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FUSEBOX_")},
            "FUSEBOX_API_URL": api_url,
            "XDG_CONFIG_HOME": str(config_home),
        }

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fusebox", *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def json(self, *args: str, stdin: str | None = None) -> Any:
        """Run with --json: exit 0 and exactly one JSON document on stdout."""
        done = self.run(*args, "--json", stdin=stdin)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)


def test_cli_made_services_serve_the_official_clients(
    platform: Platform,
    database: tuple[str, str],
    postgres: PostgresCluster,
    tmp_path: Path,
) -> None:
    db_name, database_url = database
    cli = Cli(platform.url, tmp_path / "config")

    # -- the control plane, through the CLI ----------------------------------------------
    signed_in = cli.json(
        "auth", "login", "--email", platform.owner_email, "--password-stdin",
        stdin=platform.owner_password + "\n",
    )  # fmt: skip
    assert signed_in["user"]["email"] == platform.owner_email
    assert cli.json("auth", "whoami")["user"]["email"] == platform.owner_email

    workspace = cli.json("workspaces", "create", "--name", f"e2e-{uuid.uuid4().hex[:6]}")
    assert workspace["id"].startswith("ws_")
    project = cli.json("projects", "create", "--name", "shop", "--workspace", workspace["id"])
    assert project["workspace_id"] == workspace["id"]
    environment = cli.json(
        "environments", "create", "--project", project["id"], "--name", "production"
    )
    assert environment["project_id"] == project["id"]

    source = cli.json(
        "services", "create", "postgres", "--environment", environment["id"],
        "--database-url", "-", "--region", "local", "--name", "shop-db", "--wait",
        stdin=database_url + "\n",  # from stdin, as the docs advise
    )  # fmt: skip
    assert source["state"] == "active" and source["error"] is None, source
    assert source["type"] == "postgres" and source["name"] == "shop-db"
    assert source["url"] == f"{platform.url}/v1/shape"
    assert source["secret"]

    streams = cli.json(
        "services", "create", "streams", "--environment", environment["id"],
        "--region", "local", "--name", "events", "--wait",
    )  # fmt: skip
    assert streams["state"] == "active", streams
    assert streams["url"] == f"{platform.url}/v1/stream/{streams['id']}"

    listed = cli.json("services", "list", "--environment", environment["id"])
    assert {s["id"]: s["state"] for s in listed} == {
        source["id"]: "active",
        streams["id"]: "active",
    }
    assert "secret" not in json.dumps(listed)
    # The secret the CLI printed at creation is the one in force.
    assert cli.json("services", "get-secret", source["id"])["secret"] == source["secret"]
    kinds = [e["kind"] for e in cli.json("services", "events", source["id"])]
    assert "checks_passed" in kinds and "ready" in kinds

    # -- Sync: the official Electric client, by source_id and secret -------------------------
    done = run_node(
        "platform_e2e.mjs",
        {
            "ELECTRIC_URL": source["url"],
            "SOURCE_ID": source["id"],
            "SOURCE_SECRET": source["secret"],
            "DATABASE_URL": database_url,
            "TABLE": "items",
        },
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["initial"] == [{"id": 1, "title": "first"}, {"id": 2, "title": "second"}]
    assert result["live"] == [
        {"id": 1, "title": "first"},
        {"id": 2, "title": "second"},
        {"id": 3, "title": "inserted live"},
    ]
    assert result["livePolls"] >= 1  # the insert came over a live request
    assert result["sourceIds"] == [source["id"]]
    assert result["refused"]["status"] == 401, result["refused"]
    assert postgres.psql("SELECT count(*) FROM items", db_name) == "3"

    # -- Streams: the Python durable-streams client, Bearer <secret> -------------------------
    auth = {"Authorization": f"Bearer {streams['secret']}"}
    url = f"{streams['url']}/orders-{uuid.uuid4().hex[:8]}"
    with DurableStream.create(
        url, content_type="text/plain", headers=auth, batching=False
    ) as handle:
        first = handle.append("order 1;").next_offset
        handle.append("order 2;")
        with handle.stream(live=False) as res:
            assert res.read_text() == "order 1;order 2;"
            assert res.up_to_date
        with handle.stream(offset=first, live=False) as res:
            assert res.read_text() == "order 2;"

        # A live read parked at the tail is woken by an append (in either order).
        tail = handle.head().offset
        got: list[str] = []

        def read_live() -> None:
            with stream(url, offset=tail, live="long-poll", headers=auth, timeout=120) as res:
                for event in res.iter_events(mode="text"):
                    if event.data:
                        got.append(event.data)
                        return

        reader = threading.Thread(target=read_live, daemon=True)
        reader.start()
        handle.append("order 3;")
        reader.join(timeout=120)
        assert got == ["order 3;"]

    # JSON streams through the same client.
    json_url = f"{streams['url']}/json-{uuid.uuid4().hex[:8]}"
    with DurableStream.create(
        json_url, content_type="application/json", headers=auth, batching=False
    ) as handle:
        handle.append({"sku": "a", "qty": 1})
        handle.append({"sku": "b", "qty": 2})
        with handle.stream(live=False) as res:
            assert res.read_json() == [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]

    # Without the secret, or with another one, the client is refused.
    for headers in ({}, {"Authorization": f"Bearer {source['secret']}"}):
        with pytest.raises(DurableStreamError) as refused:
            DurableStream.connect(url, headers=headers)
        assert refused.value.status == 401
