"""Shared by tests/test_platform_*.py: a `fusebox serve` of their own (output captured to a
file), tenants built through the admin API, requests sent byte for byte over a socket, and
bounded polling (never a sleep that a result depends on).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from conftest import PlatformProcess
from postgres import PostgresCluster

T = TypeVar("T")

# Statuses a refused data-plane request may get: never a 200 with someone's data, never a 5xx.
REFUSED = frozenset({400, 401, 403, 404})


# `fusebox [root options] serve`, output in `log_path` (tests/conftest.py).
Platform = PlatformProcess


@contextmanager
def running_platform(directory: Path, *root_options: str) -> Iterator[Platform]:
    platform = Platform(directory / "data", root_options=root_options).start()
    try:
        yield platform
    finally:
        platform.stop()


def poll(check: Callable[[], T | None], *, timeout: float = 60, what: str = "a condition") -> T:
    """Call `check` until it returns something truthy; fail (not hang) after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.1)


# -- the admin API -------------------------------------------------------------------------


class Admin:
    """The admin API as the signed-in owner."""

    def __init__(self, platform: PlatformProcess) -> None:
        self.http = httpx.Client(base_url=f"{platform.url}/api/v1", timeout=60)
        login = self.http.post(
            "/auth/login",
            json={"email": platform.owner_email, "password": platform.owner_password},
        )
        assert login.status_code == 200, login.text
        self.session = login.json()["token"]
        self.http.headers["authorization"] = f"Bearer {self.session}"

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def post(self, path: str, body: Mapping[str, Any], expect: int = 201) -> Any:
        return self.call("POST", path, expect, json=dict(body))

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, 200, params=params)

    def settle(self, service_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll until the service leaves `provisioning`; return it."""

        def settled() -> dict[str, Any] | None:
            service = self.get(f"/services/{service_id}")
            return service if service["state"] != "provisioning" else None

        return poll(settled, timeout=timeout, what=f"{service_id} to settle")

    def environment(self, workspace_name: str) -> str:
        """A new workspace with a project and an environment; the environment's id."""
        workspace = self.post("/workspaces", {"name": workspace_name})
        project = self.post("/projects", {"workspace_id": workspace["id"], "name": "app"})
        environment = self.post("/environments", {"project_id": project["id"], "name": "prod"})
        return environment["id"]

    def service(self, environment_id: str, kind: str, **extra: Any) -> dict[str, Any]:
        """Create a service and wait for it to be active; the creation answer (with the
        secret) merged with the settled service."""
        created = self.post(
            "/services",
            {"environment_id": environment_id, "type": kind, "region": "local", **extra},
        )
        settled = self.settle(created["id"])
        assert settled["state"] == "active", settled
        return {**settled, "secret": created["secret"]}

    def client_token(self, service_id: str, **body: Any) -> str:
        return self.post(f"/services/{service_id}/client-tokens", body)["token"]

    def rotate(self, service_id: str, overlap_seconds: int) -> dict[str, Any]:
        return self.post(
            f"/services/{service_id}/rotate-secret",
            {"overlap_seconds": overlap_seconds},
            expect=200,
        )


# -- Postgres -------------------------------------------------------------------------------


def new_database(postgres: PostgresCluster, prefix: str, owner: str | None = None) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""))
    return name


@contextmanager
def items_database(postgres: PostgresCluster, prefix: str) -> Iterator[tuple[str, str]]:
    """(name, url) of a new database whose table `items` holds (1, 'first'), (2, 'second');
    dropped afterwards."""
    name = new_database(postgres, prefix)
    postgres.psql("CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL)", name)
    postgres.psql("INSERT INTO items VALUES (1, 'first'), (2, 'second')", name)
    try:
        yield name, postgres.url(name)
    finally:
        drop_database(postgres, name)


def drop_database(postgres: PostgresCluster, name: str) -> None:
    postgres.psql(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        f"WHERE database = '{name}' AND NOT active"
    )
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the data plane ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes = field(repr=False, default=b"")

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def raw_request(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = 30,
) -> Reply:
    """One HTTP/1.1 request with the request-target sent exactly as given (no client
    normalises `..`, `//` or percent-escapes on the way)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    return Reply(int(status_line.split()[1]), parsed, rest, data)


def query(**params: str) -> str:
    """A query string with every value percent-encoded (keys as given)."""
    return "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())


def shape_rows(body: bytes) -> list[dict[str, Any]]:
    """The row values in a shape log response."""
    return [m["value"] for m in json.loads(body) if "value" in m]


def read_shape(url: str, params: Mapping[str, str], timeout: float = 60) -> httpx.Response:
    """An initial shape request (offset -1), retried while the source answers 503 with
    retry-after, as Electric's clients do."""

    def attempt() -> httpx.Response | None:
        response = httpx.get(url, params={"offset": "-1", **params}, timeout=30)
        return None if response.status_code == 503 else response

    return poll(attempt, timeout=timeout, what="the shape to be served")
