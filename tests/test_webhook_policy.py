"""Where webhook subscriptions may send: the multi-tenant platform keeps tenants off its own
machine and private network (at creation and at every delivery); a standalone
`fusebox streams serve` keeps the spec's localhost exception (tests/test_subscriptions.py
covers that mode: local development URLs are accepted and delivered to).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fusebox.http.messages import Request
from fusebox.streams.engine import StreamEngine
from fusebox.streams.protocol import StreamsProtocol
from fusebox.streams.store import FileStore
from fusebox.streams.subscriptions import Subscriptions
from fusebox.streams.webhooks import (
    LocalDevelopmentAllowed,
    PublicAddressesOnly,
    WebhookRefused,
)
from platform_helpers import Admin
from test_subscriptions import Receiver

PRIVATE_URLS = [
    "https://127.0.0.1/hook",
    "http://127.0.0.1:9/hook",
    "http://localhost:9/hook",
    "https://localhost/hook",
    "https://[::1]/hook",
    "https://10.0.0.1/hook",
    "https://172.16.5.4/hook",
    "https://192.168.1.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[fe80::1]/hook",
    "https://[fc00::1]/hook",
    "https://[fd12:3456::1]/hook",
    "https://0.0.0.0/hook",
    "https://[::]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://100.64.0.1/hook",
    "http://example.com/hook",  # not https
    "ftp://example.com/hook",
    "https://printer.local/hook",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_public_only_refuses_private_literals_and_plain_http(url: str) -> None:
    problem = PublicAddressesOnly().url_problem(url)
    assert problem is not None and problem.startswith("webhook.url"), problem


def test_public_only_accepts_public_https() -> None:
    policy = PublicAddressesOnly()
    assert policy.url_problem("https://hooks.example.com/in") is None
    assert policy.url_problem("https://93.184.216.34:8443/in") is None


def test_standalone_default_keeps_the_localhost_exception() -> None:
    policy = LocalDevelopmentAllowed()
    assert policy.url_problem("http://127.0.0.1:9/hook") is None
    assert policy.url_problem("http://localhost:9/hook") is None
    assert policy.url_problem("https://10.0.0.1/hook") is not None


def resolver(table: dict[str, list[str]], asked: list[str] | None = None):
    """A DNS that answers from `table` (a name's answer is what the attacker controls)."""

    async def resolve(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],
        ["fe80::1%2"],
        ["::1"],
        ["93.184.216.34", "192.168.0.10"],  # one private answer among public ones is enough
        [],
    ],
)
def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(answer: list[str]) -> None:
    policy = PublicAddressesOnly(resolver({"hooks.example.com": answer}))
    with pytest.raises(WebhookRefused):
        asyncio.run(policy.target("https://hooks.example.com/in"))


def test_an_unresolvable_name_is_refused() -> None:
    policy = PublicAddressesOnly(resolver({}))
    with pytest.raises(WebhookRefused, match="cannot resolve"):
        asyncio.run(policy.target("https://nowhere.example.com/in"))


def test_delivery_connects_to_the_address_that_was_checked() -> None:
    policy = PublicAddressesOnly(resolver({"hooks.example.com": ["93.184.216.34"]}))
    target = asyncio.run(policy.target("https://hooks.example.com:8443/in?x=1"))
    assert target.url == "https://93.184.216.34:8443/in?x=1"
    assert target.headers == {"host": "hooks.example.com:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}

    v6 = PublicAddressesOnly(resolver({"hooks.example.com": ["2606:2800:220:1::1"]}))
    target = asyncio.run(v6.target("https://hooks.example.com/in"))
    assert target.url == "https://[2606:2800:220:1::1]/in"


# -- in an engine: the delivery that DNS rebinding would have made is not made --------------


def test_subscriptions_with_the_public_policy_never_call_a_rebound_name(
    tmp_path: Path,
) -> None:
    receiver = Receiver()  # a real receiver on 127.0.0.1: what the attacker wants reached
    port = int(receiver.url.split(":")[2].split("/")[0])
    asked: list[str] = []
    # The name passed the creation check; at delivery it resolves to this machine.
    policy = PublicAddressesOnly(resolver({"rebind.example.com": ["127.0.0.1"]}, asked))

    async def scenario() -> dict[str, Any]:
        engine = StreamEngine(FileStore(tmp_path / "log"))
        await engine.start()
        subscriptions = Subscriptions(engine, tmp_path / "subs", webhook_policy=policy)
        await subscriptions.start()
        protocol = StreamsProtocol(engine, extra_routes=subscriptions.route)

        async def call(method: str, path: str, body: Any = None) -> Any:
            data = b"" if body is None else orjson.dumps(body)
            headers = {"content-type": "application/json"}
            return await protocol.handle(Request(method, path, "", headers, data))

        try:
            hook = f"https://rebind.example.com:{port}/hook"
            created = await call(
                "PUT",
                "/v1/stream/__ds/subscriptions/rebound",
                {"type": "webhook", "pattern": "orders/*", "webhook": {"url": hook}},
            )
            assert created.status == 201, created.body
            assert (await call("PUT", "/v1/stream/orders/1", [{"n": 1}])).status == 201
            deadline = time.monotonic() + 30
            while True:
                state = json.loads(
                    (await call("GET", "/v1/stream/__ds/subscriptions/rebound")).body
                )
                if state["status"] == "failed" or time.monotonic() > deadline:
                    return state
                await asyncio.sleep(0.05)
        finally:
            await subscriptions.stop()
            await engine.stop()

    try:
        state = asyncio.run(scenario())
    finally:
        receiver.close()
    assert state["status"] == "failed", state  # the attempt was made, and refused
    assert "rebind.example.com" in asked
    assert receiver.deliveries == []


# -- on the platform ----------------------------------------------------------------------------


def test_the_platform_refuses_private_webhook_urls_with_a_clear_400(fusebox_platform: Any) -> None:
    admin = Admin(fusebox_platform)
    service = admin.service(admin.environment("hooks"), "streams")
    auth = {"authorization": f"Bearer {service['secret']}"}
    base = f"{service['url']}/__ds/subscriptions"
    for index, url in enumerate(PRIVATE_URLS):
        body = {"type": "webhook", "pattern": "a/*", "webhook": {"url": url}}
        response = httpx.put(f"{base}/private-{index}", json=body, headers=auth)
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "WEBHOOK_URL_REJECTED"
        assert error["message"].startswith("webhook.url"), error
    # A public https URL is a subscription like any other.
    body = {"type": "webhook", "pattern": "a/*", "webhook": {"url": "https://hooks.example.com/x"}}
    assert httpx.put(f"{base}/public", json=body, headers=auth).status_code == 201
