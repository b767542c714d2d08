"""Property-based garbage against the protocol layer: nothing may produce a 5xx or lose data.

Most examples drive `StreamsProtocol.handle` in process (an engine on a FileStore in a temp
dir, on one event loop) for speed: malformed offsets, expiry, producer, fork and closure
headers, content types, JSON bodies, unknown paths and methods, odd and duplicated query
parameters. Every answer must be a legitimate 2xx/3xx or a 4xx with a JSON error message.
Streams written before the fuzzing ("precious" ones, at paths the fuzzer never writes to)
must read back exactly afterwards, and after a restart of the engine.

A smaller set goes over real HTTP: random requests through httpx, raw malformed bytes over
a socket (which must be answered with 400, not a hang or a dead server), and body limits.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import StreamsProcess, streams_process
from fusebox.http.messages import Request, Response
from fusebox.http.server import HttpServer, ServerLimits
from fusebox.streams.engine import StreamEngine
from fusebox.streams.offsets import format_offset
from fusebox.streams.protocol import StreamsProtocol
from fusebox.streams.store import FileStore

PREFIX = "/v1/stream"
FUZZ = f"{PREFIX}/fz"
# The fuzzer's own text never contains "~", so it can never name these.
PRECIOUS = {
    f"{PREFIX}/~precious~bytes": ("application/octet-stream", bytes(range(256)) * 4),
    f"{PREFIX}/~precious~text": ("text/plain", "héllo\nwörld\r\n ".encode() * 10),
    f"{PREFIX}/~precious~json": ("application/json", b'[{"a":1},[1,2],"s",null,3.5]'),
}
PRECIOUS_CLOSED = f"{PREFIX}/~precious~closed"
TARGETS = ["bytes", "text", "json", "closed", "producer", "fork", "ttl", "soft", "soft-child"]
ALLOWED = {200, 201, 204, 304, 400, 403, 404, 405, 409, 410}

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- in-process harness --------------------------------------------------------------------


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    directory: Path
    engine: StreamEngine
    protocol: StreamsProtocol
    # Expected bytes of the precious streams as the protocol returns them (GET from -1).
    precious_bodies: dict[str, bytes]

    def call(
        self,
        method: str,
        raw_path: str,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        request = Request(method, raw_path, query, dict(headers or {}), body)
        return self.loop.run_until_complete(self._answer(request))

    async def _answer(self, request: Request) -> Response:
        response = await asyncio.wait_for(self.protocol.handle(request), 10)
        if response.stream is not None:
            # SSE: take the first event, as a client that disconnects early would.
            stream = response.stream
            assert isinstance(stream, AsyncIterator)
            try:
                first = await asyncio.wait_for(anext(stream, b""), 10)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            response.body = first
        return response

    async def restart(self) -> None:
        await self.engine.stop()
        self.engine = StreamEngine(FileStore(self.directory))
        await self.engine.start()
        self.protocol = StreamsProtocol(self.engine, long_poll_timeout=0.05, sse_rotation=0.2)


def check(response: Response) -> None:
    """The universal property: a legitimate status, and 4xx answers explain themselves."""
    assert response.status in ALLOWED, (response.status, response.body[:300])
    for name, value in response.headers:
        name.encode("latin-1")  # the HTTP layer writes headers as latin-1
        value.encode("latin-1")
        assert "\r" not in value and "\n" not in value
    if response.status >= 400:
        headers = dict(response.headers)
        assert headers["content-type"] == "application/json"
        message = json.loads(response.body)["error"]["message"]
        assert isinstance(message, str) and message.strip()


def assert_precious_intact(harness: Harness) -> None:
    for path, expected in harness.precious_bodies.items():
        response = harness.call("GET", path, "offset=-1")
        assert response.status == 200, (path, response.status)
        assert response.body == expected, path
        head = harness.call("HEAD", path)
        assert head.status == 200
        closed = dict(head.headers).get("stream-closed") == "true"
        assert closed == (path == PRECIOUS_CLOSED)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()

    async def start() -> Harness:
        engine = StreamEngine(FileStore(directory))
        await engine.start()
        protocol = StreamsProtocol(engine, long_poll_timeout=0.05, sse_rotation=0.2)
        return Harness(loop, directory, engine, protocol, {})

    harness = loop.run_until_complete(start())
    for path, (content_type, body) in PRECIOUS.items():
        created = harness.call("PUT", path, headers={"content-type": content_type}, body=body)
        assert created.status == 201
    harness.call("PUT", PRECIOUS_CLOSED, headers={"stream-closed": "true"}, body=b"done")
    for path in [*PRECIOUS, PRECIOUS_CLOSED]:
        harness.precious_bodies[path] = harness.call("GET", path, "offset=-1").body
    assert json.loads(harness.precious_bodies[f"{PREFIX}/~precious~json"]) == [
        {"a": 1},
        [1, 2],
        "s",
        None,
        3.5,
    ]
    setup_targets(harness)
    try:
        yield harness
    finally:
        loop.run_until_complete(harness.engine.stop())
        loop.close()


def setup_targets(harness: Harness) -> None:
    """Streams the fuzzer may change: every kind of state it should meet."""
    put = harness.call
    assert (
        put("PUT", f"{FUZZ}/bytes", headers={"content-type": "application/octet-stream"}).status
        == 201
    )
    assert (
        put("PUT", f"{FUZZ}/text", headers={"content-type": "text/plain"}, body=b"t").status == 201
    )
    assert (
        put("PUT", f"{FUZZ}/json", headers={"content-type": "application/json"}, body=b"[1]").status
        == 201
    )
    assert put("PUT", f"{FUZZ}/closed", headers={"stream-closed": "true"}, body=b"c").status == 201
    assert put("PUT", f"{FUZZ}/producer", headers={"content-type": "text/plain"}).status == 201
    producer = {"producer-id": "p", "producer-epoch": "1", "producer-seq": "0"}
    appended = put(
        "POST", f"{FUZZ}/producer", headers={**producer, "content-type": "text/plain"}, body=b"p0"
    )
    assert appended.status == 200
    fork = {
        "stream-forked-from": f"{PREFIX}/~precious~bytes",
        "stream-fork-offset": format_offset(100),
    }
    assert put("PUT", f"{FUZZ}/fork", headers=fork).status == 201
    assert put("PUT", f"{FUZZ}/ttl", headers={"stream-ttl": "3600"}).status == 201
    # A soft-deleted stream (its fork still reads it): 410 for everything addressed to it.
    assert put("PUT", f"{FUZZ}/soft", body=b"soft").status == 201
    assert (
        put("PUT", f"{FUZZ}/soft-child", headers={"stream-forked-from": f"{FUZZ}/soft"}).status
        == 201
    )
    assert put("DELETE", f"{FUZZ}/soft").status == 204


# -- strategies ----------------------------------------------------------------------------

LATIN1 = st.characters(codec="latin-1", exclude_characters="~\r\n")
junk = st.text(LATIN1, max_size=24)
digits = st.integers(min_value=0, max_value=2**70).map(str)
offsets = st.one_of(
    st.sampled_from(
        [
            "-1",
            "now",
            "NOW",
            "-2",
            "0",
            "",
            "_",
            "0_",
            "_0",
            "0_0",
            format_offset(0),
            format_offset(1),
            format_offset(3),
            format_offset(100),
            format_offset(10**9),
            "9" * 20 + "_" + "9" * 20,
            "0000000000000000_-000000000000001",
            "0000000000000000_0000000000000001 ",
            "\u0661_\u0661",
            "%00",
        ]
    ),
    st.builds(lambda a, b: f"{a}_{b}", digits, digits),
    junk,
)
counters = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "+1", "01", "1.0", "1e3", " 1", "9007199254740991"]),
    st.sampled_from(["9007199254740992", "18446744073709551616", ""]),
    digits,
    junk,
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "APPLICATION/JSON; charset=utf-8",
            "application/octet-stream",
            "text/plain",
            "text/plain; charset=latin-1",
            "application/vnd.x+json",
            "",
            ";",
            " ",
            "*/*",
        ]
    ),
    junk,
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2030-01-01T00:00:00Z",
            "2030-01-01T00:00:00.123456789+05:30",
            "2000-01-01T00:00:00Z",
            "2030-13-01T00:00:00Z",
            "2030-02-30T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "2030-01-01T24:00:00Z",
            "2030-01-01T00:00:00+24:00",
            "2030-01-01 00:00:00z",
            "2030-01-01",
            "1704067200",
        ]
    ),
    junk,
)
paths = st.one_of(
    st.sampled_from(TARGETS).map(lambda name: f"{FUZZ}/{name}"),
    st.integers(0, 5).map(lambda i: f"{FUZZ}/new-{i}"),
    junk.map(lambda text: f"{FUZZ}/" + quote(text, safe="/%")),
    junk.map(lambda text: f"{PREFIX}/" + text),
    st.sampled_from(
        ["", "/", PREFIX, f"{PREFIX}/", "/v1/streamx/a", f"{PREFIX}/%00", f"{PREFIX}/%ZZ"]
    ),
    st.sampled_from([f"{PREFIX}/../x", f"{PREFIX}/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"]),
)
fork_sources = st.one_of(
    st.sampled_from([*PRECIOUS, PRECIOUS_CLOSED]),
    st.sampled_from(TARGETS).map(lambda name: f"{FUZZ}/{name}"),
    st.sampled_from(["http://elsewhere/v1/stream/fz/bytes", "fz/bytes", "", "/", "://"]),
    junk,
)
HEADER_VALUES = {
    "content-type": content_types,
    "stream-ttl": counters,
    "stream-expires-at": timestamps,
    "stream-closed": st.one_of(
        st.sampled_from(["true", "TRUE", " true ", "false", "1", "yes", ""]), junk
    ),
    "stream-seq": junk,
    "producer-id": st.one_of(st.sampled_from(["p", "q", "", " "]), junk),
    "producer-epoch": counters,
    "producer-seq": counters,
    "stream-forked-from": fork_sources,
    "stream-fork-offset": offsets,
    "stream-fork-sub-offset": counters,
    "if-none-match": st.one_of(st.just('"1:0:0"'), junk),
    "host": st.one_of(st.just("localhost"), junk),
}
headers_strategy = st.dictionaries(
    st.one_of(st.sampled_from(sorted(HEADER_VALUES)), junk.map(str.lower)),
    junk,
    max_size=6,
).flatmap(
    lambda base: st.fixed_dictionaries(
        {key: HEADER_VALUES.get(key, st.just(value)) for key, value in base.items()}
    )
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v, indent=1, ensure_ascii=False).encode()),
    st.sampled_from(
        [
            b"",
            b"[]",
            b"[[]]",
            b"{",
            b"null",
            b"[1,2]",
            b'"\\u0000"',
            b"NaN",
            b"[1e999]",
            b"\xef\xbb\xbf{}",
            b"[" * 3000 + b"]" * 3000,
            b" " * 50,
        ]
    ),
)
query_keys = st.one_of(st.sampled_from(["offset", "live", "cursor", "timeout"]), junk)
query_values = st.one_of(
    offsets, st.sampled_from(["long-poll", "sse", "LONG-POLL", "true", "", "1"]), junk
)
queries = st.one_of(
    st.lists(st.tuples(query_keys, query_values), max_size=5).map(urlencode),
    st.lists(st.tuples(query_keys, query_values), max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
    junk,
)
methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]),
    st.text(string.ascii_uppercase, min_size=1, max_size=8),
)


# -- in-process properties -----------------------------------------------------------------


def test_random_requests_never_fail_the_server(harness: Harness) -> None:
    @FUZZ_SETTINGS
    @given(method=methods, path=paths, query=queries, headers=headers_strategy, body=bodies)
    def requests(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        check(harness.call(method, path, query, headers, body))

    requests()
    assert_precious_intact(harness)


def test_reads_with_malformed_offsets_and_params(harness: Harness) -> None:
    streams = [*PRECIOUS, PRECIOUS_CLOSED] + [f"{FUZZ}/{name}" for name in TARGETS]

    @FUZZ_SETTINGS
    @given(path=st.sampled_from(streams), query=queries, headers=headers_strategy)
    def reads(path: str, query: str, headers: dict[str, str]) -> None:
        for method in ("GET", "HEAD"):
            check(harness.call(method, path, query, headers))

    reads()
    assert_precious_intact(harness)


def test_creates_with_random_headers_and_bodies(harness: Harness) -> None:
    @FUZZ_SETTINGS
    @given(
        name=st.integers(0, 30),
        headers=headers_strategy,
        body=bodies,
        fork=st.booleans(),
        source=fork_sources,
        fork_offset=offsets,
    )
    def creates(
        name: int, headers: dict[str, str], body: bytes, fork: bool, source: str, fork_offset: str
    ) -> None:
        if fork:
            headers = {**headers, "stream-forked-from": source, "stream-fork-offset": fork_offset}
        response = harness.call("PUT", f"{FUZZ}/created-{name}", "", headers, body)
        check(response)
        if response.status == 201:
            # What was created reads back, and knows its own tail.
            read = harness.call("GET", f"{FUZZ}/created-{name}", "offset=-1")
            if read.status == 200:
                tail = dict(read.headers)["stream-next-offset"]
                assert tail == dict(response.headers)["stream-next-offset"]
            else:
                assert read.status == 404  # created already expired (a TTL of 0, a past date)
            check(harness.call("DELETE", f"{FUZZ}/created-{name}"))

    creates()
    assert_precious_intact(harness)


def test_appends_with_random_producer_and_closure_headers(harness: Harness) -> None:
    producer_headers = st.fixed_dictionaries(
        {
            "producer-id": st.sampled_from(["p", "q"]),
            "producer-epoch": st.sampled_from(["0", "1", "2"]),
            "producer-seq": st.sampled_from(["0", "1", "2", "3", "5"]),
        }
    )

    @FUZZ_SETTINGS
    @given(
        target=st.sampled_from(["bytes", "text", "json", "closed", "producer", "fork", "soft"]),
        headers=headers_strategy,
        producer=st.one_of(st.none(), producer_headers),
        body=bodies,
    )
    def appends(
        target: str, headers: dict[str, str], producer: dict[str, str] | None, body: bytes
    ) -> None:
        path = f"{FUZZ}/{target}"
        if producer is not None:
            headers = {**headers, **producer}
        before = harness.call("HEAD", path)
        response = harness.call("POST", path, "", headers, body)
        check(response)
        after = harness.call("HEAD", path)
        if before.status == 200 and after.status == 200:
            start = dict(before.headers)["stream-next-offset"]
            end = dict(after.headers)["stream-next-offset"]
            if response.status >= 400:
                assert end == start, "a refused append changed the stream"

    appends()
    assert_precious_intact(harness)


def test_json_appends_round_trip(harness: Harness) -> None:
    """Any JSON value appended to a JSON stream reads back equal (arrays are flattened)."""
    path = f"{FUZZ}/json-roundtrip"
    assert harness.call("PUT", path, headers={"content-type": "application/json"}).status == 201

    @FUZZ_SETTINGS
    @given(value=json_values, pretty=st.booleans())
    def round_trip(value: object, pretty: bool) -> None:
        if value == []:
            return  # an empty array appends nothing and is refused
        tail = dict(harness.call("HEAD", path).headers)["stream-next-offset"]
        text = json.dumps(value, indent=2 if pretty else None, ensure_ascii=pretty)
        response = harness.call(
            "POST", path, "", {"content-type": "application/json"}, text.encode()
        )
        assert response.status == 204, response.body
        read = harness.call("GET", path, f"offset={tail}")
        assert read.status == 200
        expected = value if isinstance(value, list) else [value]
        assert json.loads(read.body) == expected

    round_trip()


def test_duplicate_params_and_ignored_header_values(harness: Harness) -> None:
    path = f"{FUZZ}/explicit"
    assert (
        harness.call("PUT", path, headers={"content-type": "text/plain"}, body=b"ab").status == 201
    )
    twice = harness.call("GET", path, "offset=-1&offset=-1")
    check(twice)
    assert twice.status == 400 and b"more than once" in twice.body
    # For `live` the last value counts.
    last = harness.call("GET", path, "offset=-1&live=bogus&live=long-poll")
    assert last.status == 200 and last.body == b"ab"
    assert harness.call("GET", path, "offset=-1&live=long-poll&live=bogus").status == 400
    assert harness.call("GET", path, "offset=").status == 400
    assert harness.call("GET", path, "live=long-poll").status == 400  # live needs an offset
    # Stream-Closed means closed only when it says exactly "true" (any case).
    for value in ("false", "1", "yes", "", "truee"):
        appended = harness.call(
            "POST", path, "", {"content-type": "text/plain", "stream-closed": value}, b"."
        )
        assert appended.status == 204 and "stream-closed" not in dict(appended.headers)
    closed = harness.call("POST", path, "", {"stream-closed": "TRUE"})
    assert closed.status == 204 and dict(closed.headers)["stream-closed"] == "true"
    assert harness.call("GET", path, "offset=-1").body == b"ab....."
    # Producer headers go together, and their numbers are plain non-negative integers.
    path = f"{FUZZ}/explicit-producer"
    assert harness.call("PUT", path, headers={"content-type": "text/plain"}).status == 201
    for headers in (
        {"producer-id": "p", "producer-epoch": "0"},
        {"producer-id": "", "producer-epoch": "0", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "-1", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "0", "producer-seq": "9007199254740992"},
        {"producer-id": "p", "producer-epoch": "0x1", "producer-seq": "0"},
    ):
        refused = harness.call("POST", path, "", {**headers, "content-type": "text/plain"}, b"x")
        check(refused)
        assert refused.status == 400, headers
    assert dict(harness.call("HEAD", path).headers)["stream-next-offset"] == format_offset(0)


def test_json_fork_inside_a_message_is_refused(harness: Harness) -> None:
    source = f"{FUZZ}/json-fork-source"
    created = harness.call(
        "PUT", source, headers={"content-type": "application/json"}, body=b'[{"a":1},{"b":2}]'
    )
    assert created.status == 201
    fork = harness.call(
        "PUT",
        f"{FUZZ}/json-fork-inside",
        headers={"stream-forked-from": source, "stream-fork-offset": format_offset(3)},
    )
    assert fork.status == 400


def test_fuzzed_state_survives_a_restart(harness: Harness) -> None:
    """Whatever the fuzzing left behind recovers, and the precious streams are intact."""
    snapshot = {}
    for name in TARGETS:
        response = harness.call("GET", f"{FUZZ}/{name}", "offset=-1")
        snapshot[name] = (response.status, response.body if response.status == 200 else None)
    harness.loop.run_until_complete(harness.restart())
    assert_precious_intact(harness)
    for name in TARGETS:
        response = harness.call("GET", f"{FUZZ}/{name}", "offset=-1")
        assert (response.status, response.body if response.status == 200 else None) == snapshot[
            name
        ], name


# -- over real HTTP ------------------------------------------------------------------------

HTTP_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def small_body_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsProcess]:
    server = streams_process(
        tmp_path_factory.mktemp("limits") / "data", extra_args=["--max-body-mb", "1"]
    ).start()
    try:
        yield server
    finally:
        server.stop()


def http_precious(server: StreamsProcess) -> dict[str, bytes]:
    contents = {}
    with httpx.Client(base_url=server.url) as client:
        for path, (content_type, body) in PRECIOUS.items():
            response = client.put(path, headers={"content-type": content_type}, content=body)
            assert response.status_code in (200, 201)
            contents[path] = client.get(path, params={"offset": "-1"}).content
    return contents


def assert_http_precious(server: StreamsProcess, contents: dict[str, bytes]) -> None:
    with httpx.Client(base_url=server.url) as client:
        for path, expected in contents.items():
            response = client.get(path, params={"offset": "-1"})
            assert response.status_code == 200 and response.content == expected, path


def test_random_http_requests(core_server: StreamsProcess) -> None:
    contents = http_precious(core_server)
    # The in-process header strategies, cut to what an HTTP client can put on the wire.
    safe_headers = headers_strategy.map(
        lambda headers: {
            name: "".join(c for c in value if " " <= c <= "~").strip()
            for name, value in headers.items()
            if name in HEADER_VALUES
        }
    )

    with httpx.Client(base_url=core_server.url, timeout=10) as client:

        @HTTP_SETTINGS
        @given(
            method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
            name=st.sampled_from(["a", "b", "c"]),
            query=queries,
            headers=safe_headers,
            body=bodies,
        )
        def requests(
            method: str, name: str, query: str, headers: dict[str, str], body: bytes
        ) -> None:
            url = f"/v1/stream/http-fz/{name}"
            if query:
                url += "?" + quote(query, safe="=&%")
            response = client.request(method, url, headers=headers, content=body)
            assert response.status_code in ALLOWED, (response.status_code, response.text)
            if response.status_code >= 400 and method != "HEAD":
                assert response.json()["error"]["message"]

        requests()
    assert_http_precious(core_server, contents)


def exchange(server: StreamsProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; return what the server answers until it closes or, having answered,
    goes quiet. Silence with no answer at all on an open connection is a hang."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if received:
                    return received  # answered; the connection is kept alive
                raise AssertionError(f"no answer within {timeout}s to {data[:80]!r}") from None
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
            if b"\r\n\r\n" in received:
                sock.settimeout(0.5)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
    b"GET /v1/stream/x HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET  HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/stream/x HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /v1/stream/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /v1/stream/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"PUT /v1/stream/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST /v1/stream/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"GET /v1/stream/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/stream/x HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
    b"G\xc3\x89T /v1/stream/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/stream/x?offset=-1 HTTP/1.1 extra\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_raw_malformed_http_gets_400(core_server: StreamsProcess, data: bytes) -> None:
    answer = exchange(core_server, data)
    assert status_of(answer) == 400, answer[:200]
    # The server is still there for everyone else.
    assert httpx.get(f"{core_server.url}/v1/stream/none").status_code == 404


@pytest.mark.parametrize(
    "data",
    [
        b"GET /v1/stream/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n",
        b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["upgrade", "connect"],
)
def test_upgrade_requests_get_400(core_server: StreamsProcess, data: bytes) -> None:
    assert status_of(exchange(core_server, data)) == 400


def test_mutated_raw_requests(core_server: StreamsProcess) -> None:
    """Byte-level mutations of valid requests: an answer below 500 or a close, never a hang."""
    contents = http_precious(core_server)
    templates = [
        b"GET /v1/stream/raw-fz/a?offset=-1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        b"PUT /v1/stream/raw-fz/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\r\n",
        b"HEAD /v1/stream/raw-fz/a HTTP/1.1\r\nHost: x\r\nStream-TTL: 60\r\n\r\n",
        b"DELETE /v1/stream/raw-fz/c HTTP/1.1\r\nHost: x\r\nProducer-Id: p\r\n\r\n",
    ]

    @HTTP_SETTINGS
    @given(
        template=st.sampled_from(templates),
        edits=st.lists(
            st.tuples(st.floats(0, 1), st.integers(0, 2), st.binary(min_size=1, max_size=3)),
            min_size=1,
            max_size=4,
        ),
    )
    def mutated(template: bytes, edits: list[tuple[float, int, bytes]]) -> None:
        head = bytearray(template[:-4])
        for where, kind, data in edits:
            at = int(where * len(head))
            if kind == 0:
                head[at : at + len(data)] = data
            elif kind == 1:
                head[at:at] = data
            else:
                del head[at : at + len(data)]
        data = bytes(head).lstrip(b"\r\n") + b"\r\n\r\n"
        lowered = data.lower()
        if not data.strip() or b"content-length" in lowered or b"transfer-encoding" in lowered:
            return
        if b"upgrade" in lowered or data.startswith(b"CONNECT"):
            return  # see test_upgrade_requests_get_400
        answer = exchange(core_server, data)
        if answer:
            assert status_of(answer) < 500, answer[:300]

    mutated()
    assert_http_precious(core_server, contents)
    assert httpx.get(f"{core_server.url}/v1/stream/none").status_code == 404


def test_pipelined_requests_answer_in_order(core_server: StreamsProcess) -> None:
    path = "/v1/stream/pipelined"
    requests = (
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\na"
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nb"
        f"GET {path}?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET {path}?offset=bogus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = exchange(core_server, requests)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [201, 204, 200, 400]
    assert b"\r\n\r\nab" in answer


def test_oversize_bodies_get_413_and_change_nothing(small_body_server: StreamsProcess) -> None:
    url = f"{small_body_server.url}/v1/stream/limits"
    assert (
        httpx.put(
            url, headers={"content-type": "application/octet-stream"}, content=b"ok"
        ).status_code
        == 201
    )
    too_big = httpx.post(
        url, content=b"x" * (1024 * 1024 + 1), headers={"content-type": "application/octet-stream"}
    )
    assert too_big.status_code == 413
    assert httpx.put(f"{url}-2", content=b"y" * (2 * 1024 * 1024)).status_code == 413
    just_right = httpx.post(
        url, content=b"z" * (1024 * 1024), headers={"content-type": "application/octet-stream"}
    )
    assert just_right.status_code == 204
    read = httpx.get(url, params={"offset": "-1"})
    assert read.content == b"ok" + b"z" * (1024 * 1024)
    assert httpx.head(f"{url}-2").status_code == 404


def body_limit_exchange(request: bytes) -> bytes:
    """Send `request` to an in-process HttpServer with a 1000-byte body limit."""

    async def scenario() -> bytes:
        async def handler(request: Request) -> Response:
            return Response(200, [("content-type", "text/plain")], b"%d" % len(request.body))

        server = HttpServer(handler, ServerLimits(max_body_bytes=1000))
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            return answer
        finally:
            await server.stop()

    return asyncio.run(scenario())


def test_body_limit_with_content_length() -> None:
    body = b"x" * 5000
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert status_of(body_limit_exchange(head + body)) == 413
    assert status_of(body_limit_exchange(head.replace(b"5000", b"1000") + body[:1000])) == 200


def test_body_limit_with_chunked_encoding() -> None:
    body = b"x" * 5000
    request = (
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\n\r\n"
    )
    assert status_of(body_limit_exchange(request)) == 413


def test_live_reads_beyond_the_tail_are_refused(core_server: StreamsProcess) -> None:
    """Refused up front with 400, for SSE too (not a 200 whose event stream then dies)."""
    url = f"{core_server.url}/v1/stream/beyond-tail"
    assert httpx.put(url, content=b"abc").status_code == 201
    for live in ("sse", "long-poll", None):
        params = {"offset": format_offset(4)}
        if live:
            params["live"] = live
        response = httpx.get(url, params=params, timeout=10)
        assert response.status_code == 400, (live, response.status_code)
        assert "beyond the end" in response.json()["error"]["message"]
    # At the tail itself an SSE read is fine: a control event, then it waits.
    with httpx.stream(
        "GET", url, params={"offset": format_offset(3), "live": "sse"}, timeout=10
    ) as response:
        assert response.status_code == 200
        first = next(response.iter_text())
        assert first.startswith("event: control")
