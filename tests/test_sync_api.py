"""Electric's HTTP API over real HTTP: every error path, header rule and message format.

One server (`--chunk-bytes 2000`) on a database of this module serves most tests, each on
tables of its own; shape deletion runs on a server of its own. Changes are made in a real
Postgres and arrive through logical replication.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
import psycopg
import pytest

from conftest import SyncProcess, fresh_database
from postgres import PostgresCluster
from sync_client import ShapeConsumer

SECRET = "test-secret"
CHUNK_BYTES = 2000
INITIAL_CACHE = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
CATCH_UP_CACHE = "public, max-age=60, stale-while-revalidate=300"
LIVE_CACHE = "public, max-age=5, stale-while-revalidate=5"
_serial = iter(range(10**6))


# -- environment --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[str]:
    with fresh_database(postgres, "sync_api") as url:
        yield url


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncProcess]:
    data_dir = tmp_path_factory.mktemp("sync-api") / "data"
    # A slot of its own (slot names are per cluster): other servers may run meanwhile.
    server = SyncProcess(
        database,
        data_dir,
        extra_args=["--chunk-bytes", str(CHUNK_BYTES), "--replication-stream-id", "api"],
    )
    try:
        yield server.start()
    finally:
        server.stop()  # also when it never became active


def execute(url: str, sql: str, params: tuple = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params or None)


def new_table(url: str, columns: str, rows: str | None = None) -> str:
    """Create a table of this test's own: `columns` and `rows` use {t} for its name."""
    name = f"t{next(_serial)}_{time.monotonic_ns() % 10**6}"
    execute(url, f"CREATE TABLE {name} ({columns})")
    if rows:
        execute(url, rows.format(t=name))
    return name


def key(table: str, *values: str) -> str:
    return f'"public"."{table}"' + "".join(f'/"{value}"' for value in values)


def shape(server: SyncProcess, params: dict, *, secret: bool = True, **kwargs) -> httpx.Response:
    params = {**params, "secret": SECRET} if secret else params
    return httpx.get(f"{server.url}/v1/shape", params=params, timeout=30, **kwargs)


def catch_up(server: SyncProcess, params: dict) -> tuple[str, str, list[httpx.Response]]:
    """Follow a shape from -1 until up-to-date: (handle, offset, responses)."""
    responses = []
    request = {**params, "offset": "-1"}
    while True:
        response = shape(server, request)
        assert response.status_code == 200, response.text
        responses.append(response)
        request["offset"] = response.headers["electric-offset"]
        request["handle"] = response.headers["electric-handle"]
        if "electric-up-to-date" in response.headers:
            return request["handle"], request["offset"], responses


def changes(messages: list[dict]) -> list[dict]:
    return [m for m in messages if "operation" in m["headers"]]


def follow(consumer: ShapeConsumer, url: str, sql: str, count: int) -> list[dict]:
    """Run `sql`, then follow until `count` more change messages arrived; returns them."""
    start = len(consumer.messages)
    execute(url, sql)
    deadline = time.monotonic() + 30
    while len(changes(consumer.messages[start:])) < count:
        assert time.monotonic() < deadline, consumer.describe()
        consumer.step()
    return changes(consumer.messages[start:])


def raw_get(server: SyncProcess, target: str) -> tuple[int, bytes]:
    """A GET with the request target exactly as given (no client-side path cleanup)."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- routes, auth and CORS ----------------------------------------------------------------


def test_health_root_and_unknown_routes(server: SyncProcess) -> None:
    health = httpx.get(f"{server.url}/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "active"}
    assert httpx.get(f"{server.url}/").status_code == 200
    assert httpx.get(f"{server.url}/v1/nothing").status_code == 404


def test_options_is_204_without_a_secret(server: SyncProcess) -> None:
    response = httpx.options(f"{server.url}/v1/shape")
    assert response.status_code == 204
    assert response.headers["access-control-max-age"] == "86400"
    assert response.headers["access-control-allow-origin"] == "*"
    assert not response.content


def test_secret_is_required(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY")
    for params in ({}, {"secret": "wrong"}, {"api_secret": "wrong"}, {"secret": ""}):
        response = shape(server, {"table": table, "offset": "-1", **params}, secret=False)
        assert response.status_code == 401, params
        assert response.json() == {"message": "Unauthorized - Invalid API secret"}
        assert "electric-handle" not in response.headers
    for params in ({"secret": SECRET}, {"api_secret": SECRET}):
        response = shape(server, {"table": table, "offset": "-1", **params}, secret=False)
        assert response.status_code == 200, params
    # The secret is checked before anything else: no table is revealed without it.
    response = shape(server, {"table": "no_such_table", "offset": "-1"}, secret=False)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "path", ["//v1/shape", "/v1/shape/", "/v1//shape", "//v1//shape//", "/v1/shape//"]
)
def test_odd_paths_cannot_bypass_the_secret(server: SyncProcess, database: str, path: str) -> None:
    table = new_table(database, "id int PRIMARY KEY", "INSERT INTO {t} VALUES (1)")
    query = urlencode({"table": table, "offset": "-1"})
    status, body = raw_get(server, f"{path}?{query}")
    assert status == 401, body
    status, body = raw_get(server, f"{path}?{query}&secret={SECRET}")
    assert status in (200, 404), body
    if status == 200:
        assert orjson.loads(body)[0]["key"] == key(table, "1")


# -- shape identity -----------------------------------------------------------------------


def test_table_names_fold_and_quote_like_identifiers(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY", "INSERT INTO {t} VALUES (1)")
    mixed = f'"Mixed{table}"'
    execute(database, f"CREATE TABLE {mixed} (id int PRIMARY KEY)")
    plain = shape(server, {"table": table, "offset": "-1"})
    assert shape(server, {"table": f"public.{table}", "offset": "-1"}).content == plain.content
    assert shape(server, {"table": table.upper(), "offset": "-1"}).content == plain.content
    assert shape(server, {"table": f'"{table}"', "offset": "-1"}).content == plain.content
    assert shape(server, {"table": mixed, "offset": "-1"}).status_code == 200
    folded = shape(server, {"table": mixed.strip('"'), "offset": "-1"})
    assert folded.status_code == 400
    assert list(folded.json()["errors"]) == ["table"]


def test_concurrent_first_requests_share_one_shape(server: SyncProcess, database: str) -> None:
    table = new_table(
        database, "id int PRIMARY KEY", "INSERT INTO {t} SELECT generate_series(1, 50)"
    )
    params = {"table": table, "offset": "-1", "where": "id > 10", "secret": SECRET}

    async def fetch_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            requests = [client.get(f"{server.url}/v1/shape", params=params) for _ in range(12)]
            return await asyncio.gather(*requests)

    responses = asyncio.run(fetch_all())
    assert {r.status_code for r in responses} == {200}
    assert len({r.headers["electric-handle"] for r in responses}) == 1
    assert len({r.content for r in responses}) == 1


# -- invalid requests ---------------------------------------------------------------------


INVALID = [
    ({"offset": "-1"}, "table"),
    ({"table": "no_such_table", "offset": "-1"}, "table"),
    ({"table": "a.b.c", "offset": "-1"}, "table"),
    ({"table": "{t}"}, "offset"),
    ({"table": "{t}", "offset": "abc"}, "offset"),
    ({"table": "{t}", "offset": "1_x", "handle": "h"}, "offset"),
    ({"table": "{t}", "offset": "0_0"}, "handle"),
    ({"table": "{t}", "offset": "-1", "live": "true"}, "live"),
    ({"table": "{t}", "offset": "-1", "live": ""}, "live"),
    ({"table": "{t}", "offset": "now", "live": "true"}, "live"),
    ({"table": "{t}", "offset": "-1", "columns": "id,nope"}, "columns"),
    ({"table": "{t}", "offset": "-1", "columns": "name"}, "columns"),
    ({"table": "{t}", "offset": "-1", "columns": ""}, "columns"),
    ({"table": "{t}", "offset": "-1", "where": "id ="}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "nope = 1"}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "name = 1"}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "id"}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "id = 1; DROP TABLE {t}"}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "id = 1 ORDER BY id"}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "id = $1"}, "where"),
    ({"table": "{t}", "offset": "-1", "where": "id = $1", "params[2]": "1"}, "params"),
    (
        {"table": "{t}", "offset": "-1", "where": "id = $1", "params[1]": "1", "params[3]": "2"},
        "params",
    ),
    ({"table": "{t}", "offset": "-1", "replica": "partial"}, "replica"),
    ({"table": "{t}", "offset": "-1", "log": "everything"}, "log"),
]


@pytest.mark.parametrize(
    ("params", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)]
)
def test_invalid_requests_get_400_with_the_field(
    server: SyncProcess, database: str, params: dict, field: str
) -> None:
    table = new_table(database, "id int PRIMARY KEY, name text", "INSERT INTO {t} VALUES (1, 'a')")
    params = {name: value.format(t=table) for name, value in params.items()}
    response = shape(server, params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == "Invalid request"
    assert list(body["errors"]) == [field], body
    assert body["errors"][field] and all(isinstance(m, str) for m in body["errors"][field])
    assert response.headers["cache-control"] == "no-store"
    for header in ("electric-offset", "electric-schema", "electric-cursor"):
        assert header not in response.headers
    # Nothing was dropped by the where clause that tried.
    execute(database, f"SELECT 1 FROM {table}")


def test_unknown_parameters_are_ignored(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY", "INSERT INTO {t} VALUES (1)")
    plain = shape(server, {"table": table, "offset": "-1"})
    extra = shape(
        server,
        {"table": table, "offset": "-1", "foo": "bar", "cache-buster": "1", "expired_handle": "x"},
    )
    assert plain.status_code == extra.status_code == 200
    assert plain.headers["electric-handle"] == extra.headers["electric-handle"]
    assert plain.content == extra.content
    live_false = shape(server, {"table": table, "offset": "-1", "live": "false"})
    assert live_false.status_code == 200


def test_handle_mismatch_is_400_and_unknown_handle_is_409(
    server: SyncProcess, database: str
) -> None:
    table = new_table(database, "id int PRIMARY KEY, n int", "INSERT INTO {t} VALUES (1, 1)")
    handle, offset, _ = catch_up(server, {"table": table})
    other, _, _ = catch_up(server, {"table": table, "where": "n > 0"})
    assert other != handle

    mismatch = shape(server, {"table": table, "where": "n > 0", "offset": offset, "handle": handle})
    assert mismatch.status_code == 400
    assert list(mismatch.json()["errors"]) == ["handle"]

    unknown = shape(server, {"table": table, "offset": offset, "handle": "123-456"})
    assert unknown.status_code == 409
    assert unknown.json() == [{"headers": {"control": "must-refetch"}}]
    assert unknown.headers["electric-handle"] == handle
    assert unknown.headers["cache-control"] == "public, max-age=60, must-revalidate"
    assert "electric-schema" not in unknown.headers
    assert "electric-offset" not in unknown.headers

    # An unknown handle for a definition nobody asked for yet: a new shape's handle.
    fresh = shape(server, {"table": table, "where": "n > 5", "offset": offset, "handle": handle})
    assert fresh.status_code == 400  # the handle exists, for another definition
    fresh = shape(server, {"table": table, "where": "n > 5", "offset": "5_0", "handle": "1-1"})
    assert fresh.status_code == 409
    new_handle = fresh.headers["electric-handle"]
    assert new_handle not in (handle, other)
    handle_again, _, _ = catch_up(server, {"table": table, "where": "n > 5"})
    assert handle_again == new_handle


def test_offset_past_the_log_end_is_400_after_half_a_long_poll(
    server: SyncProcess, database: str
) -> None:
    table = new_table(database, "id int PRIMARY KEY, n int", "INSERT INTO {t} VALUES (1, 1)")
    handle, offset, _ = catch_up(server, {"table": table})
    lsn = int(offset.split("_")[0])
    beyond = f"{lsn + 10**12}_0"
    for extra in ({}, {"live": "true"}, {"live": "true", "live_sse": "true"}):
        response = shape(server, {"table": table, "offset": beyond, "handle": handle, **extra})
        assert response.status_code == 400, extra
        assert response.json()["errors"] == {"offset": ["out of bounds for this shape"]}
        assert response.headers["cache-control"].startswith("no-store")
    # Offsets the server handed out, and `0_inf`, stay valid.
    assert shape(server, {"table": table, "offset": offset, "handle": handle}).status_code == 200
    assert shape(server, {"table": table, "offset": "0_inf", "handle": handle}).status_code == 200


# -- headers, caching and control messages ------------------------------------------------


def test_headers_and_cache_control_of_initial_catch_up_and_live(
    server: SyncProcess, database: str
) -> None:
    table = new_table(database, "id int PRIMARY KEY, name text", "INSERT INTO {t} VALUES (1, 'a')")

    initial = shape(server, {"table": table, "offset": "-1"})
    assert initial.status_code == 200
    handle = initial.headers["electric-handle"]
    assert re.fullmatch(r"\d+-\d+", handle)
    assert initial.headers["cache-control"] == INITIAL_CACHE
    assert orjson.loads(initial.headers["electric-schema"]) == {
        "id": {"type": "int4", "pk_index": 0, "not_null": True},
        "name": {"type": "text"},
    }
    assert "electric-up-to-date" not in initial.headers  # an offset=-1 answer never is
    assert "electric-cursor" not in initial.headers
    assert initial.headers["etag"] == f'"{handle}:-1:{initial.headers["electric-offset"]}"'
    assert initial.headers["content-type"].startswith("application/json")
    assert initial.json()[-1]["headers"]["control"] == "snapshot-end"

    offset = initial.headers["electric-offset"]
    catch = shape(server, {"table": table, "offset": offset, "handle": handle})
    assert catch.status_code == 200
    assert catch.headers["cache-control"] == CATCH_UP_CACHE
    assert "electric-schema" in catch.headers
    assert "electric-cursor" not in catch.headers
    assert catch.headers["electric-up-to-date"] == ""
    assert catch.headers["electric-has-data"] == "false"
    assert catch.headers["electric-offset"] == offset
    up_to_date = catch.json()[-1]
    assert up_to_date["headers"]["control"] == "up-to-date"
    assert re.fullmatch(r"\d+", up_to_date["headers"]["global_last_seen_lsn"])
    assert set(up_to_date["headers"]) == {"control", "global_last_seen_lsn"}

    # A live request with nothing new waits out the long-poll and answers up-to-date.
    live = shape(server, {"table": table, "offset": offset, "handle": handle, "live": "true"})
    assert live.status_code == 200
    assert live.headers["cache-control"] == LIVE_CACHE
    assert "electric-schema" not in live.headers
    cursor = live.headers["electric-cursor"]
    assert re.fullmatch(r"\d+", cursor)
    assert live.headers["electric-offset"] == offset
    assert live.headers["electric-has-data"] == "false"
    assert "electric-up-to-date" in live.headers
    assert [m["headers"]["control"] for m in live.json()] == ["up-to-date"]
    # The next cursor is always a new cache key.
    again = shape(
        server,
        {"table": table, "offset": offset, "handle": handle, "live": "true", "cursor": cursor},
    )
    assert int(again.headers["electric-cursor"]) > int(cursor)

    # A change wakes the live request: the change, then up-to-date with its LSN or later.
    consumer = ShapeConsumer(server.url, {"table": table})
    consumer.sync()
    news = follow(consumer, database, f"INSERT INTO {table} VALUES (2, 'b')", 1)
    assert news[0]["value"] == {"id": "2", "name": "b"}
    last = consumer.exchanges[-1]
    assert last.params.get("live") == "true"
    assert "electric-cursor" in last.headers and "electric-schema" not in last.headers
    assert last.headers["electric-has-data"] == "true"
    lsn = int(news[0]["headers"]["lsn"])
    control = last.messages[-1]["headers"]
    assert control["control"] == "up-to-date"
    assert int(control["global_last_seen_lsn"]) >= lsn


def test_electric_schema_only_on_non_live_200s(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY")
    _, offset, responses = catch_up(server, {"table": table})
    assert all("electric-schema" in r.headers for r in responses)
    errors = [
        shape(server, {"table": table, "offset": "bad"}),
        shape(server, {"table": table, "offset": offset, "handle": "1-2"}),
        shape(server, {"table": table, "offset": "-1"}, secret=False),
    ]
    assert [r.status_code for r in errors] == [400, 409, 401]
    assert all("electric-schema" not in r.headers for r in errors)
    assert all(r.headers["cache-control"] in ("no-store",) for r in (errors[0], errors[2]))


def test_etag_and_if_none_match(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY", "INSERT INTO {t} VALUES (1), (2)")
    first = shape(server, {"table": table, "offset": "-1"})
    etag = first.headers["etag"]
    assert shape(server, {"table": table, "offset": "-1"}).headers["etag"] == etag
    cached = shape(server, {"table": table, "offset": "-1"}, headers={"if-none-match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    listed = shape(
        server, {"table": table, "offset": "-1"}, headers={"if-none-match": f'"x", {etag}'}
    )
    assert listed.status_code == 304
    stale = shape(server, {"table": table, "offset": "-1"}, headers={"if-none-match": '"other"'})
    assert stale.status_code == 200
    assert stale.content == first.content
    # An answer with no data is only valid now: its tag never repeats.
    params = {
        "table": table,
        "offset": first.headers["electric-offset"],
        "handle": first.headers["electric-handle"],
    }
    empty = shape(server, params)
    assert empty.headers["electric-has-data"] == "false"
    assert (
        shape(server, params, headers={"if-none-match": empty.headers["etag"]}).status_code == 200
    )


def test_head_is_get_without_a_body(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY", "INSERT INTO {t} VALUES (1)")
    get = shape(server, {"table": table, "offset": "-1"})
    head = httpx.head(
        f"{server.url}/v1/shape", params={"table": table, "offset": "-1", "secret": SECRET}
    )
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["electric-handle"] == get.headers["electric-handle"]
    assert head.headers["electric-offset"] == get.headers["electric-offset"]


def test_offset_now(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY, n int", "INSERT INTO {t} VALUES (1, 1)")
    consumer = ShapeConsumer(server.url, {"table": table})
    consumer.sync()
    follow(consumer, database, f"UPDATE {table} SET n = 2", 1)
    handle, latest = consumer.handle, consumer.offset

    now = shape(server, {"table": table, "offset": "now"})
    assert now.status_code == 200
    assert now.headers["electric-handle"] == handle
    assert now.headers["electric-offset"] == latest
    assert "electric-up-to-date" in now.headers
    assert [m["headers"]["control"] for m in now.json()] == ["up-to-date"]
    assert "electric-schema" in now.headers
    # A handle given with offset=now is ignored; from `now` on only new changes arrive.
    assert shape(server, {"table": table, "offset": "now", "handle": "1-1"}).status_code == 200
    later = ShapeConsumer(server.url, {"table": table})
    later.handle, later.offset, later.up_to_date = handle, latest, True
    news = follow(later, database, f"INSERT INTO {table} VALUES (3, 3)", 1)
    assert [m["key"] for m in news] == [key(table, "3")]
    assert later.rows == {key(table, "3"): {"id": "3", "n": "3"}}


# -- chunking -----------------------------------------------------------------------------


def test_chunked_responses_hold_every_row_exactly_once(server: SyncProcess, database: str) -> None:
    table = new_table(
        database,
        "id int PRIMARY KEY, payload text",
        "INSERT INTO {t} SELECT g, repeat('p', 100) FROM generate_series(1, 300) g",
    )

    def walk(params: dict) -> tuple[list[str], list[httpx.Response]]:
        keys: list[str] = []
        responses: list[httpx.Response] = []
        while True:
            response = shape(server, params)
            assert response.status_code == 200
            responses.append(response)
            keys += [m["key"] for m in response.json() if "key" in m]
            params = {
                **params,
                "offset": response.headers["electric-offset"],
                "handle": response.headers["electric-handle"],
            }
            if "electric-up-to-date" in response.headers:
                return keys, responses

    keys, responses = walk({"table": table, "offset": "-1"})
    assert len(responses) >= 10
    assert sorted(keys) == sorted(key(table, str(i)) for i in range(1, 301))
    assert_chunked(responses)
    # Chunks are immutable: asking again for any of them gives the same bytes.
    for response in responses[:-1]:
        again = httpx.get(response.url)
        assert again.content == response.content
        assert again.headers["etag"] == response.headers["etag"]

    # Changes are chunked too, even inside one transaction; each is seen exactly once.
    handle = responses[-1].headers["electric-handle"]
    offset = responses[-1].headers["electric-offset"]
    execute(
        database,
        f"INSERT INTO {table} SELECT g, repeat('q', 100) FROM generate_series(301, 500) g; "
        f"UPDATE {table} SET payload = 'short' WHERE id <= 50",
    )
    keys = []
    deadline = time.monotonic() + 30
    responses = []
    while len(keys) < 250:
        assert time.monotonic() < deadline
        more, got = walk({"table": table, "offset": offset, "handle": handle})
        keys += more
        responses += got
        offset = got[-1].headers["electric-offset"]
    assert len(keys) == 250
    assert sorted(keys[:200]) == sorted(key(table, str(i)) for i in range(301, 501))
    assert sorted(keys[200:]) == sorted(key(table, str(i)) for i in range(1, 51))
    assert_chunked([r for r in responses if r.headers["electric-has-data"] == "true"])


def assert_chunked(responses: list[httpx.Response]) -> None:
    """Each response but the last ends at a chunk boundary: past the threshold by one item.

    Stored items are `item,\\n`, and a response is `[` + items + `]`: its length is the
    bytes of its items, which reach the threshold only with their last item.
    """
    offsets = [r.headers["electric-offset"] for r in responses]
    assert len(set(offsets)) == len(offsets), "every response moves the offset"
    for response in responses[:-1]:
        assert "electric-up-to-date" not in response.headers
        lines = response.content[1:-1].split(b",\n")
        size = len(response.content)
        last = len(lines[-1]) + 2
        assert size >= CHUNK_BYTES, size
        assert size - last < CHUNK_BYTES, size


# -- deletion -----------------------------------------------------------------------------


def test_delete_is_405_when_not_allowed(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY")
    handle, _, _ = catch_up(server, {"table": table})
    response = httpx.delete(
        f"{server.url}/v1/shape", params={"table": table, "handle": handle, "secret": SECRET}
    )
    assert response.status_code == 405
    assert shape(server, {"table": table, "offset": "-1"}).headers["electric-handle"] == handle


def test_delete_when_allowed_makes_clients_refetch(sync_database: str, tmp_path: Path) -> None:
    deleting = SyncProcess(sync_database, tmp_path / "data", extra_args=["--allow-shape-deletion"])
    try:
        deleting.start()
        table = new_table(sync_database, "id int PRIMARY KEY", "INSERT INTO {t} VALUES (1)")
        url = f"{deleting.url}/v1/shape"
        handle, offset, _ = catch_up(deleting, {"table": table})

        assert httpx.delete(url, params={"handle": handle}).status_code == 401
        deleted = httpx.delete(url, params={"handle": handle, "secret": SECRET})
        assert deleted.status_code == 202
        again = httpx.delete(url, params={"handle": handle, "secret": SECRET})
        assert again.status_code == 404

        refetch = shape(deleting, {"table": table, "offset": offset, "handle": handle})
        assert refetch.status_code == 409
        assert refetch.json() == [{"headers": {"control": "must-refetch"}}]
        new_handle = refetch.headers["electric-handle"]
        assert new_handle != handle

        # By definition (table and where) too.
        by_table = httpx.delete(url, params={"table": table, "secret": SECRET})
        assert by_table.status_code == 202
        consumer = ShapeConsumer(deleting.url, {"table": table})
        consumer.handle, consumer.offset = new_handle, "0_0"
        consumer.sync()
        assert consumer.refetches == 1
        assert consumer.handle not in (handle, new_handle)
        assert consumer.rows == {key(table, "1"): {"id": "1"}}
    finally:
        deleting.stop()


# -- values and change messages -----------------------------------------------------------

TYPES = """
    id int PRIMARY KEY, ts timestamptz, ts_local timestamp, d date, b bytea, n numeric(10, 3),
    f float8, r real, big bigint, bo bool, ints int[], texts text[], j json, jb jsonb,
    iv interval, u uuid, c char(4), t text, nothing text
"""
VALUES = """
    '2024-01-02 03:04:05.123+02', '2024-01-02 03:04:05', '2024-03-04', '\\xdeadbeef', 12.5,
    0.1, 1.1, 9007199254740993, {bool}, '{{1,2,3}}', '{{"a b",NULL,c}}', '{{"k": [1, 2]}}',
    '{{"k": [1,   2]}}', '1 day 2 hours', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ab',
    E'quote " backslash \\\\ newline \\n é', NULL
"""
EXPECTED = {
    "ts": "2024-01-02 01:04:05.123+00",
    "ts_local": "2024-01-02 03:04:05",
    "d": "2024-03-04",
    "b": "\\xdeadbeef",
    "n": "12.500",
    "f": "0.1",
    "r": "1.1",
    "big": "9007199254740993",
    "ints": "{1,2,3}",
    "texts": '{"a b",NULL,c}',
    "j": '{"k": [1, 2]}',
    "jb": '{"k": [1, 2]}',
    "iv": "P1DT2H",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "c": "ab  ",
    "t": 'quote " backslash \\ newline \n é',
    "nothing": None,
}


def test_values_are_postgres_text_under_electric_settings(
    server: SyncProcess, database: str
) -> None:
    table = new_table(database, TYPES)
    execute(database, f"INSERT INTO {table} VALUES (1, {VALUES.format(bool='true')})")
    consumer = ShapeConsumer(server.url, {"table": table})
    consumer.sync()
    snapshot = consumer.rows[key(table, "1")]
    news = follow(
        consumer,
        database,
        f"INSERT INTO {table} VALUES (2, {VALUES.format(bool='false')}); "
        f"INSERT INTO {table} VALUES (3, {VALUES.format(bool='true')})",
        2,
    )
    live_false, live_true = news[0]["value"], news[1]["value"]
    for name, value in EXPECTED.items():
        assert snapshot[name] == value, name
        assert live_true[name] == value, name
    assert snapshot["id"] == "1" and live_true["id"] == "3"
    # Booleans: the snapshot renders `bool::text` and replication sends pgoutput's text,
    # as in Electric; its client reads both.
    assert snapshot["bo"] in ("true", "t")
    assert live_true["bo"] == "t" and live_false["bo"] == "f"
    schema = orjson.loads(consumer.exchanges[0].headers["electric-schema"])
    assert schema["ints"] == {"type": "int4", "dims": 1}
    assert schema["n"] == {"type": "numeric", "precision": 10, "scale": 3}
    assert schema["c"] == {"type": "bpchar", "max_length": 4}


def test_char_primary_keys_match_between_snapshot_and_changes(
    server: SyncProcess, database: str
) -> None:
    table = new_table(
        database, "id char(4) PRIMARY KEY, v text", "INSERT INTO {t} VALUES ('a', 'x')"
    )
    consumer = ShapeConsumer(server.url, {"table": table})
    consumer.sync()
    assert list(consumer.rows) == [key(table, "a   ")]
    follow(consumer, database, f"UPDATE {table} SET v = 'y'", 1)
    assert consumer.rows == {key(table, "a   "): {"id": "a   ", "v": "y"}}


def test_selected_columns(server: SyncProcess, database: str) -> None:
    table = new_table(
        database,
        'id int PRIMARY KEY, "Name" text, secret text',
        "INSERT INTO {t} VALUES (1, 'a', 's')",
    )
    consumer = ShapeConsumer(server.url, {"table": table, "columns": '"Name",id'})
    consumer.sync()
    assert consumer.rows == {key(table, "1"): {"id": "1", "Name": "a"}}
    assert set(orjson.loads(consumer.exchanges[0].headers["electric-schema"])) == {"id", "Name"}
    # An update of an unselected column is no change to this shape.
    news = follow(
        consumer,
        database,
        f"UPDATE {table} SET secret = 't'; UPDATE {table} SET \"Name\" = 'b'",
        1,
    )
    assert [m["value"] for m in news] == [{"id": "1", "Name": "b"}]


def test_primary_key_change_is_delete_then_insert(server: SyncProcess, database: str) -> None:
    table = new_table(
        database, "id int PRIMARY KEY, v text", "INSERT INTO {t} VALUES (1, 'a'), (2, 'b')"
    )
    consumer = ShapeConsumer(server.url, {"table": table})
    consumer.sync()
    news = follow(consumer, database, f"UPDATE {table} SET id = 10 WHERE id = 1", 2)
    removed, added = news
    assert removed["headers"]["operation"] == "delete"
    assert removed["key"] == key(table, "1")
    assert removed["value"] == {"id": "1"}
    assert removed["headers"]["key_change_to"] == key(table, "10")
    assert added["headers"]["operation"] == "insert"
    assert added["key"] == key(table, "10")
    assert added["value"] == {"id": "10", "v": "a"}
    assert added["headers"]["key_change_from"] == key(table, "1")
    assert added["headers"]["lsn"] == removed["headers"]["lsn"]
    assert added["headers"]["op_position"] == removed["headers"]["op_position"] + 1
    assert added["headers"].get("last") is True
    assert consumer.rows == {
        key(table, "2"): {"id": "2", "v": "b"},
        key(table, "10"): {"id": "10", "v": "a"},
    }


def test_rows_moving_in_and_out_of_the_where_clause(server: SyncProcess, database: str) -> None:
    table = new_table(
        database, "id int PRIMARY KEY, n int, v text", "INSERT INTO {t} VALUES (1, 5, 'a')"
    )
    consumer = ShapeConsumer(server.url, {"table": table, "where": "n > 10"})
    consumer.sync()
    assert consumer.rows == {}

    (moved_in,) = follow(consumer, database, f"UPDATE {table} SET n = 20 WHERE id = 1", 1)
    assert moved_in["headers"]["operation"] == "insert"
    assert moved_in["value"] == {"id": "1", "n": "20", "v": "a"}

    (inside,) = follow(consumer, database, f"UPDATE {table} SET v = 'b' WHERE id = 1", 1)
    assert inside["headers"]["operation"] == "update"
    assert inside["value"] == {"id": "1", "v": "b"}

    (moved_out,) = follow(consumer, database, f"UPDATE {table} SET n = 1 WHERE id = 1", 1)
    assert moved_out["headers"]["operation"] == "delete"
    assert moved_out["key"] == key(table, "1")
    assert consumer.rows == {}

    # Changes outside the shape send nothing: the next change is the insert of id 3.
    news = follow(
        consumer,
        database,
        f"UPDATE {table} SET v = 'c' WHERE id = 1; INSERT INTO {table} VALUES (3, 30, 'x')",
        1,
    )
    assert [m["key"] for m in news] == [key(table, "3")]


def test_replica_full_updates_carry_old_value(server: SyncProcess, database: str) -> None:
    table = new_table(
        database,
        "id int PRIMARY KEY, a text, b text",
        "INSERT INTO {t} VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2')",
    )
    full = ShapeConsumer(server.url, {"table": table, "replica": "full"})
    default = ShapeConsumer(server.url, {"table": table})
    full.sync()
    default.sync()
    sql = f"UPDATE {table} SET a = 'a1-new' WHERE id = 1; DELETE FROM {table} WHERE id = 2"
    update, delete = follow(full, database, sql, 2)
    assert update["headers"]["operation"] == "update"
    assert update["value"] == {"id": "1", "a": "a1-new", "b": "b1"}
    assert update["old_value"] == {"a": "a1"}
    assert delete["headers"]["operation"] == "delete"
    assert delete["value"] == {"id": "2", "a": "a2", "b": "b2"}

    update, delete = follow(default, database, "SELECT 1", 2)
    assert update["value"] == {"id": "1", "a": "a1-new"}
    assert "old_value" not in update
    assert delete["value"] == {"id": "2"}
    assert full.rows == default.rows == {key(table, "1"): {"id": "1", "a": "a1-new", "b": "b1"}}


def test_unchanged_toast_values_are_kept(server: SyncProcess, database: str) -> None:
    table = new_table(database, "id int PRIMARY KEY, big text, n int")
    execute(database, f"ALTER TABLE {table} ALTER COLUMN big SET STORAGE EXTERNAL")
    big = "".join(f"{i:08d}" for i in range(12_500))  # 100 kB, stored out of line
    execute(database, f"INSERT INTO {table} VALUES (1, %s, 1)", (big,))
    shapes = {
        "default": ShapeConsumer(server.url, {"table": table}),
        "full": ShapeConsumer(server.url, {"table": table, "replica": "full"}),
        "where": ShapeConsumer(server.url, {"table": table, "where": "big LIKE '00000000%'"}),
    }
    for consumer in shapes.values():
        consumer.sync()
        assert consumer.rows[key(table, "1")]["big"] == big
    sql = f"UPDATE {table} SET n = 2 WHERE id = 1"
    (default,) = follow(shapes["default"], database, sql, 1)
    assert default["headers"]["operation"] == "update"
    assert default["value"] == {"id": "1", "n": "2"}
    (full,) = follow(shapes["full"], database, "SELECT 1", 1)
    assert full["value"] == {"id": "1", "big": big, "n": "2"}
    assert full["old_value"] == {"n": "1"}
    (moved,) = follow(shapes["where"], database, "SELECT 1", 1)
    assert moved["headers"]["operation"] == "update"  # still in the shape, not deleted
    for consumer in shapes.values():
        assert consumer.rows[key(table, "1")] == {"id": "1", "big": big, "n": "2"}
