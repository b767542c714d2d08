"""Accounts through the admin API: sign-in, sessions, API tokens, scopes, bootstrap."""

from __future__ import annotations

import pytest

from conftest import CloudHarness, fast_password_hasher
from fusebox.cloud import db
from fusebox.cloud.control import open_control_plane
from fusebox.cloud.scopes import SCOPES

API = "/api/v1"


def make_token(cloud: CloudHarness, headers: dict[str, str], scopes: list[str], **extra) -> str:
    body = {"workspace_id": cloud.workspace_id, "name": "ci", "scopes": scopes, **extra}
    response = cloud.client.post(f"{API}/tokens", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


# -- sign-in and sessions -------------------------------------------------------------------


def test_login_returns_a_session_that_works(cloud: CloudHarness) -> None:
    response = cloud.client.post(
        f"{API}/auth/login", json={"email": cloud.owner_email, "password": cloud.owner_password}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token"].startswith("fbxs_")
    assert body["user"]["email"] == cloud.owner_email
    whoami = cloud.client.get(f"{API}/auth/whoami", headers=bearer(body["token"])).json()
    assert whoami["user"]["id"] == body["user"]["id"]
    assert [w["id"] for w in whoami["workspaces"]] == [cloud.workspace_id]
    assert whoami["token"] is None


def test_email_is_case_insensitive(cloud: CloudHarness) -> None:
    cloud.login(cloud.owner_email.upper(), cloud.owner_password)


@pytest.mark.parametrize(
    "email, password",
    [("admin@localhost", "wrong"), ("nobody@localhost", "whatever"), ("not-an-email", "x")],
)
def test_bad_credentials_are_401_with_one_message(cloud: CloudHarness, email, password) -> None:
    response = cloud.client.post(f"{API}/auth/login", json={"email": email, "password": password})
    assert_error(response, 401, "unauthorized")
    # The same words whether the email exists or not: no account enumeration.
    assert response.json()["error"]["message"] == "wrong email or password"
    assert response.headers["www-authenticate"] == "Bearer"


def test_missing_and_garbage_credentials_are_401(cloud: CloudHarness) -> None:
    assert_error(cloud.client.get(f"{API}/workspaces"), 401, "unauthorized")
    for value in ("Bearer nope", "Bearer fbx_nope", "Bearer fbxs_nope", "Basic abc", "Bearer"):
        response = cloud.client.get(f"{API}/workspaces", headers={"Authorization": value})
        assert_error(response, 401, "unauthorized")


def test_sessions_expire(cloud: CloudHarness) -> None:
    headers = cloud.login()
    assert cloud.client.get(f"{API}/workspaces", headers=headers).status_code == 200
    cloud.clock.advance(days=7, seconds=-1)
    assert cloud.client.get(f"{API}/workspaces", headers=headers).status_code == 200
    cloud.clock.advance(seconds=1)
    assert_error(cloud.client.get(f"{API}/workspaces", headers=headers), 401, "unauthorized")


def test_logout_revokes_only_that_session(cloud: CloudHarness) -> None:
    first, second = cloud.login(), cloud.login()
    assert cloud.client.post(f"{API}/auth/logout", headers=first).status_code == 204
    assert_error(cloud.client.get(f"{API}/workspaces", headers=first), 401, "unauthorized")
    assert cloud.client.get(f"{API}/workspaces", headers=second).status_code == 200


def test_session_tokens_are_stored_hashed(cloud: CloudHarness) -> None:
    token = cloud.login()["Authorization"].removeprefix("Bearer ")
    with db.reading(cloud.control.engine) as conn:
        stored = [row.token_hash for row in conn.execute(db.sessions.select())]
    assert token not in stored
    assert all(len(value) == 64 for value in stored)


# -- API tokens -----------------------------------------------------------------------------


def test_api_token_shown_once_listed_without_secret(cloud: CloudHarness) -> None:
    headers = cloud.login()
    created = cloud.client.post(
        f"{API}/tokens",
        json={"workspace_id": cloud.workspace_id, "name": "ci", "scopes": ["projects:read"]},
        headers=headers,
    ).json()
    assert created["token"].startswith("fbx_")
    assert created["id"].startswith("tok_")
    assert created["scopes"] == ["projects:read"]
    listed = cloud.client.get(f"{API}/tokens", headers=headers).json()
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0]
    assert created["token"] not in str(listed)
    with db.reading(cloud.control.engine) as conn:
        hashes = [row.token_hash for row in conn.execute(db.api_tokens.select())]
    assert created["token"] not in hashes


def test_whoami_describes_the_api_token(cloud: CloudHarness) -> None:
    token = make_token(cloud, cloud.login(), ["services:read"])
    whoami = cloud.client.get(f"{API}/auth/whoami", headers=bearer(token)).json()
    assert whoami["token"]["workspace_id"] == cloud.workspace_id
    assert whoami["token"]["scopes"] == ["services:read"]
    assert [w["id"] for w in whoami["workspaces"]] == [cloud.workspace_id]


def test_unknown_scope_is_a_validation_error(cloud: CloudHarness) -> None:
    response = cloud.client.post(
        f"{API}/tokens",
        json={"workspace_id": cloud.workspace_id, "name": "x", "scopes": ["root"]},
        headers=cloud.login(),
    )
    assert_error(response, 422, "validation_error")


def test_revoked_token_is_401(cloud: CloudHarness) -> None:
    headers = cloud.login()
    created = cloud.client.post(
        f"{API}/tokens",
        json={"workspace_id": cloud.workspace_id, "name": "x", "scopes": ["projects:read"]},
        headers=headers,
    ).json()
    assert cloud.client.get(f"{API}/projects", headers=bearer(created["token"])).status_code == 200
    assert cloud.client.delete(f"{API}/tokens/{created['id']}", headers=headers).status_code == 204
    assert_error(
        cloud.client.get(f"{API}/projects", headers=bearer(created["token"])), 401, "unauthorized"
    )
    assert cloud.client.get(f"{API}/tokens", headers=headers).json() == []
    # Revoking twice: it is gone.
    assert_error(
        cloud.client.delete(f"{API}/tokens/{created['id']}", headers=headers), 404, "not_found"
    )


def test_token_stops_working_when_its_creator_leaves_the_workspace(cloud: CloudHarness) -> None:
    accounts = cloud.control.accounts
    user = accounts.create_user("dev@example.com", "pw-dev-123")
    accounts.add_member(cloud.workspace_id, user["id"])
    dev = cloud.login("dev@example.com", "pw-dev-123")
    token = make_token(cloud, dev, ["projects:read"])
    assert cloud.client.get(f"{API}/projects", headers=bearer(token)).status_code == 200
    accounts.remove_member(cloud.workspace_id, user["id"])
    assert_error(cloud.client.get(f"{API}/projects", headers=bearer(token)), 401, "unauthorized")


WS = "<the workspace>"
# Every route, the scope it needs, and a request that is otherwise harmless.
ROUTES = [
    ("GET", "/tokens", "tokens:read", None),
    (
        "POST",
        "/tokens",
        "tokens:write",
        {"workspace_id": WS, "name": "n", "scopes": ["tokens:read"]},
    ),
    ("DELETE", "/tokens/tok_aaaaaaaaaaaaaaaaaaaa", "tokens:write", None),
    ("GET", "/projects", "projects:read", None),
    ("POST", "/projects", "projects:write", {"workspace_id": WS, "name": "n"}),
    ("GET", "/environments", "environments:read", None),
    ("POST", "/environments", "environments:write", {"project_id": "proj_x", "name": "n"}),
    ("DELETE", "/environments/env_aaaaaaaaaaaaaaaaaaaa", "environments:write", None),
    ("GET", "/services", "services:read", None),
    (
        "POST",
        "/services",
        "services:write",
        {"environment_id": "env_x", "type": "streams", "region": "local"},
    ),
    ("GET", "/services/svc_aaaaaaaaaaaaaaaaaaaa", "services:read", None),
    ("DELETE", "/services/svc_aaaaaaaaaaaaaaaaaaaa", "services:write", None),
    ("GET", "/services/svc_aaaaaaaaaaaaaaaaaaaa/secret", "services:secrets", None),
    ("POST", "/services/svc_aaaaaaaaaaaaaaaaaaaa/rotate-secret", "services:secrets", {}),
    ("GET", "/services/svc_aaaaaaaaaaaaaaaaaaaa/events", "services:read", None),
    (
        "POST",
        "/services/svc_aaaaaaaaaaaaaaaaaaaa/client-tokens",
        "services:secrets",
        {"table": "items"},
    ),
]


@pytest.mark.parametrize("method, path, scope, body", ROUTES)
def test_each_route_needs_its_scope(cloud: CloudHarness, method, path, scope, body) -> None:
    headers = cloud.login()
    if body is not None:
        body = {key: cloud.workspace_id if value == WS else value for key, value in body.items()}
    others = [s for s in SCOPES if s != scope and s != scope.replace(":read", ":write")]
    without = make_token(cloud, headers, others)
    response = cloud.client.request(method, API + path, json=body, headers=bearer(without))
    assert_error(response, 403, "forbidden")
    assert scope in response.json()["error"]["message"]
    with_scope = make_token(cloud, headers, [scope])
    response = cloud.client.request(method, API + path, json=body, headers=bearer(with_scope))
    assert response.status_code != 403, response.text


@pytest.mark.parametrize("resource", ["projects", "environments", "services", "tokens"])
def test_write_implies_read(cloud: CloudHarness, resource: str) -> None:
    token = make_token(cloud, cloud.login(), [f"{resource}:write"])
    assert cloud.client.get(f"{API}/{resource}", headers=bearer(token)).status_code == 200


def test_secrets_scope_is_separate_from_services_write(cloud: CloudHarness) -> None:
    headers = cloud.login()
    environment = _environment(cloud, headers)
    service = cloud.client.post(
        f"{API}/services",
        json={"environment_id": environment, "type": "streams", "region": "local"},
        headers=headers,
    ).json()
    writer = make_token(cloud, headers, ["services:write"])
    response = cloud.client.get(f"{API}/services/{service['id']}/secret", headers=bearer(writer))
    assert_error(response, 403, "forbidden")
    reader = make_token(cloud, headers, ["services:secrets"])
    response = cloud.client.get(f"{API}/services/{service['id']}/secret", headers=bearer(reader))
    assert response.json() == {"id": service["id"], "secret": service["secret"]}


def test_api_tokens_cannot_do_session_things(cloud: CloudHarness) -> None:
    token = make_token(cloud, cloud.login(), list(SCOPES))
    response = cloud.client.post(f"{API}/workspaces", json={"name": "x"}, headers=bearer(token))
    assert_error(response, 403, "forbidden")
    assert_error(cloud.client.post(f"{API}/auth/logout", headers=bearer(token)), 403, "forbidden")


def test_a_token_cannot_grant_more_than_it_holds(cloud: CloudHarness) -> None:
    limited = make_token(cloud, cloud.login(), ["tokens:write", "projects:read"])
    response = cloud.client.post(
        f"{API}/tokens",
        json={"workspace_id": cloud.workspace_id, "name": "x", "scopes": ["projects:write"]},
        headers=bearer(limited),
    )
    assert_error(response, 403, "forbidden")
    narrower = make_token(cloud, bearer(limited), ["projects:read"])
    assert cloud.client.get(f"{API}/projects", headers=bearer(narrower)).status_code == 200


def test_workspaces_any_credential_lists_bound_workspace_only(cloud: CloudHarness) -> None:
    headers = cloud.login()
    other = cloud.client.post(f"{API}/workspaces", json={"name": "second"}, headers=headers)
    assert other.status_code == 201
    session_view = cloud.client.get(f"{API}/workspaces", headers=headers).json()
    assert {w["id"] for w in session_view} == {cloud.workspace_id, other.json()["id"]}
    token = make_token(cloud, headers, ["projects:read"])
    token_view = cloud.client.get(f"{API}/workspaces", headers=bearer(token)).json()
    assert [w["id"] for w in token_view] == [cloud.workspace_id]


def _environment(cloud: CloudHarness, headers: dict[str, str]) -> str:
    project = cloud.client.post(
        f"{API}/projects", json={"workspace_id": cloud.workspace_id, "name": "p"}, headers=headers
    ).json()
    return cloud.client.post(
        f"{API}/environments", json={"project_id": project["id"], "name": "e"}, headers=headers
    ).json()["id"]


# -- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_makes_one_owner_once(tmp_path, caplog) -> None:
    caplog.set_level("DEBUG")
    control = open_control_plane(tmp_path, environ={}, password_hasher=fast_password_hasher())
    first = control.bootstrap("Owner@Example.com")
    assert first is not None
    assert first.email == "owner@example.com"
    assert control.bootstrap() is None
    token, user = control.accounts.login("owner@example.com", first.password)
    assert user["id"] == first.user_id
    principal = control.accounts.authenticate(token)
    assert control.accounts.visible_workspaces(principal) == {first.workspace_id}
    # Shown to the caller once; never logged.
    assert first.password not in caplog.text
    control.close()
    # A second start on the same data directory keeps the owner and makes no new one.
    again = open_control_plane(tmp_path, environ={}, password_hasher=fast_password_hasher())
    assert again.bootstrap() is None
    again.close()


def test_bootstrap_default_email(tmp_path) -> None:
    control = open_control_plane(tmp_path, environ={}, password_hasher=fast_password_hasher())
    assert control.bootstrap().email == "admin@localhost"
    control.close()


def test_password_hash_is_upgraded_on_login(cloud: CloudHarness) -> None:
    from argon2 import PasswordHasher

    accounts = cloud.control.accounts
    user = accounts.create_user("old@example.com", "pw-old-123")
    with db.reading(cloud.control.engine) as conn:
        before = (
            conn.execute(db.users.select().where(db.users.c.id == user["id"])).one().password_hash
        )
    accounts.passwords._hasher = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    accounts.login("old@example.com", "pw-old-123")
    with db.reading(cloud.control.engine) as conn:
        after = (
            conn.execute(db.users.select().where(db.users.c.id == user["id"])).one().password_hash
        )
    assert before != after and "t=2" in after
    accounts.login("old@example.com", "pw-old-123")
