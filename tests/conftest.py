"""Shared fixtures: real servers started as subprocesses, as a user would run them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from postgres import PostgresCluster, create_cluster

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it has not exited within `timeout` s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class StreamsProcess:
    """`fusebox streams serve` in a subprocess, restartable on the same data directory."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    long_poll_timeout: float = 0.5
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StreamsProcess:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        command = [
            sys.executable,
            "-m",
            "fusebox",
            "streams",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--long-poll-timeout",
            str(self.long_poll_timeout),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log_path}")
            try:
                httpx.get(f"{self.url}/v1/stream/__ready_probe", timeout=0.5)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs, as in a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 20)
            self.process = None


@pytest.fixture
def streams_server(tmp_path: Path) -> Iterator[StreamsProcess]:
    server = StreamsProcess(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.stop()


def node_available() -> bool:
    return (NODE_DIR / "node_modules").is_dir()


def run_node(script: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a Node script from tests/node (whose packages `scripts/test` installs)."""
    if not node_available():
        pytest.fail("tests/node/node_modules is missing: run scripts/test, which installs it")
    return subprocess.run(
        ["node", script],
        cwd=NODE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One real Postgres (wal_level=logical) for the whole test session."""
    cluster = create_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


# -- fixtures for the project's own suites ------------------------------------------------


def streams_process(
    data_dir: Path, *, long_poll_timeout: float = 0.5, extra_args: Sequence[str] = ()
) -> StreamsProcess:
    """A not yet started StreamsProcess with the default settings plus `extra_args`."""
    return StreamsProcess(
        data_dir, long_poll_timeout=long_poll_timeout, extra_args=list(extra_args)
    )


@pytest.fixture(scope="module")
def core_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsProcess]:
    """One server for a whole test module (long-poll timeout 0.5 s)."""
    server = streams_process(tmp_path_factory.mktemp("core") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., StreamsProcess]]:
    """Make (unstarted) servers on data dirs under tmp_path; all are killed at teardown."""
    made: list[StreamsProcess] = []

    def make(
        name: str = "data", *, long_poll_timeout: float = 0.5, extra_args: Sequence[str] = ()
    ) -> StreamsProcess:
        server = streams_process(
            tmp_path / name, long_poll_timeout=long_poll_timeout, extra_args=extra_args
        )
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.kill()


@dataclass
class SyncProcess:
    """`fusebox sync serve` in a subprocess against a real Postgres."""

    database_url: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    secret: str = "test-secret"
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_active: bool = True) -> SyncProcess:
        self.log_path = self.data_dir.parent / f"sync-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        command = [
            sys.executable, "-m", "fusebox", "sync", "serve",
            "--database-url", self.database_url,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--secret", self.secret,
            "--long-poll-timeout", "2",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sync server exited early; see {self.log_path}")
            try:
                health = httpx.get(f"{self.url}/v1/health", timeout=1)
                if not wait_active or health.json().get("status") == "active":
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sync server did not become active; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 20)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs, as in a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


@contextlib.contextmanager
def fresh_database(postgres: PostgresCluster, prefix: str = "sync") -> Iterator[str]:
    """A new database (so its own slot and publication), dropped with its slots after."""
    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"
    postgres.psql(f"CREATE DATABASE {name}")
    try:
        yield postgres.url(name)
    finally:
        postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        postgres.psql(
            f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND NOT active"
        )
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sync_database(postgres: PostgresCluster) -> Iterator[str]:
    """A fresh database (and its own slot and publication) for one test."""
    with fresh_database(postgres) as url:
        yield url


@pytest.fixture
def sync_server(sync_database: str, tmp_path: Path) -> Iterator[SyncProcess]:
    server = SyncProcess(sync_database, tmp_path / "sync-data").start()
    try:
        yield server
    finally:
        server.stop()


# -- the cloud control plane (tests/test_cloud_*.py) ------------------------------------------

import datetime  # noqa: E402 - this section was appended; the file's head is not ours to edit


@dataclass
class SettableClock:
    """The control plane's clock, moved by hand: sessions and overlaps expire on demand."""

    now: datetime.datetime = field(
        default_factory=lambda: datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    )

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


@dataclass
class CloudHarness:
    """A control plane on SQLite in tmp_path, its admin app (on a NullRuntime) and a client."""

    data_dir: Path
    control: object
    runtime: object
    app: object
    client: object
    clock: SettableClock
    owner_email: str
    owner_password: str
    workspace_id: str
    public_base_url: str = "http://127.0.0.1:3000"

    def login(self, email: str | None = None, password: str | None = None) -> dict[str, str]:
        """Authorization headers for a new session."""
        response = self.client.post(
            "/api/v1/auth/login",
            json={
                "email": email or self.owner_email,
                "password": password or self.owner_password,
            },
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def settle(self) -> None:
        """Wait for background provisioning to finish (no sleeping, no timing)."""
        self.client.portal.call(self.app.state.provisioner.wait_idle)


def fast_password_hasher():
    """Real argon2id with small costs, so tests that sign in often stay quick."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudHarness]:
    from fastapi.testclient import TestClient

    from fusebox.cloud.api import create_admin_app
    from fusebox.cloud.control import open_control_plane
    from fusebox.cloud.runtime import NullRuntime

    clock = SettableClock()
    data_dir = tmp_path / "cloud"
    control = open_control_plane(
        data_dir, environ={}, clock=clock, password_hasher=fast_password_hasher()
    )
    owner = control.bootstrap()
    runtime = NullRuntime()
    app = create_admin_app(control, runtime, "http://127.0.0.1:3000")
    with TestClient(app) as client:
        yield CloudHarness(
            data_dir=data_dir,
            control=control,
            runtime=runtime,
            app=app,
            client=client,
            clock=clock,
            owner_email=owner.email,
            owner_password=owner.password,
            workspace_id=owner.workspace_id,
        )
    control.close()


# -- `fusebox serve`, the whole platform, for the CLI tests (tests/test_cli.py) ---------------


@dataclass
class PlatformProcess:
    """`fusebox serve` in a subprocess, with the owner's one-time password from its stdout."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    owner_email: str = ""
    owner_password: str = ""
    root_options: Sequence[str] = ()  # options before `serve`, such as --log-level

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PlatformProcess:
        self.log_path = self.data_dir.parent / f"platform-{self.port}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps it open
        command = [
            sys.executable, "-m", "fusebox", *self.root_options, "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "Ctrl-C stops." in text:
                for line in text.splitlines():
                    line = line.strip()
                    if line.startswith("password: "):
                        self.owner_password = line.removeprefix("password: ")
                    elif line.startswith("fusebox auth login") and "--email " in line:
                        self.owner_email = line.split("--email ", 1)[1].split()[0]
                if not (self.owner_email and self.owner_password):
                    raise RuntimeError(f"no sign-in details on stdout; see {self.log_path}")
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"fusebox serve exited early; see {self.log_path}")
            time.sleep(0.1)
        raise RuntimeError(f"fusebox serve did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 30)
            self.process = None


@pytest.fixture(scope="session")
def fusebox_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """One `fusebox serve` (temporary data directory, a free loopback port) per session."""
    server = PlatformProcess(tmp_path_factory.mktemp("platform") / "data").start()
    try:
        yield server
    finally:
        server.stop()
