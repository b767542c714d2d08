"""What the gateway answers when the credentials name no service, or a service that does
not serve: unknown IDs cost no repeated control-database query, and a service in `error`
says why instead of asking clients to retry for ever.

The in-process tests run the real gateway over a real control plane (SQLite, the admin
API on a NullRuntime, so no engine runs); the last one runs `fusebox serve` with a real
Postgres whose checks fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import event

from conftest import CloudHarness
from fusebox.cloud import resources as resources_module
from fusebox.cloud.gateway import Gateway, ShapeTokens, Tenants
from fusebox.cloud.ids import new_id
from fusebox.http.messages import Request, Response
from platform_helpers import Admin, poll
from postgres import PostgresCluster
from test_cloud_secrets import make_service

API = "/api/v1"


def gateway_of(cloud: CloudHarness) -> Gateway:
    control: Any = cloud.control

    async def no_admin(_request: Request) -> Response:
        raise AssertionError("no admin request expected")

    return Gateway(
        Tenants(sources={}, streams={}),
        control.verify_service_secret,
        ShapeTokens(control.resources.verify_client_token),
        no_admin,
        lambda: Response(200),
        control.service_status,
    )


def shape_request(gateway: Gateway, source_id: str, secret: str) -> tuple[int, Any]:
    query = f"table=items&offset=-1&source_id={source_id}&secret={secret}"
    response = asyncio.run(gateway.handle(Request("GET", "/v1/shape", query, {}, b"")))
    return response.status, orjson.loads(response.body)


def stream_request(gateway: Gateway, service_id: str, secret: str) -> tuple[int, Any]:
    request = Request(
        "GET", f"/v1/stream/{service_id}/orders", "", {"authorization": f"Bearer {secret}"}, b""
    )
    response = asyncio.run(gateway.handle(request))
    return response.status, orjson.loads(response.body)


@contextmanager
def counting_queries(cloud: CloudHarness) -> Iterator[list[str]]:
    """The SQL statements run on the control database inside the block."""
    statements: list[str] = []
    engine = cloud.control.engine  # type: ignore[attr-defined]

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


# -- unknown service IDs ----------------------------------------------------------------------


def test_an_unknown_service_id_is_401_every_time_and_queried_once(cloud: CloudHarness) -> None:
    gateway = gateway_of(cloud)
    unknown = new_id("svc")
    with counting_queries(cloud) as first:
        assert shape_request(gateway, unknown, "fbxsec_guess")[0] == 401
    assert first, "the first miss must look in the database"
    answers = []
    with counting_queries(cloud) as later:
        for _ in range(20):
            answers.append(shape_request(gateway, unknown, "fbxsec_guess"))
            answers.append(stream_request(gateway, unknown, "fbxsec_guess"))
    assert later == []
    assert {status for status, _ in answers} == {401}
    assert len({orjson.dumps(body) for _, body in answers[::2]}) == 1  # the same answer


def test_misses_are_bounded(cloud: CloudHarness) -> None:
    misses = cloud.control.resources._misses  # type: ignore[attr-defined]
    gateway = gateway_of(cloud)
    misses.size = 50
    for _ in range(200):
        assert shape_request(gateway, new_id("svc"), "x")[0] == 401
    assert len(misses) == 50


def test_a_service_created_right_after_a_miss_works_at_once(
    cloud: CloudHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = cloud.login()
    gateway = gateway_of(cloud)
    # Someone asks for the ID before it exists (it is random, so this is what a service
    # made by another node, or a guess that later comes true, looks like) ...
    upcoming = new_id("svc")
    assert shape_request(gateway, upcoming, "fbxsec_guess")[0] == 401
    # ... then the service is made with that very ID.
    real_new_id = resources_module.new_id
    monkeypatch.setattr(
        resources_module, "new_id", lambda kind: upcoming if kind == "svc" else real_new_id(kind)
    )
    created = make_service(cloud, headers, "streams")
    assert created["id"] == upcoming
    # Its secret is good at once; it is provisioning, so the client is asked to wait.
    status, body = stream_request(gateway, upcoming, created["secret"])
    assert status == 503, body
    assert body["error"]["code"] == "service_not_active"
    assert shape_request(gateway, upcoming, "fbxsec_wrong")[0] == 401


# -- services that do not serve -----------------------------------------------------------------


def test_a_service_in_error_says_why_and_is_not_retried(cloud: CloudHarness) -> None:
    headers = cloud.login()
    gateway = gateway_of(cloud)
    cloud.runtime.start_error = RuntimeError("the engine could not start: disk full")  # type: ignore[attr-defined]
    failed = make_service(cloud, headers, "streams")
    cloud.settle()
    assert (
        cloud.client.get(f"{API}/services/{failed['id']}", headers=headers).json()["state"]
        == "error"
    )

    status, body = stream_request(gateway, failed["id"], failed["secret"])
    assert status == 424, body
    error = body["error"]
    assert error["code"] == "service_error"
    assert "is in error" in error["message"] and "disk full" in error["message"]
    assert f"/api/v1/services/{failed['id']}/events" in error["message"]
    assert error["check"] == "start"

    # A wrong secret still learns nothing about the service.
    status, body = stream_request(gateway, failed["id"], "fbxsec_wrong")
    assert status == 401
    assert "disk full" not in orjson.dumps(body).decode()


def test_a_provisioning_service_asks_clients_to_wait(cloud: CloudHarness) -> None:
    created = make_service(cloud, cloud.login())  # postgres
    cloud.settle()  # then put it back, as after a restart that resumes provisioning
    cloud.control.resources.set_state(created["id"], "provisioning")  # type: ignore[attr-defined]
    response = asyncio.run(
        gateway_of(cloud).handle(
            Request(
                "GET",
                "/v1/shape",
                f"table=items&offset=-1&source_id={created['id']}&secret={created['secret']}",
                {},
                b"",
            )
        )
    )
    assert response.status == 503
    assert ("retry-after", "5") in response.headers
    assert orjson.loads(response.body)["code"] == "service_not_active"


def test_a_source_whose_checks_failed_answers_424_on_the_platform(
    fusebox_platform: Any, postgres: PostgresCluster
) -> None:
    admin = Admin(fusebox_platform)
    environment_id = admin.environment("broken")
    # A database that does not exist: the connection check fails.
    url = postgres.url("no_such_database_here")
    created = admin.post(
        "/services",
        {"environment_id": environment_id, "type": "postgres", "region": "local",
         "database_url": url},
    )  # fmt: skip
    settled = admin.settle(created["id"])
    assert settled["state"] == "error", settled

    def answer() -> httpx.Response | None:
        response = httpx.get(
            f"{fusebox_platform.url}/v1/shape",
            params={"table": "items", "offset": "-1", "source_id": created["id"],
                    "secret": created["secret"]},
        )  # fmt: skip
        return response if response.status_code != 503 else None

    response = poll(answer, what="the service's error to be served")
    assert response.status_code == 424, response.text
    body = response.json()
    assert body["code"] == "service_error" and body["check"] == "connection"
    assert "no_such_database_here" in body["reason"]
    assert "the connection check failed" in body["message"]
    assert created["secret"] not in response.text
    assert "retry-after" not in response.headers
