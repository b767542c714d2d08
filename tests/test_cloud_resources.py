"""Resources through the admin API: CRUD, soft deletes, provisioning, clone_from, errors."""

from __future__ import annotations

import asyncio
import re

import pytest

from conftest import CloudHarness
from fusebox.cloud import db
from fusebox.cloud.ids import ALPHABET, is_id, new_id
from fusebox.cloud.runtime import CheckResult

API = "/api/v1"
PG_URL = "postgresql://app:hunter2-db@127.0.0.1:5432/app"


class Tenant:
    """A signed-in user in the cloud harness, with shortcuts for creating resources."""

    def __init__(self, cloud: CloudHarness, headers: dict[str, str], workspace_id: str) -> None:
        self.cloud, self.headers, self.workspace_id = cloud, headers, workspace_id

    def call(self, method: str, path: str, **kwargs):
        return self.cloud.client.request(method, API + path, headers=self.headers, **kwargs)

    def create(self, path: str, body: dict) -> dict:
        response = self.call("POST", path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def project(self, name: str = "app") -> dict:
        return self.create("/projects", {"workspace_id": self.workspace_id, "name": name})

    def environment(self, project_id: str, name: str = "production", **extra) -> dict:
        return self.create("/environments", {"project_id": project_id, "name": name, **extra})

    def service(self, environment_id: str, type: str = "streams", **extra) -> dict:
        body = {"environment_id": environment_id, "type": type, "region": "local", **extra}
        if type == "postgres":
            body.setdefault("database_url", PG_URL)
        return self.create("/services", body)


@pytest.fixture
def owner(cloud: CloudHarness) -> Tenant:
    return Tenant(cloud, cloud.login(), cloud.workspace_id)


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["code"] == code
    assert isinstance(response.json()["error"]["message"], str)


def event_kinds(owner: Tenant, service_id: str) -> list[str]:
    return [event["kind"] for event in owner.call("GET", f"/services/{service_id}/events").json()]


# -- IDs --------------------------------------------------------------------------------------


def test_ids_have_prefix_and_20_base32_characters() -> None:
    for kind in ("usr", "ws", "proj", "env", "svc", "tok"):
        value = new_id(kind)
        assert re.fullmatch(rf"{kind}_[{ALPHABET}]{{20}}", value)
        assert is_id(value, kind)
    assert not is_id(new_id("env"), "svc")
    assert not is_id("svc_" + "A" * 20, "svc")
    assert len({new_id("svc") for _ in range(1000)}) == 1000


# -- workspaces, projects, environments --------------------------------------------------------


def test_resource_shapes(owner: Tenant) -> None:
    workspace = owner.create("/workspaces", {"name": "Acme"})
    assert set(workspace) == {"id", "name", "created_at", "updated_at", "deleted_at"}
    assert workspace["id"].startswith("ws_") and workspace["deleted_at"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", workspace["created_at"])
    project = owner.create("/projects", {"workspace_id": workspace["id"], "name": "web"})
    assert set(project) == {"id", "name", "workspace_id", "created_at", "updated_at", "deleted_at"}
    environment = owner.environment(project["id"])
    assert set(environment) == {
        "id",
        "name",
        "project_id",
        "created_at",
        "updated_at",
        "deleted_at",
    }
    assert environment["project_id"] == project["id"]


def test_lists_filter_by_parent(owner: Tenant) -> None:
    first, second = owner.project("one"), owner.project("two")
    env_a = owner.environment(first["id"], "a")
    env_b = owner.environment(second["id"], "b")
    listed = owner.call("GET", "/projects", params={"workspace_id": owner.workspace_id}).json()
    assert {p["id"] for p in listed} == {first["id"], second["id"]}
    by_project = owner.call("GET", "/environments", params={"project_id": first["id"]}).json()
    assert [e["id"] for e in by_project] == [env_a["id"]]
    everything = owner.call("GET", "/environments").json()
    assert {e["id"] for e in everything} == {env_a["id"], env_b["id"]}


def test_environment_names_are_unique_per_project_while_live(owner: Tenant) -> None:
    project = owner.project()
    first = owner.environment(project["id"], "staging")
    duplicate = owner.call(
        "POST", "/environments", json={"project_id": project["id"], "name": "staging"}
    )
    assert_error(duplicate, 409, "conflict")
    # Another project may use the name; and after a delete, so may this one.
    owner.environment(owner.project("other")["id"], "staging")
    assert owner.call("DELETE", f"/environments/{first['id']}").status_code == 204
    owner.environment(project["id"], "staging")


# -- services ---------------------------------------------------------------------------------


def test_streams_service_provisions_to_active(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"], name="events")
    assert created["state"] == "provisioning"
    assert created["secret"].startswith("fbss_")
    assert created["url"] == f"http://127.0.0.1:3000/v1/stream/{created['id']}"
    assert created["database"] is None
    owner.cloud.settle()
    service = owner.call("GET", f"/services/{created['id']}").json()
    assert service["state"] == "active" and service["error"] is None
    assert "secret" not in service
    assert owner.cloud.runtime.started == [created["id"]]
    assert event_kinds(owner, created["id"]) == ["created", "initializing", "ready"]


def test_postgres_service_checks_then_active_with_masked_url(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"], "postgres")
    assert created["url"] == "http://127.0.0.1:3000/v1/shape"
    assert created["database"] == "postgresql://app:****@127.0.0.1:5432/app"
    assert created["name"] == "postgres"
    owner.cloud.settle()
    assert owner.cloud.runtime.checked == [PG_URL]
    service = owner.call("GET", f"/services/{created['id']}").json()
    assert service["state"] == "active"
    assert event_kinds(owner, created["id"]) == [
        "created",
        "initializing",
        "checks_passed",
        "ready",
    ]
    listed = owner.call("GET", "/services", params={"environment_id": environment["id"]})
    assert "hunter2-db" not in listed.text
    assert listed.json()[0]["database"] == "postgresql://app:****@127.0.0.1:5432/app"


def test_failed_check_puts_the_service_in_error(owner: Tenant) -> None:
    owner.cloud.runtime.check_result = CheckResult.failure(
        "wal_level", "wal_level is 'replica'; set it to logical", ("connection",)
    )
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"], "postgres")
    owner.cloud.settle()
    service = owner.call("GET", f"/services/{created['id']}").json()
    assert service["state"] == "error"
    assert service["error"] == {
        "check": "wal_level",
        "message": "wal_level is 'replica'; set it to logical",
    }
    events = owner.call("GET", f"/services/{created['id']}/events").json()
    assert [e["kind"] for e in events] == ["created", "initializing", "check_failed"]
    assert events[-1]["details"]["message"] == "wal_level is 'replica'; set it to logical"
    assert owner.cloud.runtime.started == []


def test_start_failure_puts_the_service_in_error(owner: Tenant) -> None:
    owner.cloud.runtime.start_error = RuntimeError("port in use")
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"])
    owner.cloud.settle()
    service = owner.call("GET", f"/services/{created['id']}").json()
    assert service["state"] == "error"
    assert service["error"] == {"check": "start", "message": "port in use"}
    assert event_kinds(owner, created["id"])[-1] == "start_failed"


def test_service_validation(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])["id"]
    cases = [
        {"type": "postgres", "region": "local"},  # no database_url
        {"type": "streams", "region": "local", "database_url": PG_URL},
        {"type": "postgres", "region": "local", "database_url": "mysql://x@h/db"},
        {"type": "postgres", "region": "local", "database_url": "postgresql://:5432/db"},
        {"type": "postgres", "region": "local", "database_url": "postgresql://h:99999/db"},
        {"type": "kafka", "region": "local"},
        {"type": "streams"},
        {"type": "streams", "region": "Not A Region"},
        {"type": "streams", "region": "local", "name": ""},
        {"type": "streams", "region": "local", "name": "x" * 201},
        {"type": "streams", "region": "local", "name": "tab\there"},
        {"type": "streams", "region": "local", "surprise": 1},
    ]
    for body in cases:
        response = owner.call("POST", "/services", json={"environment_id": environment, **body})
        assert_error(response, 422, "validation_error")
    assert owner.call("GET", "/services").json() == []


def test_delete_service_is_soft_and_stops_it(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])
    keep = owner.service(environment["id"])
    gone = owner.service(environment["id"])
    owner.cloud.settle()
    assert owner.call("DELETE", f"/services/{gone['id']}").status_code == 204
    assert owner.cloud.runtime.stopped == [gone["id"]]
    for path in ("", "/secret", "/events"):
        assert_error(owner.call("GET", f"/services/{gone['id']}{path}"), 404, "not_found")
    assert_error(owner.call("DELETE", f"/services/{gone['id']}"), 404, "not_found")
    assert [s["id"] for s in owner.call("GET", "/services").json()] == [keep["id"]]
    with db.reading(owner.cloud.control.engine) as conn:
        row = conn.execute(db.services.select().where(db.services.c.id == gone["id"])).one()
        kinds = [
            e.kind
            for e in conn.execute(db.events.select().where(db.events.c.service_id == gone["id"]))
        ]
    assert row.deleted_at is not None
    assert kinds[-1] == "deleted"
    assert not owner.cloud.control.verify_service_secret(gone["id"], gone["secret"])


def test_delete_environment_deletes_its_services(owner: Tenant) -> None:
    project = owner.project()
    environment = owner.environment(project["id"], "pr-42")
    services = [owner.service(environment["id"]), owner.service(environment["id"], "postgres")]
    owner.cloud.settle()
    assert owner.call("DELETE", f"/environments/{environment['id']}").status_code == 204
    assert sorted(owner.cloud.runtime.stopped) == sorted(s["id"] for s in services)
    assert owner.call("GET", "/environments", params={"project_id": project["id"]}).json() == []
    assert owner.call("GET", "/services").json() == []
    for service in services:
        assert_error(owner.call("GET", f"/services/{service['id']}"), 404, "not_found")
    assert_error(
        owner.call("GET", "/services", params={"environment_id": environment["id"]}),
        404,
        "not_found",
    )
    with db.reading(owner.cloud.control.engine) as conn:
        rows = conn.execute(db.services.select()).all()
    assert all(row.deleted_at is not None for row in rows)


def test_delete_during_checks_cancels_provisioning(owner: Tenant) -> None:
    runtime = owner.cloud.runtime
    entered = asyncio.Event()

    async def check_forever(database_url: str) -> CheckResult:
        entered.set()
        await asyncio.get_running_loop().create_future()  # never resolves
        raise AssertionError("unreachable")

    runtime.check_database = check_forever
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"], "postgres")
    owner.cloud.client.portal.call(entered.wait)  # the check is in progress, stuck
    assert owner.call("DELETE", f"/services/{created['id']}").status_code == 204
    owner.cloud.settle()  # returns: the stuck task was cancelled
    assert runtime.started == []
    assert runtime.stopped == [created["id"]]
    assert "ready" not in event_kinds_raw(owner, created["id"])


def test_delete_during_start_stops_what_was_started(owner: Tenant) -> None:
    runtime = owner.cloud.runtime
    resources = owner.cloud.control.resources
    original_start = runtime.start_service

    async def start_then_lose_the_race(service, secret, database_url):
        await original_start(service, secret, database_url)
        # The service is deleted (by another request) just as the engine came up.
        resources.delete_service([owner.workspace_id], service["id"])

    runtime.start_service = start_then_lose_the_race
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"])
    owner.cloud.settle()
    assert runtime.started == [created["id"]]
    assert runtime.stopped == [created["id"]]
    assert "ready" not in event_kinds_raw(owner, created["id"])


def event_kinds_raw(owner: Tenant, service_id: str) -> list[str]:
    """Event kinds straight from the database (the API hides deleted services)."""
    with db.reading(owner.cloud.control.engine) as conn:
        rows = conn.execute(
            db.events.select().where(db.events.c.service_id == service_id).order_by(db.events.c.id)
        )
        return [row.kind for row in rows]


# -- clone_from -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["name", "id"])
def test_clone_from_makes_the_same_kinds_with_new_credentials(owner: Tenant, by: str) -> None:
    project = owner.project()
    production = owner.environment(project["id"], "production")
    pg = owner.service(production["id"], "postgres", name="db", region="eu-west-1")
    streams = owner.service(production["id"], name="events")
    owner.cloud.settle()
    source = production["name"] if by == "name" else production["id"]
    staging = owner.environment(project["id"], "pr-7", clone_from=source)
    owner.cloud.settle()
    cloned = owner.call("GET", "/services", params={"environment_id": staging["id"]}).json()
    assert sorted((s["type"], s["name"], s["region"]) for s in cloned) == [
        ("postgres", "db", "eu-west-1"),
        ("streams", "events", "local"),
    ]
    assert all(s["state"] == "active" for s in cloned)
    assert {s["id"] for s in cloned}.isdisjoint({pg["id"], streams["id"]})
    cloned_pg = next(s for s in cloned if s["type"] == "postgres")
    assert cloned_pg["database"] == pg["database"]
    # The database URL is reused (the check ran against the same one); secrets are new.
    assert owner.cloud.runtime.checked == [PG_URL, PG_URL]
    for service in cloned:
        secret = owner.call("GET", f"/services/{service['id']}/secret").json()["secret"]
        assert secret not in (pg["secret"], streams["secret"])
    assert owner.call("GET", "/services", params={"environment_id": production["id"]}).json()


def test_clone_from_unknown_or_other_project_is_404(owner: Tenant) -> None:
    project, other = owner.project(), owner.project("other")
    elsewhere = owner.environment(other["id"], "elsewhere")
    for source in ("nope", elsewhere["id"], elsewhere["name"]):
        response = owner.call(
            "POST",
            "/environments",
            json={"project_id": project["id"], "name": "x", "clone_from": source},
        )
        assert_error(response, 404, "not_found")
    assert owner.call("GET", "/environments", params={"project_id": project["id"]}).json() == []


# -- secrets and client tokens ------------------------------------------------------------------


def test_get_and_rotate_secret(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"])
    secret = owner.call("GET", f"/services/{created['id']}/secret").json()
    assert secret == {"id": created["id"], "secret": created["secret"]}
    rotated = owner.call("POST", f"/services/{created['id']}/rotate-secret")
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["secret"] != created["secret"]
    assert body["previous_valid_until"] == "2030-01-01T01:00:00.000Z"  # the default hour
    assert owner.call("GET", f"/services/{created['id']}/secret").json()["secret"] == body["secret"]
    assert event_kinds(owner, created["id"])[-1] == "secret_rotated"
    custom = owner.call(
        "POST", f"/services/{created['id']}/rotate-secret", json={"overlap_seconds": 60}
    ).json()
    assert custom["previous_valid_until"] == "2030-01-01T00:01:00.000Z"
    for bad in ({"overlap_seconds": -1}, {"overlap_seconds": 10**12}, {"overlap_seconds": "x"}):
        response = owner.call("POST", f"/services/{created['id']}/rotate-secret", json=bad)
        assert_error(response, 422, "validation_error")


def test_client_tokens(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])
    pg = owner.service(environment["id"], "postgres")
    streams = owner.service(environment["id"])
    response = owner.call(
        "POST",
        f"/services/{pg['id']}/client-tokens",
        json={"table": "items", "where": "owner_id = $1", "params": ["7"], "ttl_seconds": 60},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["expires_at"] == "2030-01-01T00:01:00.000Z"
    resources = owner.cloud.control.resources
    claims = resources.verify_client_token(body["token"])
    assert claims is not None and claims["sub"] == pg["id"]
    assert claims["shape"] == {
        "table": "items",
        "where": "owner_id = $1",
        "params": {"1": "7"},
        "columns": None,
    }
    # Expired after its ttl, by the control plane's clock.
    owner.cloud.clock.advance(seconds=60)
    assert resources.verify_client_token(body["token"]) is None
    # Tampered or foreign tokens do not verify.
    assert resources.verify_client_token(body["token"][:-2] + "xx") is None
    assert resources.verify_client_token("not a jwt") is None
    # Streams services have no shapes.
    response = owner.call("POST", f"/services/{streams['id']}/client-tokens", json={"table": "t"})
    assert_error(response, 400, "bad_request")
    for bad in (
        {"table": "items", "where": "1; drop table items"},
        {"table": "items", "where": "x = 1 LIMIT 1"},
        {"table": "items", "where": "x ="},
        {"table": "a.b.c"},
        {"table": "items", "params": {"1": "x"}},  # params with no where
        {"table": "items", "where": "x = $1", "params": {"2": "x"}},
        {"table": "items", "columns": []},
        {"table": "items", "ttl_seconds": 0},
    ):
        response = owner.call("POST", f"/services/{pg['id']}/client-tokens", json=bad)
        assert_error(response, 422, "validation_error")


def test_client_tokens_follow_secret_rotation(owner: Tenant) -> None:
    environment = owner.environment(owner.project()["id"])
    pg = owner.service(environment["id"], "postgres")
    token = owner.call(
        "POST", f"/services/{pg['id']}/client-tokens", json={"table": "items"}
    ).json()["token"]
    resources = owner.cloud.control.resources
    owner.call("POST", f"/services/{pg['id']}/rotate-secret", json={"overlap_seconds": 30})
    assert resources.verify_client_token(token) is not None
    owner.cloud.clock.advance(seconds=30)
    assert resources.verify_client_token(token) is None


# -- error format --------------------------------------------------------------------------


def test_errors_always_have_the_error_shape(owner: Tenant) -> None:
    client = owner.cloud.client
    assert_error(client.get(f"{API}/nothing-here"), 404, "not_found")
    assert_error(client.put(f"{API}/projects", headers=owner.headers), 405, "method_not_allowed")
    assert_error(
        client.post(
            f"{API}/projects",
            content=b"{not json",
            headers={**owner.headers, "Content-Type": "application/json"},
        ),
        400,
        "bad_request",
    )
    assert_error(owner.call("POST", "/projects", json={"name": 5}), 422, "validation_error")
    assert_error(owner.call("POST", "/projects", json=[1, 2]), 422, "validation_error")
    assert_error(owner.call("GET", "/services/svc_nope"), 404, "not_found")
    assert_error(owner.call("GET", "/services/%00"), 404, "not_found")
    assert_error(owner.call("GET", "/events", params={"limit": "x"}), 404, "not_found")


def test_validation_messages_do_not_echo_passwords(owner: Tenant) -> None:
    response = owner.cloud.client.post(
        f"{API}/auth/login", json={"email": "a@b", "password": "p" * 2000}
    )
    assert_error(response, 422, "validation_error")
    assert "ppp" not in response.text


def test_openapi_document(owner: Tenant) -> None:
    document = owner.cloud.client.get(f"{API}/openapi.json").json()
    paths = set(document["paths"])
    assert paths == {
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/auth/whoami",
        "/api/v1/auth/password",
        "/api/v1/tokens",
        "/api/v1/tokens/{token_id}",
        "/api/v1/workspaces",
        "/api/v1/workspaces/{workspace_id}/members",
        "/api/v1/workspaces/{workspace_id}/members/{user_id}",
        "/api/v1/projects",
        "/api/v1/environments",
        "/api/v1/environments/{environment_id}",
        "/api/v1/services",
        "/api/v1/services/{service_id}",
        "/api/v1/services/{service_id}/secret",
        "/api/v1/services/{service_id}/rotate-secret",
        "/api/v1/services/{service_id}/events",
        "/api/v1/services/{service_id}/client-tokens",
    }
    assert "HTTPBearer" in document["components"]["securitySchemes"]


# -- migrations ----------------------------------------------------------------------------


def test_migrations_match_the_tables_and_rerun_cleanly(owner: Tenant) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = owner.cloud.control.engine
    db.upgrade(engine)  # a second run at head is a no-op
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# -- after a restart ---------------------------------------------------------------------------


def test_resume_restarts_active_and_finishes_provisioning(owner: Tenant) -> None:
    from fusebox.cloud.provisioning import Provisioner
    from fusebox.cloud.runtime import NullRuntime

    environment = owner.environment(owner.project()["id"])
    active = owner.service(environment["id"])
    owner.cloud.settle()
    interrupted = owner.service(environment["id"])
    # A service left in `provisioning` by a crash: its state and events stop mid-way.
    resources = owner.cloud.control.resources
    resources.set_state(interrupted["id"], "provisioning")
    stuck = resources.create_service(
        [owner.workspace_id], environment["id"], "postgres", "local", database_url=PG_URL
    ).service

    # The process restarts: a new runtime, a new provisioner over the same control plane.
    runtime = NullRuntime()
    provisioner = Provisioner(resources, runtime)

    async def restart() -> None:
        await provisioner.resume()
        await provisioner.wait_idle()

    asyncio.run(restart())
    assert set(runtime.started) == {active["id"], interrupted["id"], stuck["id"]}
    assert runtime.checked == [PG_URL]
    for service in (active, interrupted, stuck):
        assert owner.call("GET", f"/services/{service['id']}").json()["state"] == "active"


def test_stop_failures_are_logged_scrubbed(owner: Tenant, caplog) -> None:
    runtime = owner.cloud.runtime

    async def stop_badly(service) -> None:
        raise RuntimeError("could not drop slot on postgresql://app:hunter2-db@127.0.0.1/app")

    runtime.stop_service = stop_badly
    environment = owner.environment(owner.project()["id"])
    created = owner.service(environment["id"], "postgres")
    owner.cloud.settle()
    assert owner.call("DELETE", f"/services/{created['id']}").status_code == 204
    assert "hunter2-db" not in caplog.text
    assert "stopping" in caplog.text
    assert event_kinds_raw(owner, created["id"])[-1] == "stop_failed"
