"""examples/proxy.py, the documented shape proxy, in front of a real `fusebox serve`.

The proxy runs in this process under uvicorn, as a user's backend would run it; the Sync
source is made through the admin API on a real Postgres. The official Electric client
reads through it (initial rows and live changes, over long-poll and SSE); the Python tests
check what a browser can and cannot see, that the browser cannot choose the credentials,
and that a compressing edge between the proxy and Fusebox does not break the responses.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import ROOT, free_port, run_node
from platform_helpers import (
    Admin,
    Platform,
    items_database,
    poll,
    running_platform,
)
from postgres import PostgresCluster

pytestmark = pytest.mark.timeout(300)


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shape_proxy", ROOT / "examples" / "proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


proxy = _load_example()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port, in a thread of this process."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        poll(lambda: server.started, timeout=30, what="uvicorn to start")
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster) -> Iterator[tuple[str, str]]:
    with items_database(postgres, "proxy") as (name, url):
        postgres.psql("CREATE TABLE secrets (id int PRIMARY KEY, code text)", name)
        postgres.psql("INSERT INTO secrets VALUES (1, 'hidden')", name)
        yield name, url


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, database: tuple[str, str]
) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("proxy")) as platform:
        yield platform


@pytest.fixture(scope="module")
def source(platform: Platform, database: tuple[str, str]) -> dict[str, Any]:
    admin = Admin(platform)
    environment = admin.environment("proxy")
    return admin.service(environment, "postgres", database_url=database[1])


def settings_for(source: dict[str, Any], **changes: str) -> Any:
    values = {"fusebox_url": source["url"], "source_id": source["id"], "secret": source["secret"]}
    return proxy.Settings(**{**values, **changes})


@pytest.fixture(scope="module")
def proxy_url(source: dict[str, Any]) -> Iterator[str]:
    with serving(proxy.create_app(settings_for(source))) as url:
        yield f"{url}/v1/shape"


def _get(url: str, **params: str) -> httpx.Response:
    """A shape request as a browser on another origin makes it (retried while the new
    source answers 503, as Electric's client does)."""

    def attempt() -> httpx.Response | None:
        response = httpx.get(
            url, params=params, headers={"origin": "https://app.example"}, timeout=30
        )
        return None if response.status_code == 503 else response

    return poll(attempt, what="a shape answer")


def _rows(response: httpx.Response) -> list[dict[str, Any]]:
    """The rows of a shape log response (values as Electric sends them: text)."""
    return sorted((m["value"] for m in response.json() if "value" in m), key=lambda r: r["id"])


def test_the_official_client_syncs_through_the_proxy(
    proxy_url: str, database: tuple[str, str], postgres: PostgresCluster
) -> None:
    done = run_node(
        "proxy_e2e.mjs",
        {"PROXY_URL": proxy_url, "DATABASE_URL": database[1], "TABLE": "items"},
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    first_two = [{"id": 1, "title": "first"}, {"id": 2, "title": "second"}]
    all_three = [*first_two, {"id": 3, "title": "inserted live"}]
    assert result["initial"] == first_two
    assert result["initialSse"] == first_two
    assert result["live"] == all_three
    assert result["liveSse"] == all_three
    queries = [parse_qs(urlsplit(url).query) for url in result["urls"]]
    assert any(q.get("live") == ["true"] and "live_sse" not in q for q in queries)
    assert any(q.get("live_sse") == ["true"] for q in queries)  # SSE went through
    # The browser never named the source or held its secret.
    assert not any({"source_id", "secret", "api_secret"} & q.keys() for q in queries)
    postgres.psql("DELETE FROM items WHERE id = 3", database[0])


def test_the_browser_sees_electric_headers_and_never_the_secret(
    proxy_url: str, source: dict[str, Any]
) -> None:
    response = _get(proxy_url, table="items", offset="-1")
    assert response.status_code == 200, response.text
    assert {"1", "2"} <= {row["id"] for row in _rows(response)}
    for name in ("electric-handle", "electric-offset", "electric-schema", "cache-control"):
        assert response.headers.get(name), name
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"electric-handle", "electric-offset", "electric-schema", "electric-cursor"} <= exposed
    assert {"electric-up-to-date"} <= exposed
    assert response.headers["access-control-allow-origin"] in ("*", "https://app.example")
    assert "content-encoding" not in response.headers
    seen = response.content + str(response.headers.multi_items()).encode()
    assert source["secret"].encode() not in seen

    # An error from Fusebox comes back as it is, still without the secret.
    bad = _get(proxy_url, table="no_such_table", offset="-1")
    assert bad.status_code == 400, bad.text
    assert source["secret"].encode() not in bad.content + str(bad.headers.multi_items()).encode()


def test_the_browser_cannot_supply_or_replace_the_credentials(source: dict[str, Any]) -> None:
    # Credentials in the browser's query are dropped, so they cannot pick another source.
    forged = {"source_id": "svc_00000000000000000000000000", "secret": "fbxsec_forged"}
    with serving(proxy.create_app(settings_for(source))) as url:
        response = _get(f"{url}/v1/shape", table="items", offset="-1", api_secret="x", **forged)
    assert response.status_code == 200, response.text
    assert {"1", "2"} <= {row["id"] for row in _rows(response)}

    # And the right secret from the browser does not stand in for the proxy's own: with a
    # proxy configured wrongly, a browser that knows the secret still gets nothing.
    with serving(proxy.create_app(settings_for(source, secret="fbxsec_wrong"))) as url:
        response = _get(
            f"{url}/v1/shape",
            table="items",
            offset="-1",
            source_id=source["id"],
            secret=source["secret"],
        )
    assert response.status_code == 401, response.text
    assert "value" not in response.text


def test_the_authorize_hook_decides_the_shape(source: dict[str, Any]) -> None:
    async def only_item_one(request: Request, shape: dict[str, str]) -> dict[str, str]:
        if request.headers.get("x-user") != "alice":
            raise proxy.Refused(401, "sign in first")
        if shape.get("table") != "items":
            raise proxy.Refused(403, "only items are synced")
        # Whatever the browser asked for, alice sees row 1 only.
        return {**shape, "where": "id = $1", "params[1]": "1"}

    app = proxy.create_app(settings_for(source), authorize=only_item_one)
    with serving(app) as url:
        shape_url = f"{url}/v1/shape"
        anonymous = httpx.get(shape_url, params={"table": "items", "offset": "-1"})
        assert anonymous.status_code == 401
        assert anonymous.json() == {"message": "sign in first"}

        alice = {"x-user": "alice"}
        other = httpx.get(shape_url, params={"table": "secrets", "offset": "-1"}, headers=alice)
        assert other.status_code == 403
        assert "hidden" not in other.text

        def pinned() -> httpx.Response | None:
            response = httpx.get(
                shape_url,
                params={"table": "items", "offset": "-1", "where": "id > 0"},
                headers=alice,
            )
            return None if response.status_code == 503 else response

        response = poll(pinned, what="the pinned shape")
        assert response.status_code == 200, response.text
        assert _rows(response) == [{"id": "1", "title": "first"}]


def _compressing_edge(origin: str) -> Starlette:
    """A stand-in for a CDN that gzips: forwards to Fusebox and compresses the answer."""

    async def forward(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=60) as client:
            upstream = await client.get(f"{origin}/v1/shape", params=request.query_params)
        headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        }
        return Response(upstream.content, upstream.status_code, headers)

    return Starlette(
        routes=[Route("/v1/shape", forward)],
        middleware=[Middleware(GZipMiddleware, minimum_size=0)],
    )


def test_a_compressed_upstream_reaches_the_browser_intact(
    platform: Platform, source: dict[str, Any]
) -> None:
    with serving(_compressing_edge(platform.url)) as edge:
        direct = httpx.get(
            f"{edge}/v1/shape",
            params={"table": "items", "offset": "-1", "source_id": source["id"],
                    "secret": source["secret"]},
            headers={"accept-encoding": "gzip"},
        )  # fmt: skip
        # The edge really compresses (so the next request goes through a gzipped body).
        assert direct.headers.get("content-encoding") == "gzip"
        assert direct.status_code == 200 and direct.json()

        settings = settings_for(source, fusebox_url=f"{edge}/v1/shape")
        with serving(proxy.create_app(settings)) as url, httpx.Client() as client:
            with client.stream(
                "GET",
                f"{url}/v1/shape",
                params={"table": "items", "offset": "-1"},
                headers={"accept-encoding": "gzip"},
            ) as response:
                raw = b"".join(response.iter_raw())
            assert response.status_code == 200
            # No stale encoding or length: the bytes on the wire are the JSON itself.
            assert "content-encoding" not in response.headers
            length = response.headers.get("content-length")
            assert length is None or int(length) == len(raw)
            rows = sorted(m["value"]["id"] for m in json.loads(raw) if "value" in m)
            assert {"1", "2"} <= set(rows)
            assert response.headers.get("electric-handle")
