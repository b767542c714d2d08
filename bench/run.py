"""Fusebox beside the Node reference server (@durable-streams/server 0.3.7, file-backed).

One command per scenario, run by hand from the repository root:

    uv run python bench/run.py appends    # 100 B appends over 1,000 streams, wrk c64 and c256
    uv run python bench/run.py catchup    # catch-up read of a 100 MiB stream
    uv run python bench/run.py fanout     # 5k and 10k long-poll waiters, one append; RSS
    uv run python bench/run.py all        # the three above, in that order
    uv run --with py-spy python bench/run.py profile   # py-spy of our server under c64 appends

Each round starts a server on a fresh temporary data directory, builds its data, warms
up, measures, and stops the server (by PID, also on error). Rounds alternate between the
servers (ours, Node, ours, ...); 3 rounds each by default, and the summary gives medians and
the ratio. Raw results go to bench/results/<scenario>-<time>.json (git-ignored).

Needs wrk (installed with apt-get when missing and running as root), Node 20 and the npm
packages in tests/node (installed with `npm ci` when missing). Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from harness import (
    BENCH,
    HOST,
    ROOT,
    ServerProcess,
    Source,
    log,
    median,
    raise_interrupt,
    stop_all,
    stop_process,
    track,
    wait_quiet,
)
from procstat import machine_ticks, thread_cpu_seconds, tree_cpu_seconds, tree_rss_kib

RESULTS = BENCH / "results"
NODE_DIR = ROOT / "tests" / "node"
NODE_PACKAGE = NODE_DIR / "node_modules" / "@durable-streams" / "server"
SERVERS = ("fusebox", "node")
STREAM_PREFIX = "/v1/stream/bench-"
MiB = 1024 * 1024
# A measurement during which processes other than the server and our client used more
# than this share of one core is marked noisy and repeated (--retries).
NOISE_LIMIT_PCT = 25.0


def fusebox_has_subscriptions() -> bool:
    return (Source.snapshot() / "fusebox" / "streams" / "subscriptions.py").exists()


class Server(ServerProcess):
    """One benchmarked server process on its own fresh data directory."""

    def __init__(self, kind: str, long_poll_timeout: float, keep: bool = False) -> None:
        super().__init__(f"fusebox-bench-{kind}-", keep)
        self.kind = kind
        self.long_poll_timeout = long_poll_timeout

    def command(self) -> list[str]:
        if self.kind == "fusebox":
            command = [
                sys.executable,
                "-m",
                "fusebox",
                "streams",
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--long-poll-timeout",
                str(self.long_poll_timeout),
            ]
            if not fusebox_has_subscriptions():
                # fusebox.streams.subscriptions is missing; the default would not start.
                command.append("--no-subscriptions")
            return command
        return [
            "node",
            str(BENCH / "node_reference_server.mjs"),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--long-poll-timeout-ms",
            str(int(self.long_poll_timeout * 1000)),
        ]

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True)
        env = dict(os.environ)
        if self.kind == "fusebox":
            env["PYTHONPATH"] = str(Source.snapshot())
        proc = self.spawn(self.command(), env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log_tail()}")
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                connection.request("HEAD", "/v1/stream/__bench_probe")
                connection.getresponse().read()
                connection.close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start in 30 s:\n{self.log_tail()}")


@contextlib.contextmanager
def running(kind: str, long_poll_timeout: float = 30.0, keep: bool = False) -> Iterator[Server]:
    server = Server(kind, long_poll_timeout, keep)
    try:
        server.start()
        log(f"{kind} up on port {server.port} (pid {server.pid}, data {server.data_dir})")
        yield server
    finally:
        server.stop()


# -- plain HTTP helpers (set-up and checks, not measured) ---------------------------------------


class Http:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=60)

    def request(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        self.connection.request(method, path, body=body or None, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, response, data

    def close(self) -> None:
        self.connection.close()


def _position(offset: str | None) -> int:
    if not offset:
        raise RuntimeError("response had no Stream-Next-Offset")
    return int(offset.rsplit("_", 1)[1])


def create_streams(port: int, count: int, prefix: str = STREAM_PREFIX) -> None:
    client = Http(port)
    try:
        for i in range(count):
            status, _, _ = client.request("PUT", f"{prefix}{i}", content_type=OCTETS)
            if status not in (200, 201):
                raise RuntimeError(f"PUT {prefix}{i} answered {status}")
    finally:
        client.close()


def bytes_per_append(port: int, body_bytes: int) -> int:
    """How far one append of `body_bytes` moves the offset (Node adds 5 bytes of framing)."""
    client = Http(port)
    try:
        client.request("PUT", "/v1/stream/bench-calibration", content_type=OCTETS)
        status, response, _ = client.request(
            "POST", "/v1/stream/bench-calibration", b"c" * body_bytes, OCTETS
        )
        if status // 100 != 2:
            raise RuntimeError(f"calibration append answered {status}")
        return _position(response.getheader("Stream-Next-Offset"))
    finally:
        client.close()


def stored_bytes(port: int, count: int, prefix: str = STREAM_PREFIX) -> int:
    client = Http(port)
    total = 0
    try:
        for i in range(count):
            status, response, _ = client.request("HEAD", f"{prefix}{i}")
            if status != 200:
                raise RuntimeError(f"HEAD {prefix}{i} answered {status}")
            total += _position(response.getheader("Stream-Next-Offset"))
    finally:
        client.close()
    return total


OCTETS = "application/octet-stream"


# -- measurement helpers ----------------------------------------------------------------------


class CpuWindow:
    """CPU used by the server tree, by our reaped children, and by the machine."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CpuWindow:
        self._wall = time.perf_counter()
        self._server = tree_cpu_seconds(self.server_pid)
        self._threads = thread_cpu_seconds(self.server_pid)
        self._machine = machine_ticks()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = usage.ru_utime + usage.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.server = tree_cpu_seconds(self.server_pid) - self._server
        threads = thread_cpu_seconds(self.server_pid)
        self.threads = {
            name: round(100 * (seconds - self._threads.get(name, 0.0)) / self.wall, 1)
            for name, seconds in threads.items()
            if seconds - self._threads.get(name, 0.0) > 0
        }
        busy, total, steal = machine_ticks()
        total_delta = max(1, total - self._machine[1])
        cpus = os.cpu_count() or 1
        self.machine_busy_pct = 100.0 * cpus * (busy - self._machine[0]) / total_delta
        self.steal_pct = 100.0 * cpus * (steal - self._machine[2]) / total_delta
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = usage.ru_utime + usage.ru_stime - self._children
        # CPU that neither the server nor our (reaped) client used: someone else's load.
        self.foreign_pct = self.machine_busy_pct - 100 * (self.server + self.children) / self.wall

    @property
    def noisy(self) -> bool:
        return self.foreign_pct > NOISE_LIMIT_PCT

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall, 3),
            "foreign_cpu_pct": round(self.foreign_pct, 1),
            "server_cpu_pct": round(100 * self.server / self.wall, 1),
            "server_threads_cpu_pct": self.threads,
            "reaped_children_cpu_pct": round(100 * self.children / self.wall, 1),
            "machine_process_busy_pct": round(self.machine_busy_pct, 1),
            "steal_pct": round(self.steal_pct, 2),
        }


# -- scenario 1: appends ----------------------------------------------------------------------


def run_wrk(server: Server, connections: int, seconds: float, streams: int) -> dict:
    env = {
        **os.environ,
        "BENCH_STREAMS": str(streams),
        "BENCH_PREFIX": STREAM_PREFIX,
        "BENCH_BODY_BYTES": "100",
    }
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "append.lua"),
        f"http://{HOST}:{server.port}",
    ]
    with CpuWindow(server.pid) as cpu:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["non2xx"]
    rate = ok / seconds_run
    return {
        "connections": connections,
        "appends_per_s": round(rate, 1),
        "requests": raw["requests"],
        "ok_2xx": ok,
        "non2xx": raw["non2xx"],
        "non2xx_by_status": raw["non2xx_by_status"],
        "socket_errors": raw["errors"],
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "p999_ms": raw["latency_us"]["p999"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
        "cpu": cpu.as_dict(),
        "wrk_cpu_pct": round(100 * cpu.children / cpu.wall, 1),
        "server_cpu_us_per_append": round(cpu.server * 1e6 / ok, 1) if ok else None,
        "valid": raw["non2xx"] == 0 and sum(raw["errors"].values()) == 0,
    }


def appends_round(kind: str, args: argparse.Namespace) -> dict:
    with running(kind, keep=args.keep) as server:
        started = time.monotonic()
        create_streams(server.port, args.streams)
        setup_seconds = time.monotonic() - started
        per_append = bytes_per_append(server.port, 100)
        result: dict = {"server": kind, "create_streams_s": round(setup_seconds, 2)}
        acknowledged = 0
        slack = 0
        for connections in args.connections:
            warm = run_wrk(server, connections, args.warmup, args.streams)
            measured = run_wrk(server, connections, args.duration, args.streams)
            acknowledged += warm["ok_2xx"] + measured["ok_2xx"]
            slack += 2 * connections
            measured["warmup_appends_per_s"] = warm["appends_per_s"]
            result[f"c{connections}"] = measured
            log(
                f"  {kind} c{connections}: {measured['appends_per_s']:,.0f}/s "
                f"p50 {measured['p50_ms']:.2f} p99 {measured['p99_ms']:.2f} ms, "
                f"non-2xx {measured['non2xx']}, server CPU {measured['cpu']['server_cpu_pct']}%"
            )
        stored = stored_bytes(server.port, args.streams) // per_append
        # Every acknowledged append must be stored; requests cut off when wrk stopped
        # may be stored without having been counted.
        result["durability_check"] = {
            "acknowledged": acknowledged,
            "stored": stored,
            "ok": acknowledged <= stored <= acknowledged + slack,
        }
        result["rss_kib_after"] = tree_rss_kib(server.pid)
        measured_cpu = [result[f"c{c}"]["cpu"]["foreign_cpu_pct"] for c in args.connections]
        result["foreign_cpu_pct_max"] = max(measured_cpu)
        result["noisy"] = result["foreign_cpu_pct_max"] > args.noise_limit
        return result


def summarize_appends(rounds: list[dict], args: argparse.Namespace) -> dict:
    summary: dict = {}
    for connections in args.connections:
        key = f"c{connections}"
        per_server = {}
        for kind in args.servers:
            runs = [r[key] for r in rounds if r["server"] == kind]
            per_server[kind] = {
                "appends_per_s": median([r["appends_per_s"] for r in runs]),
                "appends_per_s_all": [r["appends_per_s"] for r in runs],
                "p50_ms": median([r["p50_ms"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]),
                "non2xx_total": sum(r["non2xx"] for r in runs),
                "server_cpu_pct": median([r["cpu"]["server_cpu_pct"] for r in runs]),
                "wrk_cpu_pct": median([r["wrk_cpu_pct"] for r in runs]),
                "server_cpu_us_per_append": median([r["server_cpu_us_per_append"] for r in runs]),
                "machine_process_busy_pct": median(
                    [r["cpu"]["machine_process_busy_pct"] for r in runs]
                ),
                "foreign_cpu_pct_max": max(r["cpu"]["foreign_cpu_pct"] for r in runs),
                "steal_pct_max": max(r["cpu"]["steal_pct"] for r in runs),
                "all_valid": all(r["valid"] for r in runs),
                "durability_ok": all(
                    r["durability_check"]["ok"] for r in rounds if r["server"] == kind
                ),
            }
        if "fusebox" in per_server and "node" in per_server:
            ours, theirs = per_server["fusebox"], per_server["node"]
            per_server["ratio_appends"] = _ratio(ours["appends_per_s"], theirs["appends_per_s"])
        summary[key] = per_server
    return summary


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if not ours or not theirs:
        return None
    return round(ours / theirs, 2)


def print_appends(summary: dict, args: argparse.Namespace) -> None:
    print("\n## Appends: 100 B POSTs to a random one of 1,000 streams, wrk -t1, medians")
    print("| conns | server | appends/s | p50 ms | p99 ms | non-2xx | server CPU | wrk CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for connections in args.connections:
        block = summary[f"c{connections}"]
        for kind in args.servers:
            s = block[kind]
            print(
                f"| c{connections} | {kind} | {s['appends_per_s']:,.0f} | {s['p50_ms']:.2f} | "
                f"{s['p99_ms']:.2f} | {s['non2xx_total']} | {s['server_cpu_pct']}% | "
                f"{s['wrk_cpu_pct']}% |"
            )
        if block.get("ratio_appends") is not None:
            print(f"| c{connections} | ratio fusebox/node | {block['ratio_appends']}x | | | | | |")


# -- scenario 2: catch-up reads ---------------------------------------------------------------


def catchup_round(kind: str, args: argparse.Namespace) -> dict:
    with running(kind, keep=args.keep) as server:
        client = Http(server.port)
        path = "/v1/stream/catchup"
        try:
            status, _, _ = client.request("PUT", path, content_type=OCTETS)
            if status not in (200, 201):
                raise RuntimeError(f"PUT {path} answered {status}")
            body = os.urandom(MiB)
            started = time.perf_counter()
            for _ in range(args.stream_mib):
                status, _, _ = client.request("POST", path, body, OCTETS)
                if status // 100 != 2:
                    raise RuntimeError(f"1 MiB append answered {status}")
            build_seconds = time.perf_counter() - started
        finally:
            client.close()
        expected = args.stream_mib * MiB
        command = [
            sys.executable,
            str(BENCH / "catchup_client.py"),
            "read",
            "--port",
            str(server.port),
            "--path",
            path,
            "--reads",
            str(args.reads + 1),
            "--expect-bytes",
            str(expected),
        ]
        with CpuWindow(server.pid) as cpu:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"catch-up client failed:\n{done.stdout}\n{done.stderr}")
        reads = json.loads(done.stdout)["reads"][1:]  # the first read is a warm-up
        rates = [r["mb_per_s"] for r in reads]
        result = {
            "server": kind,
            "stream_bytes": expected,
            "build_mb_per_s": round(expected / build_seconds / 1e6, 1),
            "reads": reads,
            "mb_per_s": median(rates),
            "requests_per_read": reads[0]["requests"],
            "client_cpu_share": median([r["client_cpu_s"] / r["seconds"] for r in reads]),
            "cpu_all_reads": cpu.as_dict(),
            "rss_kib_after": tree_rss_kib(server.pid),
            "foreign_cpu_pct_max": round(cpu.foreign_pct, 1),
            "noisy": cpu.foreign_pct > args.noise_limit,
        }
        log(
            f"  {kind}: catch-up median {result['mb_per_s']:,.0f} MB/s over {len(reads)} reads "
            f"({result['requests_per_read']} requests each); built at "
            f"{result['build_mb_per_s']} MB/s"
        )
        return result


def client_ceiling(args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        str(BENCH / "catchup_client.py"),
        "ceiling",
        "--bytes",
        str(args.stream_mib * MiB),
        "--reads",
        str(args.reads + 1),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    reads = json.loads(done.stdout)["reads"][1:]
    result = {
        "reads": reads,
        "mb_per_s": median([r["mb_per_s"] for r in reads]),
        "client_cpu_share": median([r["client_cpu_s"] / r["seconds"] for r in reads]),
    }
    log(f"  client ceiling (in-memory Python sender): {result['mb_per_s']:,.0f} MB/s")
    return result


def summarize_catchup(rounds: list[dict], args: argparse.Namespace, ceiling: dict) -> dict:
    summary: dict = {"client_ceiling_mb_per_s": ceiling["mb_per_s"]}
    for kind in args.servers:
        runs = [r for r in rounds if r["server"] == kind]
        summary[kind] = {
            "mb_per_s": median([r["mb_per_s"] for r in runs]),
            "mb_per_s_all": [round(r["mb_per_s"], 1) for r in runs],
            "client_cpu_share": median([r["client_cpu_share"] for r in runs]),
            "server_cpu_pct": median([r["cpu_all_reads"]["server_cpu_pct"] for r in runs]),
            "requests_per_read": runs[0]["requests_per_read"],
            "build_mb_per_s": median([r["build_mb_per_s"] for r in runs]),
        }
    if "fusebox" in summary and "node" in summary:
        summary["ratio"] = _ratio(summary["fusebox"]["mb_per_s"], summary["node"]["mb_per_s"])
    return summary


def print_catchup(summary: dict, args: argparse.Namespace) -> None:
    print(f"\n## Catch-up read of a {args.stream_mib} MiB stream from offset -1, medians")
    print("| server | MB/s (10^6) | requests/read | server CPU | client CPU | build MB/s |")
    print("|---|---|---|---|---|---|")
    for kind in args.servers:
        s = summary[kind]
        print(
            f"| {kind} | {s['mb_per_s']:,.0f} | {s['requests_per_read']} | "
            f"{s['server_cpu_pct']}% | {100 * s['client_cpu_share']:.0f}% | "
            f"{s['build_mb_per_s']:,.0f} |"
        )
    if summary.get("ratio") is not None:
        print(f"| ratio fusebox/node | {summary['ratio']}x | | | | |")
    print(f"| client ceiling | {summary['client_ceiling_mb_per_s']:,.0f} | | | | |")


# -- scenario 3: long-poll fan-out ------------------------------------------------------------


def fanout_round(kind: str, args: argparse.Namespace) -> dict:
    with running(kind, long_poll_timeout=args.long_poll_timeout, keep=args.keep) as server:
        command = [
            sys.executable,
            str(BENCH / "fanout_client.py"),
            "--port",
            str(server.port),
            "--server-pid",
            str(server.pid),
            "--counts",
            ",".join(str(n) for n in args.waiters),
            "--timeout",
            str(min(100.0, args.long_poll_timeout - 10)),
        ]
        with CpuWindow(server.pid) as cpu:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=1200, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"fan-out client failed:\n{done.stdout}\n{done.stderr}")
        result = {
            "server": kind,
            **json.loads(done.stdout),
            "cpu_whole_round": cpu.as_dict(),
            "foreign_cpu_pct_max": round(cpu.foreign_pct, 1),
            "noisy": cpu.foreign_pct > args.noise_limit,
        }
        for r in result["rounds"]:
            latency = r["latency_ms"]
            log(
                f"  {kind} {r['waiters']} waiters: {r['ok']} ok, p50/p99/max "
                f"{latency['p50']:.0f}/{latency['p99']:.0f}/{latency['max']:.0f} ms, "
                f"registered in {r['register_seconds']:.1f} s, "
                f"RSS {r['rss_kib_idle_waiters'] / 1024:.0f} MiB"
            )
        return result


def summarize_fanout(rounds: list[dict], args: argparse.Namespace) -> dict:
    summary: dict = {}
    for kind in args.servers:
        runs = [r for r in rounds if r["server"] == kind]
        entry: dict = {"rss_mib_no_waiters": median([r["rss_kib_no_waiters"] / 1024 for r in runs])}
        for n in args.waiters:
            at_n = [next(x for x in r["rounds"] if x["waiters"] == n) for r in runs]
            entry[str(n)] = {
                "p50_ms": median([x["latency_ms"]["p50"] for x in at_n]),
                "p99_ms": median([x["latency_ms"]["p99"] for x in at_n]),
                "max_ms": median([x["latency_ms"]["max"] for x in at_n]),
                "p99_ms_all": [round(x["latency_ms"]["p99"], 1) for x in at_n],
                "all_answered": all(x["ok"] == n for x in at_n),
                "answered_before_append": sum(x["answered_before_append"] for x in at_n),
                "register_s": median([x["register_seconds"] for x in at_n]),
                "rss_mib_idle": median([x["rss_kib_idle_waiters"] / 1024 for x in at_n]),
                "append_ack_ms": median([x["append_ack_ms"] for x in at_n]),
                "client_cpu_ms": median([x["client_cpu_ms"] for x in at_n]),
                "server_cpu_ms": median([x["server_cpu_ms"] for x in at_n]),
            }
        summary[kind] = entry
    if "fusebox" in summary and "node" in summary:
        summary["ratio_p99_node_over_fusebox"] = {
            str(n): _ratio(summary["node"][str(n)]["p99_ms"], summary["fusebox"][str(n)]["p99_ms"])
            for n in args.waiters
        }
    return summary


def print_fanout(summary: dict, args: argparse.Namespace) -> None:
    print("\n## Long-poll fan-out: N waiters on one stream, one append, medians")
    print("| server | N | p50 ms | p99 ms | max ms | all answered | register s | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.servers:
        s = summary[kind]
        print(f"| {kind} | 0 | | | | | | {s['rss_mib_no_waiters']:.0f} |")
        for n in args.waiters:
            x = s[str(n)]
            print(
                f"| {kind} | {n} | {x['p50_ms']:.0f} | {x['p99_ms']:.0f} | {x['max_ms']:.0f} | "
                f"{x['all_answered']} | {x['register_s']:.1f} | {x['rss_mib_idle']:.0f} |"
            )
    ratios = summary.get("ratio_p99_node_over_fusebox")
    if ratios:
        print("p99 ratio node/fusebox: " + ", ".join(f"N={n}: {r}x" for n, r in ratios.items()))


# -- profile ----------------------------------------------------------------------------------


def profile(args: argparse.Namespace) -> dict:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy not found: run `uv run --with py-spy python bench/run.py profile`")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw_path = RESULTS / f"profile-{stamp}.txt"
    svg_path = RESULTS / f"profile-{stamp}.svg"
    connections = args.connections[0]
    wait_quiet(args.quiet_below, args.quiet_wait)
    with running("fusebox", keep=args.keep) as server:
        server_pid = server.pid
        create_streams(server.port, args.streams)
        run_wrk(server, connections, args.warmup, args.streams)
        plain = run_wrk(server, connections, args.duration, args.streams)
        results = {}
        for fmt, path in (("raw", raw_path), ("flamegraph", svg_path)):
            spy = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(int(args.duration)),
                    "--rate",
                    "250",
                    "--threads",
                    *(["--native"] if args.native else ["--nonblocking"]),
                    "--format",
                    fmt,
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            track(spy)
            try:
                time.sleep(0.5)
                results[fmt] = run_wrk(server, connections, args.duration, args.streams)
                spy.wait(args.duration + 60)
            finally:
                stop_process(spy)
    stacks = _read_collapsed(raw_path)
    ok = plain["ok_2xx"]
    threads = plain["cpu"]["server_threads_cpu_pct"]
    main_pct = next((v for k, v in threads.items() if k.endswith(f":{server_pid}")), None)
    main_us = None
    if ok and main_pct is not None:
        main_us = round(main_pct / 100 * plain["cpu"]["wall_s"] * 1e6 / ok, 1)
    return {
        "connections": connections,
        "native": args.native,
        "without_profiler": plain,
        "with_profiler": results["raw"],
        "main_thread_cpu_us_per_append": main_us,
        "raw": str(raw_path.relative_to(ROOT)),
        "flamegraph": str(svg_path.relative_to(ROOT)),
        **_profile_tables(stacks, main_us, args.native),
    }


def _read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames_text, _, count = line.rpartition(" ")
        if frames_text and count.isdigit():
            stacks.append((frames_text.split(";"), int(count)))
    return stacks


def _is_python(frame: str) -> bool:
    return ".py:" in frame or "(<frozen" in frame


# Frames of the process start-up chain (runpy, typer, asyncio.run): in most samples.
_STARTUP = ("runpy", "typer/", "click/", "fusebox/cli/", "fusebox/__main__", "asyncio/runners.py")
_IN_LOOP = "(uvloop and C code under the loop: polling, socket I/O, dispatch)"


def _frame_name(frame: str) -> str:
    # "function (module/path.py:123)" -> "function (module/path.py)"; drop line numbers.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(Path(where).parts[-2:]) if where else ""
    return f"{name} ({short})" if short else name


def _profile_tables(
    stacks: list[tuple[list[str], int]], us_per_append: float | None, native: bool
) -> dict:
    """Where the event-loop thread's samples go, and what the WAL thread does."""
    by_thread: dict[str, int] = {}
    for frames, count in stacks:
        by_thread[frames[0]] = by_thread.get(frames[0], 0) + count
    main_thread = next((t for t in by_thread if "MainThread" in t), "")
    main = [(frames[1:], count) for frames, count in stacks if frames[0] == main_thread]
    total = sum(count for _, count in main) or 1
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    for frames, count in main:
        python = [
            _frame_name(f) for f in frames if _is_python(f) and not any(s in f for s in _STARTUP)
        ]
        innermost = python[-1] if python else _IN_LOOP
        own[innermost] = own.get(innermost, 0) + count
        for name in set(python):
            inclusive[name] = inclusive.get(name, 0) + count
        if frames:
            name = _frame_name(frames[-1])
            leaf[name] = leaf.get(name, 0) + count

    def table(counts: dict[str, int], denominator: int, us: float | None) -> list[dict]:
        rows = []
        for name, count in sorted(counts.items(), key=lambda kv: -kv[1])[:30]:
            share = count / denominator
            row = {"function": name, "share": round(share, 4)}
            if us:
                row["us_per_append"] = round(share * us, 2)
            rows.append(row)
        return rows

    tables = {
        "samples_by_thread": by_thread,
        "main_thread": main_thread,
        "self": table(own, total, us_per_append),
        "inclusive": table(inclusive, total, us_per_append),
    }
    if native:
        tables["leaf"] = table(leaf, total, us_per_append)
    writer: dict[str, int] = {}
    writer_total = 0
    for frames, count in stacks:
        if "fusebox-wal" not in frames[0]:
            continue
        python = [_frame_name(f) for f in frames[1:] if _is_python(f)]
        key = python[-1] if python else "?"
        if key.startswith("_worker ("):
            key += " (waiting for work)"
        if not _is_python(frames[-1]):
            key += " | " + _frame_name(frames[-1])
        writer[key] = writer.get(key, 0) + count
        writer_total += count
    if writer_total:
        tables["wal_thread"] = table(writer, writer_total, None)
    return tables


def print_profile(report: dict) -> None:
    plain = report["without_profiler"]
    print(
        f"\n## Profile of fusebox under c{report['connections']} appends: "
        f"{plain['appends_per_s']:,.0f}/s without the profiler, "
        f"{report['with_profiler']['appends_per_s']:,.0f}/s with it"
    )
    print(
        f"server CPU {plain['cpu']['server_cpu_pct']}% of a core = "
        f"{plain['server_cpu_us_per_append']} us/append; per thread (% of a core): "
        f"{plain['cpu']['server_threads_cpu_pct']}; event-loop thread "
        f"{report['main_thread_cpu_us_per_append']} us/append"
    )
    print(f"py-spy samples by thread: {report['samples_by_thread']}")
    titles = {
        "self": "event-loop thread, by innermost Python function",
        "inclusive": "event-loop thread, inclusive (start-up frames left out)",
        "leaf": "event-loop thread, by innermost frame including C (--native)",
        "wal_thread": "WAL writer thread: innermost Python function | innermost frame",
    }
    for key, title in titles.items():
        if key not in report:
            continue
        print(f"\n### {title}")
        print("| share | us/append | function |")
        print("|---|---|---|")
        for row in report[key][:25]:
            us = row.get("us_per_append", "")
            print(f"| {100 * row['share']:.1f}% | {us} | {row['function']} |")
    print(f"\nraw stacks: {report['raw']}; flame graph: {report['flamegraph']}")


# -- environment and entry point ----------------------------------------------------------------


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def environment() -> dict:
    def node_package_version(name: str) -> str:
        try:
            package = NODE_DIR / "node_modules" / name / "package.json"
            return json.loads(package.read_text())["version"]
        except (OSError, ValueError, KeyError):
            return "missing"

    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as file:
        cpu_model = next(
            (ln.split(":", 1)[1].strip() for ln in file if ln.startswith("model name")),
            "unknown",
        )
    memory = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as file:
        memory = file.readline().split(":", 1)[1].strip()
    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    return {
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "fusebox_commit": commit + ("+dirty-src" if dirty not in ("", "unknown") else ""),
        "fusebox_src_sha256_16": Source.sha256,
        "fusebox_subscriptions": fusebox_has_subscriptions(),
        "node": _output(["node", "--version"]),
        "durable_streams_server": node_package_version("@durable-streams/server"),
        "lmdb": node_package_version("lmdb"),
        "wrk": _output(["wrk", "-v"]),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def ensure_tools(scenario: str, servers: tuple[str, ...]) -> None:
    needs_wrk = scenario in ("appends", "all", "profile")
    if needs_wrk and shutil.which("wrk") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log("wrk is missing: apt-get install -y wrk")
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        else:
            raise SystemExit("wrk is missing: install it (Debian: apt-get install -y wrk)")
    if "node" in servers and scenario != "profile":
        if shutil.which("node") is None:
            raise SystemExit("node is missing (Node 20 is needed for the reference server)")
        if not NODE_PACKAGE.exists():
            log("tests/node/node_modules is missing: npm ci")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)


def save(scenario: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{scenario}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2))
    log(f"raw results: {path.relative_to(ROOT)}")
    return path


def run_scenario(scenario: str, args: argparse.Namespace) -> dict:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    rounds: list[dict] = []
    round_function = {
        "appends": appends_round,
        "catchup": catchup_round,
        "fanout": fanout_round,
    }[scenario]
    ceiling: dict = {}
    if scenario == "catchup":
        ceiling = client_ceiling(args)
    discarded: list[dict] = []
    for index in range(args.rounds):
        for kind in args.servers:
            attempts: list[dict] = []
            for attempt in range(args.retries + 1):
                waited = wait_quiet(args.quiet_below, args.quiet_wait)
                log(f"{scenario} round {index + 1}/{args.rounds}: {kind}")
                result = {"round": index + 1, "quiet_wait_s": round(waited, 1)}
                result.update(round_function(kind, args))
                attempts.append(result)
                if not result["noisy"]:
                    break
                log(
                    f"  noisy: other processes used {result['foreign_cpu_pct_max']:.0f}% "
                    f"of a core" + ("; repeating" if attempt < args.retries else "")
                )
            # Keep the attempt least disturbed by other processes.
            best = min(attempts, key=lambda r: r["foreign_cpu_pct_max"])
            discarded.extend(r for r in attempts if r is not best)
            rounds.append(best)
    if scenario == "appends":
        summary = summarize_appends(rounds, args)
        print_appends(summary, args)
    elif scenario == "catchup":
        summary = summarize_catchup(rounds, args, ceiling)
        print_catchup(summary, args)
    else:
        summary = summarize_fanout(rounds, args)
        print_fanout(summary, args)
    payload = {
        "scenario": scenario,
        "started": started,
        "command": " ".join(["uv run python bench/run.py", *sys.argv[1:]]),
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "environment": environment(),
        "summary": summary,
        "noisy_rounds_kept": sum(1 for r in rounds if r["noisy"]),
        "rounds": rounds,
        "discarded_noisy_rounds": discarded,
    }
    if ceiling:
        payload["client_ceiling"] = ceiling
    if payload["noisy_rounds_kept"]:
        log(f"WARNING: {payload['noisy_rounds_kept']} noisy round(s) kept; see the JSON")
    save(scenario, payload)
    return payload


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fusebox vs the Node reference Durable Streams server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("scenario", choices=("appends", "catchup", "fanout", "all", "profile"))
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (default 3)")
    parser.add_argument(
        "--servers", default="fusebox,node", help="comma list of fusebox,node (default both)"
    )
    parser.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=15.0,
        help="before each round, wait until the machine uses under this %% of one core",
    )
    parser.add_argument("--quiet-wait", type=float, default=900.0, help="longest wait, s")
    parser.add_argument(
        "--noise-limit",
        type=float,
        default=NOISE_LIMIT_PCT,
        help="repeat a round if other processes used more than this %% of one core",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a noisy round")
    group = parser.add_argument_group("appends and profile")
    group.add_argument("--streams", type=int, default=1000)
    group.add_argument("--connections", type=_int_list, default=[64, 256])
    group.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    group.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    group.add_argument(
        "--native", action="store_true", help="profile: include C frames (py-spy --native)"
    )
    group = parser.add_argument_group("catchup")
    group.add_argument("--stream-mib", type=int, default=100, help="built with 1 MiB appends")
    group.add_argument("--reads", type=int, default=10, help="measured reads per round")
    group = parser.add_argument_group("fanout")
    group.add_argument("--waiters", type=_int_list, default=[5000, 10000])
    group.add_argument("--long-poll-timeout", type=float, default=120.0, help="seconds")
    args = parser.parse_args(argv)
    args.servers = tuple(s for s in args.servers.split(",") if s)
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.rounds < 1 or args.rounds > 20:
        parser.error("--rounds must be between 1 and 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    ensure_tools(args.scenario, args.servers)
    if "fusebox" in args.servers:
        log(f"measuring a copy of src/ at {Source.snapshot()} (sha256 {Source.sha256})")
    try:
        if args.scenario == "profile":
            report = profile(args)
            print_profile(report)
            save("profile", {"environment": environment(), **report})
            return 0
        scenarios = ("appends", "catchup", "fanout") if args.scenario == "all" else (args.scenario,)
        for scenario in scenarios:
            run_scenario(scenario, args)
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
