"""Shared fixtures: real servers started as subprocesses, as a user would run them."""

from __future__ import annotations

import importlib.util
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
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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

# `fusebox streams serve` serves subscriptions by default, from a module that may not be in
# the tree; the core suites then run the server with --no-subscriptions.
CORE_SERVER_ARGS: list[str] = (
    []
    if importlib.util.find_spec("fusebox.streams.subscriptions") is not None
    else ["--no-subscriptions"]
)


def streams_process(
    data_dir: Path, *, long_poll_timeout: float = 0.5, extra_args: Sequence[str] = ()
) -> StreamsProcess:
    """A not yet started StreamsProcess for the core suites (see CORE_SERVER_ARGS)."""
    return StreamsProcess(
        data_dir,
        long_poll_timeout=long_poll_timeout,
        extra_args=[*CORE_SERVER_ARGS, *extra_args],
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
    """Make (unstarted) servers on data dirs under tmp_path; all are stopped at teardown."""
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
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def sync_database(postgres: PostgresCluster) -> Iterator[str]:
    """A fresh database (and its own slot and publication) for one test."""
    name = f"sync_{os.getpid()}_{time.monotonic_ns()}"
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
def sync_server(sync_database: str, tmp_path: Path) -> Iterator[SyncProcess]:
    server = SyncProcess(sync_database, tmp_path / "sync-data").start()
    try:
        yield server
    finally:
        server.stop()
