"""Long-poll fan-out client: N waiting readers on one stream, then one append.

Run as its own process (it shares the 2 cores with the server, not its event loop):

    python bench/fanout_client.py --port P --server-pid PID --counts 5000,10000

For each N it opens N keep-alive connections, each sending
`GET /v1/stream/<name>?offset=<tail>&live=long-poll`, waits until the server has gone
idle (its process tree uses under 10% of a core for 0.5 s, read from /proc), records the
server's RSS, then writes one 100-byte POST and times, for every waiter, the interval from
writing the POST to holding the waiter's complete response. Waiters ask for the tail
offset, not `now`, so one that reached the server late still gets the appended bytes and
is timed from the same instant. Prints one JSON object on stdout.

Raw asyncio Protocols on uvloop, with the minimum of HTTP parsing, to keep the client's
own cost per response small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import sys
import time

import uvloop

from procstat import tree_cpu_seconds, tree_rss_kib


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _response_complete(buffer: bytes | bytearray) -> int | None:
    """The status once `buffer` holds one complete response, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    status = int(buffer[9:12])
    if status in (204, 304) or 100 <= status < 200:
        return status
    head = bytes(buffer[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else None])
        return status if len(buffer) - end - 4 >= length else None
    if b"transfer-encoding: chunked" in head:
        return status if buffer.endswith(b"0\r\n\r\n") else None
    return None


class Waiter(asyncio.Protocol):
    __slots__ = ("buffer", "done_at", "fanout", "status", "transport")

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.buffer = bytearray()
        self.done_at = 0.0
        self.status = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.fanout.request)

    def data_received(self, data: bytes) -> None:
        if self.done_at:
            return
        self.buffer += data
        status = _response_complete(self.buffer)
        if status is not None:
            self.done_at = time.perf_counter()
            self.status = status
            self.buffer = bytearray()
            self.fanout.finished(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done_at:
            self.fanout.lost += 1
            self.fanout.finished(self)


class Appender(asyncio.Protocol):
    """One keep-alive connection that sends the append and reads its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[tuple[float, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> asyncio.Future[tuple[float, bytes]]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.transport.write(request)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answer = self.answer
        if answer is not None and not answer.done() and _response_complete(self.buffer):
            answer.set_result((time.perf_counter(), bytes(self.buffer)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("append connection lost"))


def _header(response: bytes, name: bytes) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


class Fanout:
    def __init__(self, host: str, port: int, path: str, server_pid: int) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.server_pid = server_pid
        self.request = b""
        self.waiters: list[Waiter] = []
        self.remaining = 0
        self.lost = 0
        self.all_done: asyncio.Event | None = None

    def finished(self, waiter: Waiter) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.all_done is not None:
            self.all_done.set()

    async def wait_idle(self, deadline: float, window: float = 0.5, share: float = 0.1) -> float:
        """Seconds until the server tree used under `share` of a core over `window` s."""
        started = time.monotonic()
        samples = [(started, tree_cpu_seconds(self.server_pid))]
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            samples.append((now, tree_cpu_seconds(self.server_pid)))
            while len(samples) > 2 and now - samples[1][0] >= window:
                samples.pop(0)
            first_at, first_cpu = samples[0]
            if now - first_at >= window and samples[-1][1] - first_cpu <= share * (now - first_at):
                return now - started
        return -1.0

    async def round(
        self, n: int, tail: str, connect_parallel: int, timeout: float
    ) -> tuple[dict, str]:
        loop = asyncio.get_running_loop()
        self.request = (
            f"GET {self.path}?offset={tail}&live=long-poll HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n\r\n"
        ).encode()
        self.waiters = []
        self.remaining = n
        self.lost = 0
        self.all_done = asyncio.Event()
        limit = asyncio.Semaphore(connect_parallel)
        connect_failures = 0

        async def open_one() -> None:
            nonlocal connect_failures
            async with limit:
                waiter = Waiter(self)
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: waiter, self.host, self.port), 30
                    )
                except (OSError, TimeoutError):
                    connect_failures += 1
                    self.finished(waiter)
                    return
                self.waiters.append(waiter)

        rss_before = tree_rss_kib(self.server_pid)
        opened_at = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(n))), timeout)
        connect_seconds = time.monotonic() - opened_at
        idle_after = await self.wait_idle(time.monotonic() + min(90.0, timeout))
        register_seconds = time.monotonic() - opened_at
        rss_idle = tree_rss_kib(self.server_pid)
        early = sum(1 for w in self.waiters if w.done_at)
        # A fresh connection for the append: Node closes keep-alive connections idle for 5 s.
        _, appender = await loop.create_connection(Appender, self.host, self.port)

        body = b"x" * 100
        append_request = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        cpu_before = _own_cpu_seconds()
        server_cpu_before = tree_cpu_seconds(self.server_pid)
        sent_at = time.perf_counter()
        answer = appender.send(append_request)
        acked_at, ack = await asyncio.wait_for(answer, timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), timeout)
        finished_at = time.perf_counter()
        cpu_after = _own_cpu_seconds()
        server_cpu_after = tree_cpu_seconds(self.server_pid)

        latencies = sorted(
            (w.done_at - sent_at) * 1000 for w in self.waiters if w.done_at and w.status == 200
        )
        statuses: dict[str, int] = {}
        for w in self.waiters:
            key = str(w.status) if w.done_at else "none"
            statuses[key] = statuses.get(key, 0) + 1
        new_tail = _header(ack, b"stream-next-offset") or tail
        if appender.transport is not None:
            appender.transport.close()

        for w in self.waiters:
            if w.transport is not None:
                w.transport.close()
        self.waiters = []
        await asyncio.sleep(0.5)

        def pct(p: float) -> float | None:
            if not latencies:
                return None
            return latencies[max(0, math.ceil(p / 100 * len(latencies)) - 1)]

        result = {
            "waiters": n,
            "ok": len(latencies),
            "statuses": statuses,
            "connect_failures": connect_failures,
            "lost_connections": self.lost,
            "answered_before_append": early,
            "connect_seconds": round(connect_seconds, 3),
            "register_seconds": round(register_seconds, 3),
            "server_went_idle": idle_after >= 0,
            "rss_kib_before": rss_before,
            "rss_kib_idle_waiters": rss_idle,
            "append_status": int(ack[9:12]),
            "append_ack_ms": round((acked_at - sent_at) * 1000, 3),
            "latency_ms": {
                "p50": pct(50),
                "p99": pct(99),
                "max": latencies[-1] if latencies else None,
                "min": latencies[0] if latencies else None,
            },
            "release_wall_ms": round((finished_at - sent_at) * 1000, 3),
            "client_cpu_ms": round((cpu_after - cpu_before) * 1000, 1),
            "server_cpu_ms": round((server_cpu_after - server_cpu_before) * 1000, 1),
        }
        return result, new_tail


async def _create_stream(host: str, port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head[9:12])
        if status not in (200, 201):
            raise RuntimeError(f"PUT {path} answered {status}")
        tail = _header(head, b"stream-next-offset")
        if tail is None:
            raise RuntimeError("PUT gave no Stream-Next-Offset")
        return tail
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> dict:
    fanout = Fanout(args.host, args.port, args.path, args.server_pid)
    tail = await _create_stream(args.host, args.port, args.path)
    await asyncio.sleep(0.5)
    rss_empty = tree_rss_kib(args.server_pid)
    rounds = []
    for n in args.counts:
        result, tail = await fanout.round(n, tail, args.connect_parallel, args.timeout)
        rounds.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    return {"rss_kib_no_waiters": rss_empty, "rounds": rounds}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/stream/fanout")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--counts", default="5000,10000")
    parser.add_argument("--connect-parallel", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=100.0, help="bound on each phase, s")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmarks only talk to loopback")
    args.counts = [int(n) for n in args.counts.split(",") if n]
    return args


if __name__ == "__main__":
    arguments = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.install()
    print(json.dumps(asyncio.run(main(arguments))), flush=True)
