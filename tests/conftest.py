"""Shared fixtures: real servers started as subprocesses, as a user would run them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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
