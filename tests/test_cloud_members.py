"""Workspace members and password changes through the admin API (in process, real SQLite)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import CloudHarness

API = "/api/v1"
PASSWORD = "correct horse battery"


def call(cloud: CloudHarness, method: str, path: str, headers: dict, expect: int, **kw) -> Any:
    response = cloud.client.request(method, API + path, headers=headers, **kw)
    assert response.status_code == expect, (method, path, response.status_code, response.text)
    return response.json() if response.content else None


def members_of(cloud: CloudHarness, headers: dict, workspace_id: str) -> dict[str, str]:
    rows = call(cloud, "GET", f"/workspaces/{workspace_id}/members", headers, 200)
    return {row["user"]["email"]: row["role"] for row in rows}


def add(cloud: CloudHarness, headers: dict, workspace_id: str, email: str, role: str, **extra):
    body = {"email": email, "role": role, **extra}
    return call(cloud, "POST", f"/workspaces/{workspace_id}/members", headers, 201, json=body)


@pytest.fixture
def team(cloud: CloudHarness) -> dict[str, Any]:
    """The owner's workspace with an admin and a member, each able to sign in."""
    owner = cloud.login()
    ws = cloud.workspace_id
    admin = add(cloud, owner, ws, "admin@example.com", "admin", password=PASSWORD)
    member = add(cloud, owner, ws, "member@example.com", "member", password=PASSWORD)
    return {
        "ws": ws,
        "owner": owner,
        "owner_id": call(cloud, "GET", "/auth/whoami", owner, 200)["user"]["id"],
        "admin": cloud.login("admin@example.com", PASSWORD),
        "admin_id": admin["user"]["id"],
        "member": cloud.login("member@example.com", PASSWORD),
        "member_id": member["user"]["id"],
    }


def test_owner_adds_lists_changes_and_removes(cloud: CloudHarness, team: dict) -> None:
    ws, owner = team["ws"], team["owner"]
    assert members_of(cloud, owner, ws) == {
        cloud.owner_email: "owner",
        "admin@example.com": "admin",
        "member@example.com": "member",
    }
    changed = call(
        cloud, "PATCH", f"/workspaces/{ws}/members/{team['member_id']}", owner, 200,
        json={"role": "admin"},
    )  # fmt: skip
    assert changed["role"] == "admin" and changed["user"]["email"] == "member@example.com"
    call(cloud, "DELETE", f"/workspaces/{ws}/members/{team['member_id']}", owner, 204)
    assert "member@example.com" not in members_of(cloud, owner, ws)
    # The removed user's session no longer sees the workspace.
    assert call(cloud, "GET", "/workspaces", team["member"], 200) == []
    call(cloud, "GET", f"/workspaces/{ws}/members", team["member"], 404)


def test_an_existing_user_is_added_without_a_password(cloud: CloudHarness, team: dict) -> None:
    other = call(cloud, "POST", "/workspaces", team["member"], 201, json={"name": "side"})
    # member@ owns "side"; the owner of the first workspace is added there by email.
    added = add(cloud, team["member"], other["id"], cloud.owner_email, "member")
    assert added["user"]["id"] == team["owner_id"]
    # Not with a password: that would let one workspace reset another user's password.
    body = {"email": "admin@example.com", "password": "a new password"}
    answer = call(cloud, "POST", f"/workspaces/{other['id']}/members", team["member"], 409,
                  json=body)  # fmt: skip
    assert answer["error"]["code"] == "conflict"
    cloud.login("admin@example.com", PASSWORD)  # unchanged
    # Unknown email and no password: nothing to add.
    answer = call(cloud, "POST", f"/workspaces/{other['id']}/members", team["member"], 422,
                  json={"email": "nobody@example.com"})  # fmt: skip
    assert "give a password" in answer["error"]["message"]
    # Twice: a conflict.
    call(cloud, "POST", f"/workspaces/{other['id']}/members", team["member"], 409,
         json={"email": cloud.owner_email})  # fmt: skip


def test_roles_limit_who_manages_whom(cloud: CloudHarness, team: dict) -> None:
    ws = team["ws"]
    path = f"/workspaces/{ws}/members"
    # A member can list, not change.
    assert len(members_of(cloud, team["member"], ws)) == 3
    call(cloud, "POST", path, team["member"], 403, json={"email": "x@example.com",
                                                          "password": PASSWORD})  # fmt: skip
    call(cloud, "DELETE", f"{path}/{team['admin_id']}", team["member"], 403)
    # An admin manages members and admins, not owners.
    add(cloud, team["admin"], ws, "new@example.com", "member", password=PASSWORD)
    call(cloud, "POST", path, team["admin"], 403,
         json={"email": "boss@example.com", "role": "owner", "password": PASSWORD})  # fmt: skip
    call(cloud, "PATCH", f"{path}/{team['member_id']}", team["admin"], 403, json={"role": "owner"})
    call(cloud, "PATCH", f"{path}/{team['owner_id']}", team["admin"], 403, json={"role": "member"})
    call(cloud, "DELETE", f"{path}/{team['owner_id']}", team["admin"], 403)
    # Anyone may leave.
    call(cloud, "DELETE", f"{path}/{team['member_id']}", team["member"], 204)


def test_the_last_owner_stays(cloud: CloudHarness, team: dict) -> None:
    ws, owner, path = team["ws"], team["owner"], f"/workspaces/{team['ws']}/members"
    for method, kw in (("PATCH", {"json": {"role": "admin"}}), ("DELETE", {})):
        answer = call(cloud, method, f"{path}/{team['owner_id']}", owner, 409, **kw)
        assert "at least one owner" in answer["error"]["message"]
    # With a second owner, the first may step down.
    call(cloud, "PATCH", f"{path}/{team['admin_id']}", owner, 200, json={"role": "owner"})
    call(cloud, "PATCH", f"{path}/{team['owner_id']}", owner, 200, json={"role": "member"})
    assert members_of(cloud, owner, ws)[cloud.owner_email] == "member"


def test_workspaces_do_not_see_each_others_members(cloud: CloudHarness, team: dict) -> None:
    theirs = call(cloud, "POST", "/workspaces", team["member"], 201, json={"name": "B"})
    b = theirs["id"]
    # The first workspace's owner is not in B: B's members, and B itself, are 404 to them.
    for method, path, kw in (
        ("GET", f"/workspaces/{b}/members", {}),
        ("POST", f"/workspaces/{b}/members", {"json": {"email": "a@example.com"}}),
        ("PATCH", f"/workspaces/{b}/members/{team['member_id']}", {"json": {"role": "admin"}}),
        ("DELETE", f"/workspaces/{b}/members/{team['member_id']}", {}),
    ):
        answer = call(cloud, method, path, team["owner"], 404, **kw)
        assert team["member_id"] not in str(answer)
    # An API token of workspace A cannot reach B's members even if its creator is in B.
    token = call(
        cloud,
        "POST",
        "/tokens",
        team["member"],
        201,
        json={"workspace_id": team["ws"], "name": "a", "scopes": ["members:read"]},
    )
    bearer = {"Authorization": f"Bearer {token['token']}"}  # fmt: skip
    call(cloud, "GET", f"/workspaces/{b}/members", bearer, 404)
    assert len(members_of(cloud, bearer, team["ws"])) == 3


def test_member_scopes(cloud: CloudHarness, team: dict) -> None:
    def token(scopes: list[str]) -> dict[str, str]:
        made = call(
            cloud,
            "POST",
            "/tokens",
            team["owner"],
            201,
            json={"workspace_id": team["ws"], "name": "t", "scopes": scopes},
        )
        return {"Authorization": f"Bearer {made['token']}"}  # fmt: skip

    path = f"/workspaces/{team['ws']}/members"
    reader, writer = token(["members:read"]), token(["members:write"])
    call(cloud, "GET", path, token(["projects:read"]), 403)
    call(cloud, "GET", path, reader, 200)
    call(cloud, "PATCH", f"{path}/{team['member_id']}", reader, 403, json={"role": "admin"})
    call(cloud, "GET", path, writer, 200)  # write implies read
    call(cloud, "PATCH", f"{path}/{team['member_id']}", writer, 200, json={"role": "admin"})


def test_change_password_ends_other_sessions(cloud: CloudHarness, team: dict) -> None:
    email = "member@example.com"
    mine, other = team["member"], cloud.login(email, PASSWORD)
    body = {"current_password": "wrong", "new_password": "a brand new one"}
    answer = call(cloud, "POST", "/auth/password", mine, 422, json=body)
    assert "current_password" in answer["error"]["message"]
    call(cloud, "GET", "/auth/whoami", other, 200)  # nothing changed
    call(cloud, "POST", "/auth/password", mine, 422,
         json={"current_password": PASSWORD, "new_password": "short"})  # fmt: skip

    body = {"current_password": PASSWORD, "new_password": "a brand new one"}
    call(cloud, "POST", "/auth/password", mine, 204, json=body)
    call(cloud, "GET", "/auth/whoami", mine, 200)  # this session goes on
    call(cloud, "GET", "/auth/whoami", other, 401)  # the others end
    assert cloud.client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})\
        .status_code == 401  # fmt: skip
    cloud.login(email, "a brand new one")

    # Not with an API token.
    made = call(
        cloud,
        "POST",
        "/tokens",
        mine,
        201,
        json={"workspace_id": team["ws"], "name": "t", "scopes": ["members:read"]},
    )
    bearer = {"Authorization": f"Bearer {made['token']}"}  # fmt: skip
    body = {"current_password": "a brand new one", "new_password": "and another one"}
    call(cloud, "POST", "/auth/password", bearer, 403, json=body)
