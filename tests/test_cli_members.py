"""`fusebox members` and `fusebox auth password` against a real `fusebox serve`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from test_cli import Fusebox

pytestmark = pytest.mark.timeout(300)
PASSWORD = "a long enough password"


def person(fusebox_platform: Any, tmp_path: Path, email: str, password: str = PASSWORD) -> Fusebox:
    """A user signed in with their own config directory."""
    cli = Fusebox(fusebox_platform.url, tmp_path / email)
    cli.json("auth", "login", "--email", email, "--password-stdin", input=password + "\n")
    return cli


def invite(owner: Fusebox, workspace_id: str, prefix: str) -> str:
    """A new account, added to the workspace as a member; its email."""
    email = f"{prefix}-{uuid.uuid4().hex[:6]}@example.com"
    owner.json("members", "add", "--email", email, "--password-stdin", "--workspace",
               workspace_id, input=PASSWORD + "\n")  # fmt: skip
    return email


@pytest.fixture
def workspace(fusebox_platform: Any, tmp_path: Path) -> tuple[Fusebox, str]:
    """The owner of a new workspace (signed in), and the workspace's id."""
    owner = Fusebox(fusebox_platform.url, tmp_path / "owner")
    owner.json(
        "auth", "login", "--email", fusebox_platform.owner_email, "--password-stdin",
        input=fusebox_platform.owner_password + "\n",
    )  # fmt: skip
    created = owner.json("workspaces", "create", "--name", f"team-{uuid.uuid4().hex[:6]}")
    return owner, created["id"]


def test_members_add_list_set_role_remove(
    fusebox_platform: Any, tmp_path: Path, workspace: tuple[Fusebox, str]
) -> None:
    owner, ws = workspace
    email = f"dev-{uuid.uuid4().hex[:6]}@example.com"
    added = owner.json(
        "members", "add", "--email", email, "--role", "member", "--name", "Dev",
        "--password-stdin", "--workspace", ws, input=PASSWORD + "\n",
    )  # fmt: skip
    assert added["role"] == "member" and added["user"]["email"] == email
    assert PASSWORD not in str(added)
    listed = owner.json("members", "list", "--workspace", ws)
    assert {m["user"]["email"]: m["role"] for m in listed} == {
        fusebox_platform.owner_email: "owner",
        email: "member",
    }
    # The new user signs in, sees the workspace, and cannot manage it.
    dev = person(fusebox_platform, tmp_path, email)
    assert ws in [w["id"] for w in dev.json("workspaces", "list")]
    refused = dev.fails(3, "members", "set-role", email, "--role", "admin", "--workspace", ws)
    assert "owners and admins" in refused.stderr

    changed = owner.json("members", "set-role", email, "--role", "admin", "--workspace", ws)
    assert changed["role"] == "admin"

    # Removing asks first; without a terminal, --force is required.
    owner.fails(2, "members", "remove", email, "--workspace", ws)
    assert email in [m["user"]["email"] for m in owner.json("members", "list", "--workspace", ws)]
    removed = owner.json("members", "remove", email, "--workspace", ws, "--force")
    assert removed == {"workspace_id": ws, "user_id": added["user"]["id"], "removed": True}
    assert ws not in [w["id"] for w in dev.json("workspaces", "list")]
    # Now the workspace is invisible to them, like any other they are not in.
    dev.fails(4, "members", "list", "--workspace", ws)


def test_the_last_owner_cannot_leave(workspace: tuple[Fusebox, str], fusebox_platform) -> None:
    owner, ws = workspace
    me = fusebox_platform.owner_email
    result = owner.fails(1, "members", "remove", me, "--workspace", ws, "--force", "--json")
    assert "at least one owner" in result.stderr
    result = owner.fails(1, "members", "set-role", me, "--role", "admin", "--workspace", ws)
    assert "at least one owner" in result.stderr


def test_a_member_of_one_workspace_sees_nothing_of_another(
    fusebox_platform: Any, tmp_path: Path, workspace: tuple[Fusebox, str]
) -> None:
    owner, ws = workspace
    email = invite(owner, ws, "b")
    outsider = person(fusebox_platform, tmp_path, email)
    theirs = outsider.json("workspaces", "create", "--name", "B")["id"]
    # The owner of A is not in B: every members command on B is "not found".
    owner.fails(4, "members", "list", "--workspace", theirs)
    owner.fails(4, "members", "set-role", "usr_aaaaaaaaaaaaaaaaaaaa", "--role", "admin",
                "--workspace", theirs)  # fmt: skip
    result = owner.fails(4, "members", "remove", email, "--workspace", theirs, "--force")
    assert email not in result.stdout
    assert outsider.json("members", "list", "--workspace", theirs)[0]["user"]["email"] == email


def test_auth_password_changes_it_and_ends_other_sessions(
    fusebox_platform: Any, tmp_path: Path, workspace: tuple[Fusebox, str]
) -> None:
    owner, ws = workspace
    email = invite(owner, ws, "pw")
    laptop = person(fusebox_platform, tmp_path / "laptop", email)
    phone = person(fusebox_platform, tmp_path / "phone", email)

    wrong = laptop.fails(1, "auth", "password", "--password-stdin",
                         input="not it\nbrand new password\n")  # fmt: skip
    assert "current_password" in wrong.stderr
    changed = laptop.json("auth", "password", "--password-stdin",
                          input=f"{PASSWORD}\nbrand new password\n")  # fmt: skip
    assert changed == {"changed": True}
    assert laptop.json("auth", "whoami")["user"]["email"] == email  # this session goes on
    phone.fails(3, "auth", "whoami")  # the other one has ended
    phone.fails(3, "auth", "login", "--email", email, "--password-stdin", input=PASSWORD + "\n")
    person(fusebox_platform, tmp_path / "again", email, "brand new password")
