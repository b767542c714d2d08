"""What every benchmark script here needs: server processes, a frozen copy of the code under
test, a quiet machine, and medians.

`run.py` (Durable Streams) and `sync_bench.py` (Electric Sync) start servers as child
processes on fresh data directories, stop them with SIGTERM (SIGKILL after a grace period),
and never leave one running: every child is tracked and stopped at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from procstat import machine_ticks

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HOST = "127.0.0.1"

_live: dict[int, subprocess.Popen] = {}
_exit_hooks: list[Callable[[], None]] = []


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    _live.pop(proc.pid, None)


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Stop `proc` at exit if nothing stopped it before."""
    _live[proc.pid] = proc
    return proc


def untrack(proc: subprocess.Popen) -> None:
    """`proc` was stopped by other means (say, SIGINT so that it writes its output)."""
    _live.pop(proc.pid, None)


def on_exit(hook: Callable[[], None]) -> None:
    """Run `hook` at exit, after every tracked process is stopped (say, a Postgres cluster)."""
    _exit_hooks.append(hook)


def stop_all() -> None:
    """Stop every tracked process, then run the exit hooks."""
    for proc in list(_live.values()):
        stop_process(proc)
    for hook in _exit_hooks:
        with contextlib.suppress(Exception):
            hook()


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler: unwind like Ctrl-C, so that servers are stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(stop_all)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server under test: a child process with a fresh data directory and a log file."""

    def __init__(self, prefix: str, keep: bool = False) -> None:
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        return track(self.proc)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 30.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace)
            self.proc = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class Source:
    """A copy of src/ taken once per run, so every round measures the same code even if
    someone edits the working tree meanwhile (`--src` points it at another tree)."""

    directory: Path | None = None
    origin = ROOT / "src"
    sha256 = ""
    files = 0

    @classmethod
    def snapshot(cls) -> Path:
        if cls.directory is None:
            target = Path(tempfile.mkdtemp(prefix="fusebox-bench-src-")) / "src"
            shutil.copytree(cls.origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            digest = hashlib.sha256()
            for path in sorted(target.rglob("*.py")):
                digest.update(str(path.relative_to(target)).encode() + b"\0")
                digest.update(path.read_bytes())
                cls.files += 1
            cls.sha256 = digest.hexdigest()[:16]
            cls.directory = target
            atexit.register(shutil.rmtree, target.parent, True)
        return cls.directory


# -- the machine and the figures --------------------------------------------------------------


def wait_quiet(below_pct: float, max_wait: float, quiet_seconds: int = 3) -> float:
    """Wait until the machine used under `below_pct` of one core for `quiet_seconds` s.

    The machine is shared (2 cores); a test suite running beside a benchmark would
    distort it. Returns the seconds waited, or -1 if it never went quiet (measured anyway).
    """
    started = time.monotonic()
    quiet = 0
    last_note = started
    cpus = os.cpu_count() or 1
    while time.monotonic() - started < max_wait:
        before = machine_ticks()
        time.sleep(1.0)
        after = machine_ticks()
        busy = 100.0 * cpus * (after[0] - before[0]) / max(1, after[1] - before[1])
        quiet = quiet + 1 if busy < below_pct else 0
        if quiet >= quiet_seconds:
            return round(time.monotonic() - started, 1)
        if time.monotonic() - last_note > 30:
            log(f"  waiting for a quiet machine (busy {busy:.0f}% of one core)")
            last_note = time.monotonic()
    log(f"  machine never went quiet in {max_wait:.0f} s; measuring anyway (marked noisy)")
    return -1.0


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]
