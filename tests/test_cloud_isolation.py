"""Workspace isolation: with another tenant's IDs, every route answers 404, never 403."""

from __future__ import annotations

import pytest

from conftest import CloudHarness
from fusebox.cloud.scopes import SCOPES

API = "/api/v1"
PG_URL = "postgresql://app:tenant-a-pw@127.0.0.1:5432/app"


def build_tenant(cloud: CloudHarness, headers: dict[str, str], workspace_id: str) -> dict:
    """A workspace's full tree: project, environment, two services, an API token."""

    def post(path: str, body: dict) -> dict:
        response = cloud.client.post(API + path, json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    project = post("/projects", {"workspace_id": workspace_id, "name": "app"})
    environment = post("/environments", {"project_id": project["id"], "name": "production"})
    pg = post(
        "/services",
        {
            "environment_id": environment["id"],
            "type": "postgres",
            "region": "local",
            "database_url": PG_URL,
        },
    )
    streams = post(
        "/services", {"environment_id": environment["id"], "type": "streams", "region": "local"}
    )
    token = post("/tokens", {"workspace_id": workspace_id, "name": "ci", "scopes": list(SCOPES)})
    whoami = cloud.client.get(f"{API}/auth/whoami", headers=headers).json()
    return {
        "user": whoami["user"]["id"],
        "headers": headers,
        "ws": workspace_id,
        "proj": project["id"],
        "env": environment["id"],
        "env_name": environment["name"],
        "svc": pg["id"],
        "svc_streams": streams["id"],
        "secret": pg["secret"],
        "tok": token["id"],
        "token": token["token"],
    }


@pytest.fixture
def tenants(cloud: CloudHarness) -> tuple[dict, dict]:
    """Tenant A (the harness owner) and tenant B (another user, own workspace)."""
    a = build_tenant(cloud, cloud.login(), cloud.workspace_id)
    cloud.control.accounts.create_user("b@example.com", "b-password-1")
    b_headers = cloud.login("b@example.com", "b-password-1")
    b_workspace = cloud.client.post(f"{API}/workspaces", json={"name": "B"}, headers=b_headers)
    b = build_tenant(cloud, b_headers, b_workspace.json()["id"])
    cloud.settle()
    return a, b


def foreign_requests(victim: dict, own: dict) -> list[tuple[str, str, dict | None, dict | None]]:
    """(method, path, query, body) for every route that takes an ID, aimed at `victim`."""
    v = victim
    return [
        ("GET", "/tokens", {"workspace_id": v["ws"]}, None),
        (
            "POST",
            "/tokens",
            None,
            {"workspace_id": v["ws"], "name": "x", "scopes": ["projects:read"]},
        ),
        ("DELETE", f"/tokens/{v['tok']}", None, None),
        ("GET", "/projects", {"workspace_id": v["ws"]}, None),
        ("POST", "/projects", None, {"workspace_id": v["ws"], "name": "x"}),
        ("GET", "/environments", {"project_id": v["proj"]}, None),
        ("POST", "/environments", None, {"project_id": v["proj"], "name": "x"}),
        (
            "POST",
            "/environments",
            None,
            {"project_id": own["proj"], "name": "y", "clone_from": v["env"]},
        ),
        ("DELETE", f"/environments/{v['env']}", None, None),
        ("GET", "/services", {"environment_id": v["env"]}, None),
        (
            "POST",
            "/services",
            None,
            {"environment_id": v["env"], "type": "streams", "region": "local"},
        ),
        ("GET", f"/services/{v['svc']}", None, None),
        ("DELETE", f"/services/{v['svc']}", None, None),
        ("DELETE", f"/services/{v['svc_streams']}", None, None),
        ("GET", f"/services/{v['svc']}/secret", None, None),
        ("POST", f"/services/{v['svc']}/rotate-secret", None, {"overlap_seconds": 0}),
        ("GET", f"/services/{v['svc']}/events", None, None),
        ("POST", f"/services/{v['svc']}/client-tokens", None, {"table": "items"}),
        ("GET", f"/workspaces/{v['ws']}/members", None, None),
        (
            "POST",
            f"/workspaces/{v['ws']}/members",
            None,
            {"email": "new@example.com", "role": "owner", "password": "long enough"},
        ),
        ("PATCH", f"/workspaces/{v['ws']}/members/{v['user']}", None, {"role": "member"}),
        ("DELETE", f"/workspaces/{v['ws']}/members/{v['user']}", None, None),
    ]


def assert_untouched(cloud: CloudHarness, victim: dict) -> None:
    headers = victim["headers"]
    service = cloud.client.get(f"{API}/services/{victim['svc']}", headers=headers)
    assert service.status_code == 200
    secret = cloud.client.get(f"{API}/services/{victim['svc']}/secret", headers=headers).json()
    assert secret["secret"] == victim["secret"]
    assert cloud.client.get(f"{API}/services/{victim['svc_streams']}", headers=headers).is_success

    def listed(path: str, **query: str) -> list[str]:
        response = cloud.client.get(API + path, params=query, headers=headers)
        return [item["id"] for item in response.json()]

    assert listed("/environments", project_id=victim["proj"]) == [victim["env"]]
    assert listed("/projects", workspace_id=victim["ws"]) == [victim["proj"]]
    assert listed("/tokens", workspace_id=victim["ws"]) == [victim["tok"]]
    members = cloud.client.get(f"{API}/workspaces/{victim['ws']}/members", headers=headers)
    assert [(m["user"]["id"], m["role"]) for m in members.json()] == [(victim["user"], "owner")]
    assert cloud.control.verify_service_secret(victim["svc"], victim["secret"])


@pytest.mark.parametrize("credential", ["session", "api_token"])
@pytest.mark.parametrize("direction", ["b_at_a", "a_at_b"])
def test_other_tenants_ids_are_404_everywhere(cloud: CloudHarness, tenants, credential, direction):
    a, b = tenants
    attacker, victim = (b, a) if direction == "b_at_a" else (a, b)
    headers = (
        attacker["headers"]
        if credential == "session"
        else {"Authorization": f"Bearer {attacker['token']}"}
    )
    for method, path, query, body in foreign_requests(victim, attacker):
        response = cloud.client.request(
            method, API + path, params=query, json=body, headers=headers
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert_untouched(cloud, victim)
    assert cloud.runtime.stopped == []


def test_every_route_with_an_id_is_covered(cloud: CloudHarness, tenants) -> None:
    a, b = tenants
    document = cloud.client.get(f"{API}/openapi.json").json()
    expected = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", [])}
            body = operation.get("requestBody")
            if "{" in path or names & {"workspace_id", "project_id", "environment_id"} or body:
                expected.add((method.upper(), path.removeprefix(API)))
    # No IDs in them:
    expected -= {("POST", "/auth/login"), ("POST", "/workspaces"), ("POST", "/auth/password")}
    covered = set()
    for method, path, _query, _body in foreign_requests(a, b):
        template = path
        for key in ("tok", "env", "svc_streams", "svc", "ws", "user"):
            kind = {
                "tok": "token_id",
                "env": "environment_id",
                "ws": "workspace_id",
                "user": "user_id",
            }.get(key, "service_id")
            template = template.replace(a[key], "{" + kind + "}")
        covered.add((method, template))
    assert expected <= covered, expected - covered


def test_lists_without_filters_show_only_own_resources(cloud: CloudHarness, tenants) -> None:
    a, b = tenants
    for tenant, other in ((a, b), (b, a)):
        for credential in (tenant["headers"], {"Authorization": f"Bearer {tenant['token']}"}):
            for path in ("/workspaces", "/projects", "/environments", "/services", "/tokens"):
                listed = cloud.client.get(API + path, headers=credential)
                assert listed.status_code == 200
                ids = {item["id"] for item in listed.json()}
                assert ids.isdisjoint(
                    {other["ws"], other["proj"], other["env"], other["svc"], other["tok"]}
                ), path
                assert ids, path


def test_a_token_sees_only_its_own_workspace_of_the_same_user(cloud: CloudHarness) -> None:
    headers = cloud.login()
    first = build_tenant(cloud, headers, cloud.workspace_id)
    second_ws = cloud.client.post(f"{API}/workspaces", json={"name": "two"}, headers=headers)
    second = build_tenant(cloud, headers, second_ws.json()["id"])
    token_headers = {"Authorization": f"Bearer {first['token']}"}
    for method, path, query, body in foreign_requests(second, first):
        response = cloud.client.request(
            method, API + path, params=query, json=body, headers=token_headers
        )
        assert response.status_code == 404, (method, path, response.text)
    # The session of the same user sees both.
    assert len(cloud.client.get(f"{API}/projects", headers=headers).json()) == 2
    assert_untouched(cloud, second)
