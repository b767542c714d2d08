"""Pre-flight checks against a real Postgres, and the control plane on Postgres."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conftest import fast_password_hasher, free_port
from fusebox.cloud import db
from fusebox.cloud.api import create_admin_app
from fusebox.cloud.checks import check_database
from fusebox.cloud.control import open_control_plane
from fusebox.cloud.runtime import CheckResult, NullRuntime
from postgres import PostgresCluster, create_cluster

API = "/api/v1"


def run(url: str) -> CheckResult:
    return asyncio.run(check_database(url, connect_timeout=5))


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"


@pytest.fixture
def role(postgres: PostgresCluster) -> Iterator[str]:
    """A login role without REPLICATION (and not a superuser)."""
    name = unique("norepl")
    postgres.psql(f"CREATE ROLE {name} LOGIN NOREPLICATION NOSUPERUSER")
    try:
        yield name
    finally:
        postgres.psql(f"DROP ROLE IF EXISTS {name}")


def test_all_checks_pass_on_a_logical_cluster(postgres: PostgresCluster) -> None:
    result = run(postgres.url())
    assert result.ok and result.check is None
    assert result.passed == ("connection", "replication_permission", "wal_level")


def test_connection_failure_names_the_check_and_hides_the_password() -> None:
    url = f"postgresql://app:very-secret-pw@127.0.0.1:{free_port()}/app"
    result = run(url)
    assert not result.ok
    assert result.check == "connection"
    assert "Could not connect" in result.message
    assert "Check the host, port" in result.message
    assert "very-secret-pw" not in result.message


def test_unknown_database_is_a_connection_failure(postgres: PostgresCluster) -> None:
    result = run(postgres.url("no_such_database"))
    assert result.check == "connection"
    assert "no_such_database" in result.message


def test_role_without_replication_fails_that_check(postgres: PostgresCluster, role: str) -> None:
    result = run(postgres.url(user=role))
    assert result.check == "replication_permission"
    assert result.passed == ("connection",)
    assert f'ALTER ROLE "{role}" WITH REPLICATION' in result.message
    postgres.psql(f"ALTER ROLE {role} REPLICATION")
    assert run(postgres.url(user=role)).ok


def test_a_superuser_needs_no_replication_attribute(postgres: PostgresCluster) -> None:
    name = unique("su")
    postgres.psql(f"CREATE ROLE {name} LOGIN SUPERUSER NOREPLICATION")
    try:
        assert run(postgres.url(user=name)).ok
    finally:
        postgres.psql(f"DROP ROLE {name}")


def test_wal_level_replica_fails_that_check() -> None:
    cluster = create_cluster(wal_level="replica", max_connections="20")
    try:
        result = run(cluster.url())
        assert result.check == "wal_level"
        assert result.passed == ("connection", "replication_permission")
        assert "'replica'" in result.message
        assert "wal_level = logical" in result.message
    finally:
        cluster.destroy()


class CheckingRuntime(NullRuntime):
    """Runs the real checks; starts nothing."""

    async def check_database(self, database_url: str) -> CheckResult:
        self.checked.append(database_url)
        return await check_database(database_url, connect_timeout=5)


def test_service_creation_runs_the_real_checks(tmp_path, postgres: PostgresCluster, role) -> None:
    control = open_control_plane(tmp_path, environ={}, password_hasher=fast_password_hasher())
    owner = control.bootstrap()
    runtime = CheckingRuntime()
    app = create_admin_app(control, runtime, "http://127.0.0.1:3000")
    with TestClient(app) as client:
        token = client.post(
            f"{API}/auth/login", json={"email": owner.email, "password": owner.password}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        project = client.post(
            f"{API}/projects",
            json={"workspace_id": owner.workspace_id, "name": "p"},
            headers=headers,
        ).json()
        environment = client.post(
            f"{API}/environments", json={"project_id": project["id"], "name": "e"}, headers=headers
        ).json()

        def create(url: str) -> str:
            body = {
                "environment_id": environment["id"],
                "type": "postgres",
                "region": "local",
                "database_url": url,
            }
            response = client.post(f"{API}/services", json=body, headers=headers)
            assert response.status_code == 201, response.text
            return response.json()["id"]

        good, weak = create(postgres.url()), create(postgres.url(user=role))
        client.portal.call(app.state.provisioner.wait_idle)
        ok = client.get(f"{API}/services/{good}", headers=headers).json()
        assert ok["state"] == "active" and ok["error"] is None
        failed = client.get(f"{API}/services/{weak}", headers=headers).json()
        assert failed["state"] == "error"
        assert failed["error"]["check"] == "replication_permission"
        assert "REPLICATION" in failed["error"]["message"]
        events = client.get(f"{API}/services/{weak}/events", headers=headers).json()
        assert [e["kind"] for e in events] == ["created", "initializing", "check_failed"]
        assert events[-1]["details"]["check"] == "replication_permission"
        assert runtime.started == [good]
    control.close()


# -- the control plane on Postgres (cluster mode) ---------------------------------------------


@pytest.fixture
def control_database(postgres: PostgresCluster) -> Iterator[str]:
    name = unique("control")
    postgres.psql(f"CREATE DATABASE {name}")
    try:
        yield postgres.url(name)
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_control_plane_on_postgres(tmp_path, control_database: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    control = open_control_plane(
        tmp_path,
        database_url=control_database,
        environ={},
        password_hasher=fast_password_hasher(),
    )
    assert control.engine.dialect.name == "postgresql"
    db.upgrade(control.engine)  # idempotent
    with control.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []
    owner = control.bootstrap()
    assert control.bootstrap() is None
    runtime = NullRuntime()
    app = create_admin_app(control, runtime, "http://127.0.0.1:3000")
    with TestClient(app) as client:
        token = client.post(
            f"{API}/auth/login", json={"email": owner.email, "password": owner.password}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        project = client.post(
            f"{API}/projects",
            json={"workspace_id": owner.workspace_id, "name": "p"},
            headers=headers,
        ).json()
        environment = client.post(
            f"{API}/environments", json={"project_id": project["id"], "name": "e"}, headers=headers
        ).json()
        duplicate = client.post(
            f"{API}/environments", json={"project_id": project["id"], "name": "e"}, headers=headers
        )
        assert duplicate.status_code == 409
        service = client.post(
            f"{API}/services",
            json={"environment_id": environment["id"], "type": "streams", "region": "local"},
            headers=headers,
        ).json()
        client.portal.call(app.state.provisioner.wait_idle)
        assert client.get(f"{API}/services/{service['id']}", headers=headers).json()["state"] == (
            "active"
        )
        assert control.verify_service_secret(service["id"], service["secret"])
        rotated = client.post(
            f"{API}/services/{service['id']}/rotate-secret",
            json={"overlap_seconds": 0},
            headers=headers,
        ).json()
        assert control.verify_service_secret(service["id"], rotated["secret"])
        assert not control.verify_service_secret(service["id"], service["secret"])
        clone = client.post(
            f"{API}/environments",
            json={"project_id": project["id"], "name": "pr-1", "clone_from": "e"},
            headers=headers,
        )
        assert clone.status_code == 201
        events = client.get(f"{API}/services/{service['id']}/events", headers=headers).json()
        assert [e["kind"] for e in events][-1] == "secret_rotated"
        # Text a SQLite database would take but Postgres would not: refused as invalid, not 500.
        response = client.post(
            f"{API}/projects",
            json={"workspace_id": owner.workspace_id, "name": "nul\u0000byte"},
            headers=headers,
        )
        assert response.status_code == 422
    control.close()
