"""Catch-up reader: read a whole stream from offset -1, following Stream-Next-Offset.

    python bench/catchup_client.py read --port P --path /v1/stream/catchup --reads 5
    python bench/catchup_client.py ceiling --bytes 104857600

`read` uses one blocking keep-alive socket and `recv_into` a reused 4 MiB buffer, so body
bytes are copied once (kernel to that buffer) and then dropped; the client does no other
per-byte work. It handles Content-Length and chunked bodies and checks that the bytes read
add up to the stream's length. `ceiling` measures the same reader against a trivial
sender process that writes a prebuilt 4 MiB HTTP response from memory, as fast as
the kernel takes it: the most this client (and loopback on this machine) can do.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import sys
import time

BUFFER = 4 * 1024 * 1024
MAX_REQUESTS = 100_000


class Reader:
    """Just enough HTTP/1.1 response parsing over a blocking socket, without copies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(BUFFER)
        self.view = memoryview(self.buffer)
        self.start = 0
        self.end = 0

    def _fill(self) -> None:
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buffer):
            pending = self.end - self.start
            self.buffer[:pending] = self.buffer[self.start : self.end]
            self.start, self.end = 0, pending
        received = self.sock.recv_into(self.view[self.end :])
        if received == 0:
            raise ConnectionError("server closed the connection")
        self.end += received

    def line(self) -> bytes:
        while True:
            at = self.buffer.find(b"\r\n", self.start, self.end)
            if at >= 0:
                text = bytes(self.buffer[self.start : at])
                self.start = at + 2
                return text
            if self.end - self.start > 65536:
                raise ValueError("header line too long")
            self._fill()

    def skip(self, count: int) -> None:
        """Consume `count` body bytes, receiving straight into the scratch buffer."""
        buffered = min(count, self.end - self.start)
        self.start += buffered
        count -= buffered
        if self.start == self.end:
            self.start = self.end = 0
        view, size, recv_into = self.view, len(self.buffer), self.sock.recv_into
        while count > 0:
            received = recv_into(view, min(count, size))
            if received == 0:
                raise ConnectionError("server closed the connection mid-body")
            count -= received

    def response(self) -> tuple[int, dict[str, str], int]:
        """Read one response: (status, headers, body length); the body is dropped."""
        status_line = self.line()
        status = int(status_line[9:12])
        headers: dict[str, str] = {}
        while True:
            line = self.line()
            if not line:
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if status in (204, 304):
            return status, headers, 0
        if "content-length" in headers:
            length = int(headers["content-length"])
            self.skip(length)
            return status, headers, length
        if headers.get("transfer-encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line():  # trailers, then the empty line
                        pass
                    return status, headers, total
                self.skip(size)
                total += size
                if self.line():
                    raise ValueError("chunk not followed by CRLF")
        raise ValueError("response without Content-Length or chunked encoding")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_stream(host: str, port: int, path: str, deadline: float) -> dict:
    """One full catch-up read on a fresh connection."""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = Reader(sock)
        offset = "-1"
        total = 0
        requests = 0
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        while requests < MAX_REQUESTS and time.monotonic() < deadline:
            sock.sendall(f"GET {path}?offset={offset} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status, headers, length = reader.response()
            requests += 1
            if status != 200:
                raise RuntimeError(f"GET offset={offset} answered {status}")
            total += length
            offset = headers["stream-next-offset"]
            if headers.get("stream-up-to-date", "").lower() == "true":
                break
        else:
            raise RuntimeError("catch-up read did not reach the tail in time")
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
    return {
        "bytes": total,
        "seconds": seconds,
        "requests": requests,
        "mb_per_s": total / seconds / 1e6,
        "client_cpu_s": cpu,
    }


def _serve_static(listener: socket.socket, total: int) -> None:
    """Answer GETs with prebuilt 4 MiB responses until `total` bytes, then repeat."""
    body = b"y" * BUFFER
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            data = connection.recv(65536)
            if not data:
                return
            pending += data
        _, _, pending = pending.partition(b"\r\n\r\n")
        length = min(BUFFER, total - sent)
        sent += length
        last = sent >= total
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\nStream-Next-Offset: 0_{sent}\r\n"
            + ("Stream-Up-To-Date: true\r\n" if last else "")
            + "\r\n"
        ).encode()
        connection.sendall(head)
        connection.sendall(memoryview(body)[:length])
        if last:
            sent = 0


def ceiling(total: int) -> dict:
    """One read of `total` bytes from a forked in-memory sender (one connection each)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:  # the sender: its own process, so it does not share our GIL
        try:
            signal.alarm(120)
            _serve_static(listener, total)
        finally:
            os._exit(0)
    listener.close()
    try:
        return read_stream("127.0.0.1", port, "/static", time.monotonic() + 60)
    finally:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    read = sub.add_parser("read", help="read a stream from -1 to its tail, --reads times")
    read.add_argument("--host", default="127.0.0.1")
    read.add_argument("--port", type=int, required=True)
    read.add_argument("--path", default="/v1/stream/catchup")
    read.add_argument("--reads", type=int, default=5)
    read.add_argument("--expect-bytes", type=int, default=0)
    ceil = sub.add_parser("ceiling", help="this reader against an in-memory sender")
    ceil.add_argument("--bytes", type=int, default=100 * 1024 * 1024)
    ceil.add_argument("--reads", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "ceiling":
        return {"reads": [ceiling(args.bytes) for _ in range(args.reads)]}
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmarks only talk to loopback")
    results = []
    for _ in range(args.reads):
        result = read_stream(args.host, args.port, args.path, time.monotonic() + 120)
        if args.expect_bytes and result["bytes"] != args.expect_bytes:
            raise SystemExit(f"read {result['bytes']} bytes, expected {args.expect_bytes}")
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    return {"reads": results}


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
