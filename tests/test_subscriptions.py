"""Subscriptions (`__ds/`): webhook and pull-wake delivery against a real server process."""

from __future__ import annotations

import base64
import json
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import StreamsProcess
from fusebox.streams.subscription_model import compile_glob


class Receiver:
    """A local webhook endpoint that records each delivery and answers from a script."""

    def __init__(self) -> None:
        self.deliveries: list[dict] = []
        self.replies: list[tuple[int, dict]] = []  # consumed in order, then 200 {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                with receiver._lock:
                    receiver.deliveries.append(
                        {
                            "raw": raw,
                            "body": json.loads(raw),
                            "signature": self.headers.get("webhook-signature"),
                        }
                    )
                    status, reply = receiver.replies.pop(0) if receiver.replies else (200, {})
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, count: int) -> list[dict]:
        wait_until(lambda: len(self.deliveries) >= count)
        with self._lock:
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def sub_url(server: StreamsProcess, sub_id: str, action: str = "") -> str:
    url = f"{server.url}/v1/stream/__ds/subscriptions/{sub_id}"
    return f"{url}/{action}" if action else url


def stream_url(server: StreamsProcess, path: str) -> str:
    return f"{server.url}/v1/stream/{path}"


def put_json_stream(server: StreamsProcess, path: str, body: object) -> None:
    response = httpx.put(
        stream_url(server, path),
        headers={"content-type": "application/json"},
        content=json.dumps(body),
    )
    assert response.status_code == 201


def append_json(server: StreamsProcess, path: str, body: object) -> None:
    response = httpx.post(
        stream_url(server, path),
        headers={"content-type": "application/json"},
        content=json.dumps(body),
    )
    assert response.status_code == 204


def verifies(raw: bytes, header: str, jwks: dict) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(","))
    key = next(k for k in jwks["keys"] if k["kid"] == fields["kid"])
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
    signature = base64.urlsafe_b64decode(fields["ed25519"] + "=" * (-len(fields["ed25519"]) % 4))
    try:
        public.verify(signature, fields["t"].encode() + b"." + raw)
    except InvalidSignature:
        return False
    return True


def claim(server: StreamsProcess, sub_id: str, worker: str) -> httpx.Response:
    return httpx.post(sub_url(server, sub_id, "claim"), json={"worker": worker})


def ack(server: StreamsProcess, sub_id: str, token: str, body: dict) -> httpx.Response:
    return httpx.post(
        sub_url(server, sub_id, "ack"), json=body, headers={"authorization": f"Bearer {token}"}
    )


def pull_subscription(server: StreamsProcess, sub_id: str, wake: str, lease_ms: int) -> None:
    put_json_stream(server, wake, [])
    response = httpx.put(
        sub_url(server, sub_id),
        json={
            "type": "pull-wake",
            "pattern": "jobs/*",
            "wake_stream": wake,
            "lease_ttl_ms": lease_ms,
        },
    )
    assert response.status_code == 201


def wake_events(server: StreamsProcess, wake: str) -> list[dict]:
    return httpx.get(stream_url(server, wake)).json()


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/*", "other/a", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("a/**/z", "a/b/c", False),
        ("**", "anything/at/all", True),
        ("*/x", "a/x", True),
        ("ev*", "events", False),  # `*` is a whole segment, not a wildcard inside one
        ("a.b/*", "axb/c", False),
    ],
)
def test_glob(pattern: str, path: str, matches: bool) -> None:
    assert (compile_glob(pattern).fullmatch(path + "/") is not None) is matches


def test_create_confirm_conflict_get_delete(streams_server: StreamsProcess) -> None:
    config = {
        "type": "webhook",
        "pattern": "orders/*",
        "streams": ["audit/log", "/audit/log/"],
        "webhook": {"url": "http://localhost:9/hook"},
        "description": "orders",
    }
    created = httpx.put(sub_url(streams_server, "s1"), json=config)
    assert created.status_code == 201
    body = created.json()
    assert body["id"] == body["subscription_id"] == "s1"
    assert body["lease_ttl_ms"] == 30000
    assert body["status"] == "active"
    assert body["streams"] == [
        {
            "path": "audit/log",
            "link_type": "explicit",
            "acked_offset": body["streams"][0]["acked_offset"],
        }
    ]
    assert "webhook_secret" not in body and "secret" not in json.dumps(body)

    # The same configuration, spelled differently, re-confirms.
    again = httpx.put(sub_url(streams_server, "s1"), json={**config, "streams": ["audit/log"]})
    assert again.status_code == 200
    assert again.json()["created_at"] == body["created_at"]

    conflict = httpx.put(sub_url(streams_server, "s1"), json={**config, "description": "other"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "SUBSCRIPTION_ALREADY_EXISTS"

    got = httpx.get(sub_url(streams_server, "s1"))
    assert got.status_code == 200
    assert got.json()["webhook"]["url"] == "http://localhost:9/hook"
    assert got.headers["access-control-allow-origin"] == "*"

    assert httpx.delete(sub_url(streams_server, "s1")).status_code == 204
    missing = httpx.get(sub_url(streams_server, "s1"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "SUBSCRIPTION_NOT_FOUND"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "carrier-pigeon", "pattern": "a/*"},
        {"type": "webhook", "webhook": {"url": "http://localhost/hook"}},
        {"type": "webhook", "pattern": "a/*"},
        {"type": "pull-wake", "pattern": "a/*"},
        {"type": "pull-wake", "pattern": "a/*", "wake_stream": "w", "lease_ttl_ms": 999},
        {"type": "pull-wake", "pattern": "__ds/*", "wake_stream": "w"},
    ],
)
def test_invalid_configurations(streams_server: StreamsProcess, body: dict) -> None:
    response = httpx.put(sub_url(streams_server, "bad"), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://example.com/hook",
        "https://10.1.2.3/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://printer.local/hook",
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "not a url",
    ],
)
def test_unsafe_webhook_urls_are_rejected(streams_server: StreamsProcess, url: str) -> None:
    body = {"type": "webhook", "pattern": "a/*", "webhook": {"url": url}}
    response = httpx.put(sub_url(streams_server, "unsafe"), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "WEBHOOK_URL_REJECTED"
    assert httpx.get(sub_url(streams_server, "unsafe")).status_code == 404


@pytest.mark.parametrize(
    "url", ["http://localhost:9/hook", "http://127.0.0.5:9/hook", "http://[::1]:9/hook"]
)
def test_local_development_webhook_urls_are_accepted(
    streams_server: StreamsProcess, url: str
) -> None:
    body = {"type": "webhook", "pattern": "a/*", "webhook": {"url": url}}
    assert httpx.put(sub_url(streams_server, "local"), json=body).status_code == 201


def test_jwks(streams_server: StreamsProcess) -> None:
    response = httpx.get(f"{streams_server.url}/v1/stream/__ds/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert key["use"] == "sig" and key["kid"].startswith("ds_")
    assert "d" not in key  # never the private part
    assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32


def test_unknown_control_routes(streams_server: StreamsProcess) -> None:
    assert httpx.get(f"{streams_server.url}/v1/stream/__ds/nothing").status_code == 404
    assert httpx.put(f"{streams_server.url}/v1/stream/__ds/jwks.json").status_code == 405
    # Reserved paths are never streams.
    created = httpx.put(f"{streams_server.url}/v1/stream/__ds/mine", content=b"x")
    assert created.status_code == 404


def test_explicit_membership(streams_server: StreamsProcess, receiver: Receiver) -> None:
    put_json_stream(streams_server, "feed/existing", [{"n": 1}])
    body = {"type": "webhook", "pattern": "feed/*", "webhook": {"url": receiver.url}}
    assert httpx.put(sub_url(streams_server, "m"), json=body).status_code == 201
    add = httpx.post(
        sub_url(streams_server, "m", "streams"), json={"streams": ["other/x", "feed/existing"]}
    )
    assert add.status_code == 204

    def links() -> dict[str, str]:
        got = httpx.get(sub_url(streams_server, "m")).json()
        return {s["path"]: s["link_type"] for s in got["streams"]}

    assert links() == {"feed/existing": "explicit", "other/x": "explicit"}
    # Encoded slashes in the path are the stream path's own.
    for path in ("other%2Fx", "feed%2Fexisting", "never%2Flinked"):
        removed = httpx.delete(sub_url(streams_server, "m", f"streams/{path}"))
        assert removed.status_code == 204
    assert links() == {"feed/existing": "glob"}  # the pattern still matches it
    # Linking at the tail means history is not replayed.
    assert receiver.deliveries == []


# -- webhook delivery ---------------------------------------------------------------------


def test_webhook_delivery_is_signed_and_callback_fences(
    streams_server: StreamsProcess, receiver: Receiver
) -> None:
    body = {
        "type": "webhook",
        "pattern": "orders/*",
        "webhook": {"url": receiver.url},
        "lease_ttl_ms": 600_000,
    }
    created = httpx.put(sub_url(streams_server, "hook"), json=body).json()
    jwks = httpx.get(created["webhook"]["signing"]["jwks_url"]).json()

    put_json_stream(streams_server, "orders/1", {"item": "tea"})
    [delivery] = receiver.wait_for(1)
    assert verifies(delivery["raw"], delivery["signature"], jwks)
    assert not verifies(delivery["raw"] + b" ", delivery["signature"], jwks)
    note = delivery["body"]
    assert note["subscription_id"] == "hook"
    assert note["generation"] == 1
    assert note["wake_id"].startswith("w_")
    assert note["callback_url"] == sub_url(streams_server, "hook", "callback")
    [stream] = note["streams"]
    assert stream["path"] == "orders/1" and stream["has_pending"] is True
    assert stream["acked_offset"] < stream["tail_offset"]

    def callback(payload: dict, token: str = note["callback_token"]) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"}
        return httpx.post(note["callback_url"], json=payload, headers=headers)

    wake = {"wake_id": note["wake_id"], "generation": note["generation"]}
    assert callback(wake, token="forged.token").status_code == 401
    no_token = httpx.post(note["callback_url"], json=wake)
    assert no_token.status_code == 401
    wrong_wake = callback({**wake, "wake_id": "w_other"})
    assert wrong_wake.status_code == 409
    assert wrong_wake.json()["error"]["code"] == "FENCED"
    too_far = [{"stream": "orders/1", "offset": "0000000000000000_0000000000099999"}]
    beyond = callback({**wake, "acks": too_far})
    assert beyond.status_code == 409
    assert beyond.json()["error"]["code"] == "INVALID_OFFSET"

    # A heartbeat, then done with the ack.
    assert callback(wake).json() == {"ok": True, "next_wake": False}
    acks = [{"stream": "orders/1", "offset": stream["tail_offset"]}]
    done = callback({**wake, "acks": acks, "done": True})
    assert done.status_code == 200
    assert done.json() == {"ok": True, "next_wake": False}
    stale = callback({**wake, "acks": acks, "done": True})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "FENCED"
    got = httpx.get(sub_url(streams_server, "hook")).json()
    assert got["streams"] == [
        {"path": "orders/1", "link_type": "glob", "acked_offset": stream["tail_offset"]}
    ]

    # New data wakes the next generation, which reports only what is pending.
    append_json(streams_server, "orders/1", {"item": "cake"})
    second = receiver.wait_for(2)[1]["body"]
    assert second["generation"] == 2
    [again] = second["streams"]
    assert again["acked_offset"] == stream["tail_offset"] and again["has_pending"] is True


def test_webhook_done_acks_the_snapshot(streams_server: StreamsProcess, receiver: Receiver) -> None:
    receiver.replies = [(200, {"done": True})]
    body = {"type": "webhook", "streams": ["orders/a"], "webhook": {"url": receiver.url}}
    assert httpx.put(sub_url(streams_server, "sync"), json=body).status_code == 201
    put_json_stream(streams_server, "orders/a", [{"n": 1}, {"n": 2}])
    [delivery] = receiver.wait_for(1)
    tail = delivery["body"]["streams"][0]["tail_offset"]

    def acked() -> str:
        return httpx.get(sub_url(streams_server, "sync")).json()["streams"][0]["acked_offset"]

    wait_until(lambda: acked() == tail)
    assert len(receiver.deliveries) == 1  # nothing was left pending


def test_failed_webhook_is_retried(streams_server: StreamsProcess, receiver: Receiver) -> None:
    receiver.replies = [(500, {}), (200, {"done": True})]
    body = {"type": "webhook", "pattern": "retry/*", "webhook": {"url": receiver.url}}
    assert httpx.put(sub_url(streams_server, "retry"), json=body).status_code == 201
    put_json_stream(streams_server, "retry/1", {"n": 1})
    first, second = receiver.wait_for(2)
    # The retry redelivers the same wake rather than starting a new generation.
    assert first["body"]["wake_id"] == second["body"]["wake_id"]
    assert second["body"]["generation"] == 1

    def state() -> dict:
        return httpx.get(sub_url(streams_server, "retry")).json()

    tail = first["body"]["streams"][0]["tail_offset"]
    wait_until(lambda: state()["streams"][0]["acked_offset"] == tail)
    assert state()["status"] == "active"


def test_expired_webhook_lease_wakes_again(
    streams_server: StreamsProcess, receiver: Receiver
) -> None:
    body = {
        "type": "webhook",
        "pattern": "slow/*",
        "webhook": {"url": receiver.url},
        "lease_ttl_ms": 1000,
    }
    assert httpx.put(sub_url(streams_server, "slow"), json=body).status_code == 201
    put_json_stream(streams_server, "slow/1", {"n": 1})
    first, second = receiver.wait_for(2)[:2]
    assert second["body"]["generation"] == first["body"]["generation"] + 1
    old = first["body"]
    late = httpx.post(
        old["callback_url"],
        json={"wake_id": old["wake_id"], "generation": old["generation"], "done": True},
        headers={"authorization": f"Bearer {old['callback_token']}"},
    )
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "FENCED"


# -- pull-wake ------------------------------------------------------------------------------


def test_pull_wake_claim_ack_release(streams_server: StreamsProcess) -> None:
    pull_subscription(streams_server, "pool", "wake/pool", lease_ms=600_000)
    no_work = claim(streams_server, "pool", "w1")
    assert no_work.status_code == 409
    assert no_work.json()["error"]["code"] == "NO_PENDING_WORK"

    put_json_stream(streams_server, "jobs/1", {"job": 1})
    wait_until(lambda: wake_events(streams_server, "wake/pool"))
    [event] = wake_events(streams_server, "wake/pool")
    assert event["type"] == "wake" and event["subscription_id"] == "pool"
    assert event["stream"] == "jobs/1" and event["generation"] == 1

    first = claim(streams_server, "pool", "w1")
    assert first.status_code == 200
    claimed = first.json()
    assert claimed["generation"] == 1 and claimed["lease_ttl_ms"] == 600_000
    busy = claim(streams_server, "pool", "w2")
    assert busy.status_code == 409
    assert busy.json()["error"] == {
        "code": "ALREADY_CLAIMED",
        "message": busy.json()["error"]["message"],
        "current_holder": "w1",
        "generation": 1,
    }

    token = claimed["token"]
    wake = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
    tail = claimed["streams"][0]["tail_offset"]
    heartbeat = ack(streams_server, "pool", token, wake)
    assert heartbeat.json() == {"ok": True, "next_wake": False}
    wrong_generation = ack(streams_server, "pool", token, {**wake, "generation": 2})
    assert wrong_generation.status_code == 409
    assert wrong_generation.json()["error"]["code"] == "FENCED"

    # More data while claimed: done acks only part, so the next wake follows at once.
    append_json(streams_server, "jobs/1", {"job": 2})
    done = ack(
        streams_server,
        "pool",
        token,
        {**wake, "acks": [{"stream": "jobs/1", "offset": tail}], "done": True},
    )
    assert done.json() == {"ok": True, "next_wake": True}
    assert ack(streams_server, "pool", token, wake).json()["error"]["code"] == "FENCED"
    wait_until(lambda: len(wake_events(streams_server, "wake/pool")) == 2)
    assert wake_events(streams_server, "wake/pool")[1]["generation"] == 2

    second = claim(streams_server, "pool", "w2").json()
    assert second["generation"] == 2
    assert second["streams"][0]["acked_offset"] == tail
    release = httpx.post(
        sub_url(streams_server, "pool", "release"),
        json={"wake_id": second["wake_id"], "generation": 2},
        headers={"authorization": f"Bearer {second['token']}"},
    )
    assert release.status_code == 204
    # Released with work pending: another wake is announced for a later claim.
    wait_until(lambda: len(wake_events(streams_server, "wake/pool")) == 3)
    assert wake_events(streams_server, "wake/pool")[2]["generation"] == 3
    # The wake stream is never a link of its own subscription.
    paths = [s["path"] for s in httpx.get(sub_url(streams_server, "pool")).json()["streams"]]
    assert paths == ["jobs/1"]


def test_deleted_subscription_refuses_acks(streams_server: StreamsProcess) -> None:
    pull_subscription(streams_server, "gone", "wake/gone", lease_ms=600_000)
    put_json_stream(streams_server, "jobs/g", {"job": 1})
    claimed = claim(streams_server, "gone", "w1").json()
    assert httpx.delete(sub_url(streams_server, "gone")).status_code == 204
    acks = [{"stream": "jobs/g", "offset": claimed["streams"][0]["tail_offset"]}]
    body = {"wake_id": claimed["wake_id"], "generation": 1, "acks": acks, "done": True}
    assert ack(streams_server, "gone", claimed["token"], body).status_code == 404
    # Re-created under the same id, the old token names a wake that never existed.
    pull_subscription_again = httpx.put(
        sub_url(streams_server, "gone"),
        json={"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wake/gone"},
    )
    assert pull_subscription_again.status_code == 201
    assert ack(streams_server, "gone", claimed["token"], body).status_code == 409


def test_recreated_stream_restarts_its_cursor(streams_server: StreamsProcess) -> None:
    pull_subscription(streams_server, "again", "wake/again", lease_ms=600_000)
    put_json_stream(streams_server, "jobs/r", [{"n": 1}, {"n": 2}, {"n": 3}])
    claimed = claim(streams_server, "again", "w1").json()
    acks = [{"stream": "jobs/r", "offset": claimed["streams"][0]["tail_offset"]}]
    wake = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
    done = ack(streams_server, "again", claimed["token"], {**wake, "acks": acks, "done": True})
    assert done.json() == {"ok": True, "next_wake": False}

    # A new stream at the same path is shorter than the old cursor; it must still wake.
    assert httpx.delete(stream_url(streams_server, "jobs/r")).status_code == 204
    put_json_stream(streams_server, "jobs/r", {"n": "new"})
    wait_until(lambda: len(wake_events(streams_server, "wake/again")) == 2)
    [stream] = claim(streams_server, "again", "w1").json()["streams"]
    assert stream["acked_offset"] == "0000000000000000_0000000000000000"
    assert stream["has_pending"] is True


# -- durability ---------------------------------------------------------------------------


def test_state_survives_restart(tmp_path: Path, receiver: Receiver) -> None:
    server = StreamsProcess(tmp_path / "data").start()
    try:
        config = {
            "type": "webhook",
            "pattern": "orders/*",
            "webhook": {"url": receiver.url},
            "lease_ttl_ms": 600_000,
        }
        created = httpx.put(sub_url(server, "hook"), json=config).json()
        kid = created["webhook"]["signing"]["kid"]
        pull_subscription(server, "pool", "wake/pool", lease_ms=600_000)
        put_json_stream(server, "orders/1", {"n": 1})
        put_json_stream(server, "jobs/1", {"n": 1})
        [delivery] = receiver.wait_for(1)
        claimed = claim(server, "pool", "w1").json()
        before = httpx.get(sub_url(server, "pool")).json()

        server.stop()
        key_file = tmp_path / "data" / "webhook-signing-key.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        server.start()

        assert httpx.get(sub_url(server, "pool")).json() == before
        assert httpx.put(sub_url(server, "hook"), json=config).status_code == 200
        jwks = httpx.get(f"{server.url}/v1/stream/__ds/jwks.json").json()
        assert [k["kid"] for k in jwks["keys"]] == [kid]
        assert verifies(delivery["raw"], delivery["signature"], jwks)

        # The lease and the generation held across the restart...
        busy = claim(server, "pool", "w2")
        assert busy.status_code == 409
        assert busy.json()["error"]["current_holder"] == "w1"
        # ...and so did the tokens handed out before it.
        acks = [{"stream": "jobs/1", "offset": claimed["streams"][0]["tail_offset"]}]
        wake = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
        done = ack(server, "pool", claimed["token"], {**wake, "acks": acks, "done": True})
        assert done.json() == {"ok": True, "next_wake": False}

        note = delivery["body"]
        callback = httpx.post(
            note["callback_url"],
            json={"wake_id": note["wake_id"], "generation": note["generation"], "done": True},
            headers={"authorization": f"Bearer {note['callback_token']}"},
        )
        assert callback.json() == {"ok": True, "next_wake": True}  # orders/1 was never acked
        third = receiver.wait_for(2)[1]
        assert third["body"]["generation"] == 2
        assert verifies(third["raw"], third["signature"], jwks)
    finally:
        server.stop()


def test_failing_delivery_resumes_after_restart(tmp_path: Path, receiver: Receiver) -> None:
    server = StreamsProcess(tmp_path / "data").start()
    try:
        receiver.replies = [(503, {})] * 1000
        config = {"type": "webhook", "pattern": "orders/*", "webhook": {"url": receiver.url}}
        assert httpx.put(sub_url(server, "hook"), json=config).status_code == 201
        put_json_stream(server, "orders/1", {"n": 1})
        first = receiver.wait_for(1)[0]["body"]
        wait_until(lambda: httpx.get(sub_url(server, "hook")).json()["status"] == "failed")
        server.stop()
        receiver.replies = []
        server.start()

        def status() -> str:
            return httpx.get(sub_url(server, "hook")).json()["status"]

        wait_until(lambda: status() == "active")
        # The same wake was delivered: the retry schedule and generation were kept.
        last = receiver.deliveries[-1]["body"]
        assert (last["wake_id"], last["generation"]) == (first["wake_id"], 1)
    finally:
        server.stop()


def test_acknowledged_requests_survive_a_crash(tmp_path: Path) -> None:
    server = StreamsProcess(tmp_path / "data").start()
    try:
        pull_subscription(server, "pool", "wake/pool", lease_ms=600_000)
        put_json_stream(server, "jobs/1", {"n": 1})
        claimed = claim(server, "pool", "w1").json()
        server.kill()  # SIGKILL: only what was written before each response counts
        server.start()
        busy = claim(server, "pool", "w2")
        assert busy.json()["error"]["current_holder"] == "w1"
        acks = [{"stream": "jobs/1", "offset": claimed["streams"][0]["tail_offset"]}]
        wake = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
        done = ack(server, "pool", claimed["token"], {**wake, "acks": acks, "done": True})
        assert done.json() == {"ok": True, "next_wake": False}
        server.kill()
        server.start()
        got = httpx.get(sub_url(server, "pool")).json()
        assert got["streams"][0]["acked_offset"] == acks[0]["offset"]
        assert claim(server, "pool", "w2").json()["error"]["code"] == "NO_PENDING_WORK"
    finally:
        server.stop()
