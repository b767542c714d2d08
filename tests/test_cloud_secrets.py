"""Secrets: encryption at rest, the master key, rotation with overlap, verify_service_secret."""

from __future__ import annotations

import base64
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from conftest import CloudHarness, fast_password_hasher
from fusebox.cloud import db
from fusebox.cloud.control import open_control_plane
from fusebox.cloud.crypto import Keyring, load_master_key
from fusebox.cloud.dsn import mask_database_url, scrub
from fusebox.cloud.errors import ConfigError

API = "/api/v1"
DB_PASSWORD = "s3cr3t-db-pa55word"
PG_URL = f"postgresql://app:{DB_PASSWORD}@127.0.0.1:5432/app?sslmode=disable"


def make_service(cloud: CloudHarness, headers: dict[str, str], type: str = "postgres") -> dict:
    project = cloud.client.post(
        f"{API}/projects", json={"workspace_id": cloud.workspace_id, "name": "p"}, headers=headers
    ).json()
    environment = cloud.client.post(
        f"{API}/environments", json={"project_id": project["id"], "name": "e"}, headers=headers
    ).json()
    body = {"environment_id": environment["id"], "type": type, "region": "local"}
    if type == "postgres":
        body["database_url"] = PG_URL
    response = cloud.client.post(f"{API}/services", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def settle(cloud: CloudHarness, headers: dict[str, str], service_id: str) -> str:
    """Wait (bounded) until the service has left `provisioning`; returns its state."""
    deadline = time.monotonic() + 30
    while True:
        state = cloud.client.get(f"{API}/services/{service_id}", headers=headers).json()["state"]
        if state != "provisioning" or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def rotate(cloud: CloudHarness, headers: dict[str, str], service_id: str, overlap: int) -> str:
    response = cloud.client.post(
        f"{API}/services/{service_id}/rotate-secret",
        json={"overlap_seconds": overlap},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["secret"]


# -- at rest ------------------------------------------------------------------------------------


def test_nothing_secret_is_stored_in_plaintext(cloud: CloudHarness, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    headers = cloud.login()
    session = headers["Authorization"].removeprefix("Bearer ")
    service = make_service(cloud, headers)
    streams = make_service(cloud, headers, "streams")
    rotated = rotate(cloud, headers, service["id"], 3600)
    token = cloud.client.post(
        f"{API}/tokens",
        json={"workspace_id": cloud.workspace_id, "name": "t", "scopes": ["services:read"]},
        headers=headers,
    ).json()["token"]
    cloud.runtime.start_error = RuntimeError("boom")
    cloud.settle()
    secrets = {
        "db password": DB_PASSWORD,
        "service secret": service["secret"],
        "rotated secret": rotated,
        "streams secret": streams["secret"],
        "api token": token,
        "session token": session,
        "owner password": cloud.owner_password,
    }
    files = sorted(cloud.data_dir.glob(f"{db.DATABASE_FILE}*"))
    assert files  # control.db, and its -wal and -shm while open
    stored = b"".join(path.read_bytes() for path in files)
    # The database really holds the rows (so the test would see plaintext if it were there).
    assert service["id"].encode() in stored
    for name, value in secrets.items():
        assert value.encode() not in stored, f"{name} is in the database file in plaintext"
        assert value not in caplog.text, f"{name} was logged"
    # And it is all readable back through the API, decrypted.
    got = cloud.client.get(f"{API}/services/{service['id']}/secret", headers=headers).json()
    assert got["secret"] == rotated


def test_ciphertexts_are_bound_to_their_row(cloud: CloudHarness) -> None:
    headers = cloud.login()
    first, second = make_service(cloud, headers), make_service(cloud, headers)
    ss = db.service_secrets
    with db.writing(cloud.control.engine) as conn:
        stolen = conn.execute(ss.select().where(ss.c.service_id == first["id"])).one().secret_enc
        conn.execute(ss.update().where(ss.c.service_id == second["id"]).values(secret_enc=stolen))
    with pytest.raises(ValueError, match="does not decrypt"):
        cloud.control.resources.get_secret([cloud.workspace_id], second["id"])


def test_keyring_round_trip_and_key_rotation() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = Keyring(old).encrypt("hello", "ctx")
    assert sealed.startswith("fbx1.") and "hello" not in sealed
    assert Keyring(old).encrypt("hello", "ctx") != sealed  # a random nonce each time
    assert Keyring(old).decrypt(sealed, "ctx") == "hello"
    with pytest.raises(ValueError):
        Keyring(old).decrypt(sealed, "other ctx")
    with pytest.raises(ValueError, match="unknown key"):
        Keyring(new).decrypt(sealed, "ctx")
    # After a key rotation the old key stays for decryption; new values use the new key.
    rotated = Keyring(new, others=(old,))
    assert rotated.decrypt(sealed, "ctx") == "hello"
    assert rotated.encrypt("x", "c").split(".")[1] == Keyring(new).primary_id
    for garbage in ("", "fbx1.abc", "fbx2.x.y", "fbx1." + Keyring(old).primary_id + ".!!"):
        with pytest.raises(ValueError):
            Keyring(old).decrypt(garbage, "ctx")


def test_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    key = load_master_key(tmp_path, environ={})
    path = tmp_path / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32
    assert load_master_key(tmp_path, environ={}) == key


def test_master_key_from_environment(tmp_path: Path) -> None:
    key = os.urandom(32)
    environ = {"FUSEBOX_MASTER_KEY": base64.b64encode(key).decode()}
    assert load_master_key(tmp_path, environ) == key
    assert not (tmp_path / "master.key").exists()
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigError):
            load_master_key(tmp_path, {"FUSEBOX_MASTER_KEY": bad})


def test_a_different_master_key_cannot_read_the_secrets(tmp_path: Path) -> None:
    control = open_control_plane(tmp_path, environ={}, password_hasher=fast_password_hasher())
    owner = control.bootstrap()
    visible = [owner.workspace_id]
    project = control.resources.create_project(visible, owner.workspace_id, "p")
    environment, _ = control.resources.create_environment(visible, project["id"], "e")
    created = control.resources.create_service(visible, environment["id"], "streams", "local")
    control.close()
    (tmp_path / "master.key").unlink()
    other = open_control_plane(tmp_path, environ={}, password_hasher=fast_password_hasher())
    with pytest.raises(ValueError, match="unknown key"):
        other.resources.get_secret(visible, created.service["id"])
    other.close()


def test_masking_connection_strings() -> None:
    assert mask_database_url(PG_URL) == "postgresql://app:****@127.0.0.1:5432/app?sslmode=disable"
    assert mask_database_url("postgres://u@h/db") == "postgres://u@h/db"
    assert mask_database_url("postgresql://h/db?user=u&password=pw") == (
        "postgresql://h/db?user=u&password=****"
    )
    assert mask_database_url("postgresql://u:p%40ss@h/db") == "postgresql://u:****@h/db"
    assert scrub("failed for p@ss and p%40ss", "postgresql://u:p%40ss@h/db") == (
        "failed for **** and ****"
    )


# -- rotation and verification -------------------------------------------------------------------


def test_rotation_overlap_window(cloud: CloudHarness) -> None:
    verify = cloud.control.verify_service_secret
    headers = cloud.login()
    service = make_service(cloud, headers)
    first = service["secret"]
    assert verify(service["id"], first)
    second = rotate(cloud, headers, service["id"], 3600)
    # During the overlap both are valid.
    assert verify(service["id"], first) and verify(service["id"], second)
    cloud.clock.advance(seconds=3599)
    assert verify(service["id"], first) and verify(service["id"], second)
    # After it, only the new one.
    cloud.clock.advance(seconds=1)
    assert not verify(service["id"], first)
    assert verify(service["id"], second)


def test_rotation_without_overlap_ends_every_old_secret_now(cloud: CloudHarness) -> None:
    verify = cloud.control.verify_service_secret
    headers = cloud.login()
    service = make_service(cloud, headers)
    first = service["secret"]
    second = rotate(cloud, headers, service["id"], 3600)
    third = rotate(cloud, headers, service["id"], 0)  # e.g. the secret leaked
    assert not verify(service["id"], first)
    assert not verify(service["id"], second)
    assert verify(service["id"], third)


def test_no_old_secret_outlives_the_newest_overlap(cloud: CloudHarness) -> None:
    verify = cloud.control.verify_service_secret
    headers = cloud.login()
    service = make_service(cloud, headers)
    first = service["secret"]
    second = rotate(cloud, headers, service["id"], 3600)
    cloud.clock.advance(seconds=100)
    third = rotate(cloud, headers, service["id"], 60)
    assert all(verify(service["id"], s) for s in (first, second, third))
    cloud.clock.advance(seconds=60)
    assert not verify(service["id"], first)
    assert not verify(service["id"], second)
    assert verify(service["id"], third)


def test_verify_service_secret_rejects_what_it_should(cloud: CloudHarness) -> None:
    verify = cloud.control.verify_service_secret
    headers = cloud.login()
    one, two = make_service(cloud, headers), make_service(cloud, headers, "streams")
    assert verify(one["id"], one["secret"]) and verify(two["id"], two["secret"])
    assert not verify(one["id"], two["secret"])  # another service's secret
    assert not verify(one["id"], one["secret"][:-1])
    assert not verify(one["id"], one["secret"] + "x")
    assert not verify(one["id"], "")
    assert not verify(one["id"], "\udc80")  # not even encodable: still just False
    assert not verify("svc_aaaaaaaaaaaaaaaaaaaa", one["secret"])
    assert not verify("nonsense", one["secret"])
    assert cloud.client.delete(f"{API}/services/{one['id']}", headers=headers).status_code == 204
    assert not verify(one["id"], one["secret"])
    assert verify(two["id"], two["secret"])


def test_cached_secrets_are_dropped_on_rotation_and_delete(cloud: CloudHarness) -> None:
    resources = cloud.control.resources
    resources.secret_cache_seconds = 3600  # only invalidation can refresh the cache here
    headers = cloud.login()
    service = make_service(cloud, headers)
    # Provisioning changes the service's state in the background, and any change drops
    # what is loaded meanwhile: let it settle before looking at the cache.
    settle(cloud, headers, service["id"])
    assert resources.verify_service_secret(service["id"], service["secret"])
    assert service["id"] in resources._cache
    new = rotate(cloud, headers, service["id"], 0)
    assert resources.verify_service_secret(service["id"], new)
    assert not resources.verify_service_secret(service["id"], service["secret"])
    cloud.client.delete(f"{API}/services/{service['id']}", headers=headers)
    assert not resources.verify_service_secret(service["id"], new)


def test_another_process_sees_a_rotation(cloud: CloudHarness) -> None:
    """A second control plane on the same database (as another process would be)."""
    headers = cloud.login()
    service = make_service(cloud, headers)
    other = open_control_plane(
        cloud.data_dir,
        environ={},
        clock=cloud.clock,
        password_hasher=fast_password_hasher(),
        secret_cache_seconds=0,
    )
    try:
        assert other.verify_service_secret(service["id"], service["secret"])
        new = rotate(cloud, headers, service["id"], 0)
        assert other.verify_service_secret(service["id"], new)
        assert not other.verify_service_secret(service["id"], service["secret"])
    finally:
        other.close()
