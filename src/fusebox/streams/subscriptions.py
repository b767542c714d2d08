"""Subscriptions: the reserved `__ds/` API, durable cursors that wake workers.

A subscription links streams (by glob `pattern` and explicit `streams`) and keeps one
cursor per link. When a linked stream has bytes past its cursor and no wake is in flight,
a wake is issued with the next `generation`: a signed webhook POST, or an event appended
to a pull-wake subscription's wake stream that workers race to claim. Callbacks, acks and
releases are fenced by (generation, wake_id) and a signed bearer token, and leases bound
how long a wake may stay unanswered.

All decisions run on the event loop thread, so state needs no locks. State is written
to `subscriptions.json` in the data directory; requests that change it answer only once
the change is on disk, while changes driven by appends are written in the background
(they are rebuilt from the streams on start if a crash loses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import orjson

from fusebox.http.messages import Request, Response
from fusebox.streams.engine import StreamEngine
from fusebox.streams.errors import StreamError
from fusebox.streams.model import Stream
from fusebox.streams.offsets import BEGINNING, InvalidOffset, format_offset, parse_offset
from fusebox.streams.protocol import BASE_HEADERS
from fusebox.streams.subscription_model import (
    PULL_WAKE,
    WEBHOOK,
    Config,
    Link,
    Subscription,
    SubscriptionError,
    Wake,
    invalid,
    stream_path,
)
from fusebox.streams.subscription_store import StateWriter, encode_state, load_state
from fusebox.streams.webhooks import (
    LocalDevelopmentAllowed,
    SigningKey,
    TokenError,
    WebhookPolicy,
    WebhookRefused,
)

log = logging.getLogger("fusebox.streams.subscriptions")

STATE_FILE = "subscriptions.json"
KEY_FILE = "webhook-signing-key.pem"
# Delivery retries back off from 1 s to 60 s with ±20% jitter, as the spec sets out.
MAX_RETRY_DELAY = 60.0
DELIVERY_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# A receiver's reply only matters for `{"done": true}`; more than this is not read.
MAX_REPLY_BYTES = 64 * 1024

_View = tuple[str, Link, int]  # (path, link, the stream's durable tail)


class Subscriptions:
    """The `__ds/` routes and the wake machinery behind them, for one engine.

    `route` is the protocol's extra route; the engine's listener feeds appends in.
    """

    def __init__(
        self,
        engine: StreamEngine,
        data_dir: Path,
        *,
        prefix: str = "/v1/stream",
        webhook_policy: WebhookPolicy | None = None,
    ) -> None:
        self._engine = engine
        # Which webhook URLs are accepted and where deliveries connect: the server that
        # runs this decides (a multi-tenant one keeps tenants off its own network).
        self._webhook_policy = webhook_policy or LocalDevelopmentAllowed()
        self._root = prefix.rstrip("/") + "/"
        data_dir = Path(data_dir)
        self._key_path = data_dir / KEY_FILE
        self._state_path = data_dir / STATE_FILE
        self._subs: dict[str, Subscription] = {}
        self._key: SigningKey | None = None
        self._client: httpx.AsyncClient | None = None
        self._writer = StateWriter(self._state_path, lambda: encode_state(self._subs))
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, asyncio.TimerHandle] = {}
        # Subscriptions to look at once the engine's callback returns, and the stream
        # whose append put each there (the wake event names it).
        self._to_check: dict[str, str] = {}
        self._check_handle: asyncio.Handle | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        self._key = await asyncio.to_thread(SigningKey.load_or_create, self._key_path)
        self._subs = await asyncio.to_thread(load_state, self._state_path)
        # No proxies from the environment and no redirects: a webhook goes to the URL
        # that was vetted, and nowhere else.
        self._client = httpx.AsyncClient(
            timeout=DELIVERY_TIMEOUT, follow_redirects=False, trust_env=False
        )
        # httpx logs each request at INFO: a line per webhook would drown the server log.
        if logging.getLogger("httpx").level == logging.NOTSET:
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self._writer.start()
        self._engine.listeners.append(self._on_data)
        for sub in self._subs.values():
            self._recover(sub)
        self._writer.changed()

    async def stop(self) -> None:
        if self._on_data in self._engine.listeners:
            self._engine.listeners.remove(self._on_data)
        if self._check_handle is not None:
            self._check_handle.cancel()
        for handle in self._leases.values():
            handle.cancel()
        self._leases.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._writer.close()
        if self._client is not None:
            await self._client.aclose()

    def _recover(self, sub: Subscription) -> None:
        # A crash can lose links the listener made before the writer saved them; the
        # streams themselves say what they were.
        for path, stream in self._streams():
            link = sub.links.get(path)
            if link is None:
                if self._globbed(sub, path):
                    fresh = stream.created_at >= sub.created
                    acked = stream.base if fresh else stream.durable.tail
                    sub.links[path] = Link(False, True, acked, stream.id)
            elif link.stream_id != stream.id:
                link.acked, link.stream_id = stream.base, stream.id
        wake = sub.wake
        if wake is None:
            self._issue_if_pending(sub)
            return
        self._arm_lease(sub)
        if not wake.sent:
            if sub.config.type == WEBHOOK:
                self._deliver_soon(sub)
            else:
                views = self._views(sub)
                self._spawn(self._announce(sub, wake, _first_pending(views) or ""))

    # -- routing ------------------------------------------------------------------------

    async def route(self, request: Request, name: str) -> Response | None:
        """Answer `__ds/...` requests; None for everything else (ordinary streams)."""
        if not name.startswith("__ds/") and name != "__ds":
            return None
        if request.method == "OPTIONS":
            return None  # the protocol answers CORS preflights the same for every path
        try:
            return await self._dispatch(request, self._segments(request, name))
        except SubscriptionError as exc:
            return _error(exc)

    def _segments(self, request: Request, name: str) -> list[str]:
        # Split before decoding: a stream path in `streams/<path>` may be sent with its
        # slashes encoded, and an id may contain an encoded slash.
        raw = request.raw_path
        if raw.startswith(self._root):
            return [unquote(part) for part in raw[len(self._root) :].split("/")]
        return name.split("/")

    async def _dispatch(self, request: Request, segments: list[str]) -> Response:
        method = request.method
        match segments:
            case ["__ds", "jwks.json"]:
                if method != "GET":
                    return _not_allowed("GET")
                headers = [
                    *BASE_HEADERS,
                    ("content-type", "application/jwk-set+json"),
                    ("cache-control", "public, max-age=300"),
                ]
                return Response(200, headers, orjson.dumps(self._key_or_fail().jwks()))
            case ["__ds", "subscriptions", sub_id] if sub_id:
                if method == "PUT":
                    return await self._put(request, sub_id)
                if method == "GET":
                    return _json(200, self._describe(self._get(sub_id), _base_url(request)))
                if method == "DELETE":
                    await self._delete(sub_id)
                    return Response(204, list(BASE_HEADERS))
                return _not_allowed("GET, PUT, DELETE")
            case ["__ds", "subscriptions", sub_id, "streams"] if sub_id:
                if method != "POST":
                    return _not_allowed("POST")
                await self._add_streams(request, sub_id)
                return Response(204, list(BASE_HEADERS))
            case ["__ds", "subscriptions", sub_id, "streams", *rest] if sub_id and any(rest):
                if method != "DELETE":
                    return _not_allowed("DELETE")
                await self._remove_stream(sub_id, "/".join(rest))
                return Response(204, list(BASE_HEADERS))
            case ["__ds", "subscriptions", sub_id, action] if sub_id and action in _ACTIONS:
                if method != "POST":
                    return _not_allowed("POST")
                if action == "claim":
                    return await self._claim(request, sub_id)
                if action == "release":
                    await self._release(request, sub_id)
                    return Response(204, list(BASE_HEADERS))
                kind = WEBHOOK if action == "callback" else PULL_WAKE
                return await self._settle(request, sub_id, kind)
        raise SubscriptionError(
            404, "NOT_FOUND", f"no Durable Streams control route at {request.path}"
        )

    # -- create, read, delete -----------------------------------------------------------

    async def _put(self, request: Request, sub_id: str) -> Response:
        config = Config.parse(_json_body(request))
        if config.webhook_url is not None:
            problem = self._webhook_policy.url_problem(config.webhook_url)
            if problem is not None:
                raise SubscriptionError(400, "WEBHOOK_URL_REJECTED", problem)
        digest = config.digest()
        base_url = _base_url(request)
        existing = self._subs.get(sub_id)
        if existing is not None:
            if existing.digest != digest:
                raise SubscriptionError(
                    409,
                    "SUBSCRIPTION_ALREADY_EXISTS",
                    f"subscription {sub_id} exists with a different configuration",
                )
            return _json(200, self._describe(existing, base_url))
        sub = Subscription(sub_id, config, digest, time.time(), base_url)
        for path in config.streams:
            self._link(sub, path, explicit=True)
        if sub.glob is not None:
            # Existing streams join at their tail: subscribing does not replay history.
            for path, _ in self._streams():
                if self._globbed(sub, path):
                    self._link(sub, path, explicit=False)
        self._subs[sub_id] = sub
        await self._writer.saved()
        return _json(201, self._describe(sub, base_url))

    def _describe(self, sub: Subscription, base_url: str) -> dict:
        config = sub.config
        webhook = None
        if config.webhook_url is not None:
            signing = {
                "alg": "ed25519",
                "kid": self._key_or_fail().kid,
                "jwks_url": f"{base_url}{self._root}__ds/jwks.json",
            }
            webhook = {"url": config.webhook_url, "signing": signing}
        streams = [
            {"path": path, "link_type": _link_type(link), "acked_offset": format_offset(link.acked)}
            for path, link, _ in self._views(sub)
        ]
        return {
            "id": sub.id,
            "subscription_id": sub.id,
            "type": config.type,
            "pattern": config.pattern,
            "streams": streams,
            "webhook": webhook,
            "wake_stream": config.wake_stream,
            "lease_ttl_ms": config.lease_ttl_ms,
            "created_at": sub.created_at,
            "status": sub.status,
            "description": config.description,
        }

    async def _delete(self, sub_id: str) -> None:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return
        self._disarm_lease(sub)
        delivery = self._deliveries.pop(sub_id, None)
        if delivery is not None:
            delivery.cancel()
        await self._writer.saved()

    def _get(self, sub_id: str) -> Subscription:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise SubscriptionError(404, "SUBSCRIPTION_NOT_FOUND", f"no subscription {sub_id}")
        return sub

    # -- explicit membership ------------------------------------------------------------

    async def _add_streams(self, request: Request, sub_id: str) -> None:
        body = _json_body(request)
        streams = body.get("streams") if isinstance(body, dict) else None
        if not isinstance(streams, list) or not streams:
            raise invalid("streams must be a non-empty array of stream paths")
        paths = [stream_path(value, "each of streams") for value in streams]
        sub = self._get(sub_id)
        for path in paths:
            self._link(sub, path, explicit=True)
        await self._writer.saved()

    async def _remove_stream(self, sub_id: str, raw_path: str) -> None:
        path = stream_path(raw_path, "the stream path")
        sub = self._get(sub_id)
        link = sub.links.get(path)
        if link is not None:
            link.explicit = False
            # A stream first linked explicitly may match the pattern too; it stays.
            link.glob = link.glob or self._globbed(sub, path)
            if not link.glob:
                del sub.links[path]
        await self._writer.saved()

    def _link(self, sub: Subscription, path: str, *, explicit: bool) -> None:
        link = sub.links.get(path)
        if link is None:
            stream = self._find(path)
            if stream is None:
                link = Link(False, False, 0, None)
            else:
                link = Link(False, False, stream.durable.tail, stream.id)
            sub.links[path] = link
        if explicit:
            link.explicit = True
        else:
            link.glob = True

    def _globbed(self, sub: Subscription, path: str) -> bool:
        # A pull-wake subscription never follows its own wake stream: each wake event
        # would be pending work, and wakes would never stop.
        return sub.matches(path) and path != sub.config.wake_stream

    # -- appends ------------------------------------------------------------------------

    def _on_data(self, stream: Stream, start: int) -> None:
        """Engine listener: `stream` has new durable bytes from `start` (or was created)."""
        if not self._subs or not stream.path.startswith(self._root):
            return
        # This runs inside the engine's durability callback: a fault here must cost a
        # wake at worst (start-up recovery finds it again), never the engine's state.
        try:
            self._follow(stream, start)
        except Exception:
            log.exception("subscriptions could not follow an append to %s", stream.path)

    def _follow(self, stream: Stream, start: int) -> None:
        path = stream.path[len(self._root) :]
        changed = False
        for sub in self._subs.values():
            link = sub.links.get(path)
            if link is None:
                if not self._globbed(sub, path):
                    continue
                # Linked just before these bytes, so that they are what wakes it.
                sub.links[path] = Link(False, True, start, stream.id)
                changed = True
            elif link.stream_id != stream.id:
                link.acked, link.stream_id = start, stream.id
                changed = True
            if sub.wake is None:
                self._check_soon(sub, path)
        if changed:
            self._writer.changed()

    def _check_soon(self, sub: Subscription, path: str) -> None:
        # Wakes are issued after the engine's callback returns: issuing looks streams up
        # and appends to wake streams, which must not happen inside the engine's apply.
        self._to_check[sub.id] = path
        if self._check_handle is None:
            self._check_handle = asyncio.get_running_loop().call_soon(self._run_checks)

    def _run_checks(self) -> None:
        self._check_handle = None
        to_check, self._to_check = self._to_check, {}
        issued = False
        for sub_id, path in to_check.items():
            sub = self._subs.get(sub_id)
            if sub is not None and sub.wake is None:
                issued = self._issue_if_pending(sub, path) or issued
        if issued:
            self._writer.changed()

    # -- wakes --------------------------------------------------------------------------

    def _issue_if_pending(self, sub: Subscription, hint: str | None = None) -> bool:
        views = self._views(sub)
        pending = [path for path, link, tail in views if tail > link.acked]
        if not pending:
            return False
        self._issue(sub, hint if hint in pending else pending[0])
        return True

    def _issue(self, sub: Subscription, trigger: str, *, announce: bool = True) -> Wake:
        sub.generation += 1
        wake = sub.wake = Wake(f"w_{secrets.token_hex(12)}", sub.generation)
        if sub.config.type == WEBHOOK:
            self._deliver_soon(sub)
        elif announce:
            self._spawn(self._announce(sub, wake, trigger))
        else:
            wake.sent = True
        return wake

    def _end_wake(self, sub: Subscription) -> bool:
        """Close the current wake; True when pending work made another one."""
        sub.wake = None
        self._disarm_lease(sub)
        return self._issue_if_pending(sub)

    async def _announce(self, sub: Subscription, wake: Wake, trigger: str) -> None:
        wake_stream = sub.config.wake_stream
        assert wake_stream is not None
        # No worker may see a generation that a crash could hand out again.
        await self._writer.saved()
        stream = self._find(wake_stream)
        if stream is None:
            log.warning("subscription %s: wake stream %s does not exist", sub.id, wake_stream)
            return
        if sub.wake is not wake:
            return
        event = {
            "type": "wake",
            "subscription_id": sub.id,
            "stream": trigger,
            "generation": wake.generation,
            "ts": int(time.time() * 1000),
        }
        data = orjson.dumps(event)
        if not stream.is_json:
            data += b"\n"  # newline-delimited, so events in a byte stream stay apart
        try:
            await self._engine.append(stream, data, stream.config.content_type)
        except StreamError as exc:
            log.warning("subscription %s: cannot write to %s: %s", sub.id, wake_stream, exc)
            return
        if sub.wake is wake:
            wake.sent = True
            self._writer.changed()

    # -- leases -------------------------------------------------------------------------

    def _arm_lease(self, sub: Subscription) -> None:
        self._disarm_lease(sub)
        wake = sub.wake
        if wake is None or wake.lease_until is None:
            return
        delay = max(0.0, wake.lease_until - time.time())
        loop = asyncio.get_running_loop()
        self._leases[sub.id] = loop.call_later(delay, self._lease_ran_out, sub, wake)

    def _disarm_lease(self, sub: Subscription) -> None:
        handle = self._leases.pop(sub.id, None)
        if handle is not None:
            handle.cancel()

    def _extend_lease(self, sub: Subscription, wake: Wake) -> None:
        wake.lease_until = time.time() + sub.config.lease_ttl_ms / 1000
        self._arm_lease(sub)

    def _lease_ran_out(self, sub: Subscription, wake: Wake) -> None:
        if self._subs.get(sub.id) is not sub or sub.wake is not wake:
            return
        if wake.lease_until is None or wake.lease_until > time.time():
            self._arm_lease(sub)
            return
        log.info("subscription %s: lease on generation %d expired", sub.id, wake.generation)
        self._end_wake(sub)
        self._writer.changed()

    def _expire_if_due(self, sub: Subscription) -> None:
        # Timers can fire late; a request must never see a lease past its expiry.
        wake = sub.wake
        if wake is not None and wake.lease_until is not None and wake.lease_until <= time.time():
            self._lease_ran_out(sub, wake)

    # -- webhook delivery ---------------------------------------------------------------

    def _deliver_soon(self, sub: Subscription) -> None:
        task = self._deliveries.get(sub.id)
        if task is None or task.done():
            self._deliveries[sub.id] = self._spawn(self._delivery_loop(sub))

    async def _delivery_loop(self, sub: Subscription) -> None:
        # One loop per subscription delivers whichever wake is current, so a wake
        # issued while a delivery is in flight waits for it instead of racing it.
        try:
            while self._subs.get(sub.id) is sub:
                wake = sub.wake
                if wake is None or wake.sent:
                    return
                delay = (sub.next_attempt_at or 0.0) - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                await self._deliver(sub, wake)
        finally:
            if self._deliveries.get(sub.id) is asyncio.current_task():
                del self._deliveries[sub.id]

    async def _deliver(self, sub: Subscription, wake: Wake) -> None:
        key = self._key_or_fail()
        url = sub.config.webhook_url
        assert url is not None and self._client is not None
        views = self._views(sub)
        # The receiver has not seen this wake yet, so the snapshot it may auto-ack with
        # `{"done": true}` can be what this attempt shows.
        wake.snapshot = {path: tail for path, _, tail in views}
        # No receiver may see a generation that a crash could hand out again.
        await self._writer.saved()
        if self._subs.get(sub.id) is not sub or sub.wake is not wake:
            return
        callback = f"{sub.base_url}{self._root}__ds/subscriptions/{quote(sub.id, safe='')}/callback"
        body = orjson.dumps(
            {
                "subscription_id": sub.id,
                "wake_id": wake.id,
                "generation": wake.generation,
                "streams": [_stream_info(view) for view in views],
                "callback_url": callback,
                "callback_token": key.mint_token(sub.id, wake.generation, wake.id),
            }
        )
        headers = {
            "content-type": "application/json",
            "webhook-signature": key.signature_header(body),
        }
        done = False
        try:
            # Checked at each delivery, not only at creation: what a name resolves to can
            # change after the subscription was accepted.
            target = await self._webhook_policy.target(url)
            async with self._client.stream(
                "POST",
                target.url,
                content=body,
                headers={**headers, **target.headers},
                extensions=target.extensions,
            ) as reply:
                delivered = reply.is_success
                if delivered:
                    done = _says_done(await _read_capped(reply))
                else:
                    log.info("subscription %s: webhook answered %d", sub.id, reply.status_code)
        except WebhookRefused as exc:
            delivered = False
            log.info("subscription %s: webhook refused: %s", sub.id, exc)
        except httpx.HTTPError as exc:
            delivered = False
            log.info("subscription %s: webhook delivery failed: %r", sub.id, exc)
        if self._subs.get(sub.id) is not sub or sub.wake is not wake:
            return  # a callback or a lease ended it, or the subscription went, meanwhile
        if not delivered:
            if not wake.sent:  # a callback may already have proved it arrived
                self._schedule_retry(sub)
            return
        sub.status, sub.attempts, sub.next_attempt_at = "active", 0, None
        wake.sent = True
        if done:
            for path, tail in wake.snapshot.items():
                link = sub.links.get(path)
                if link is not None and tail > link.acked:
                    link.acked = tail
            self._end_wake(sub)
        else:
            # The lease starts once the receiver has the wake: while the POST is out,
            # DELIVERY_TIMEOUT bounds it instead, so that a slow receiver's `done` is
            # not thrown away for a lease that ran out under it.
            self._extend_lease(sub, wake)
        self._writer.changed()

    def _schedule_retry(self, sub: Subscription) -> None:
        sub.attempts += 1
        delay = min(2.0 ** min(sub.attempts - 1, 16), MAX_RETRY_DELAY)
        sub.next_attempt_at = time.time() + delay * random.uniform(0.8, 1.2)
        sub.status = "failed"
        self._writer.changed()

    # -- claim, callback, ack, release --------------------------------------------------

    async def _claim(self, request: Request, sub_id: str) -> Response:
        body = _json_body(request)
        worker = body.get("worker") if isinstance(body, dict) else None
        if not isinstance(worker, str) or not worker:
            raise invalid("worker must be a non-empty string")
        sub = self._get(sub_id)
        _require_type(sub, PULL_WAKE, "claim")
        self._expire_if_due(sub)
        wake = sub.wake
        if wake is not None and wake.holder is not None:
            raise SubscriptionError(
                409,
                "ALREADY_CLAIMED",
                f"worker {wake.holder} holds the lease",
                current_holder=wake.holder,
                generation=wake.generation,
            )
        views = self._views(sub)
        trigger = _first_pending(views)
        if trigger is None:
            if wake is not None:
                self._end_wake(sub)
                self._writer.changed()
            raise SubscriptionError(409, "NO_PENDING_WORK", "no linked stream has pending data")
        if wake is None:
            wake = self._issue(sub, trigger, announce=False)
        wake.holder = worker
        self._extend_lease(sub, wake)
        token = self._key_or_fail().mint_token(sub.id, wake.generation, wake.id)
        await self._writer.saved()
        return _json(
            200,
            {
                "wake_id": wake.id,
                "generation": wake.generation,
                "token": token,
                "streams": [_stream_info(view) for view in views],
                "lease_ttl_ms": sub.config.lease_ttl_ms,
            },
        )

    async def _settle(self, request: Request, sub_id: str, kind: str) -> Response:
        """A webhook callback or a pull-wake ack: apply acks, then finish or heartbeat."""
        sub = self._get(sub_id)
        _require_type(sub, kind, "callback" if kind == WEBHOOK else "ack")
        body = _json_body(request)
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object")
        wake = self._fence(request, sub, body)
        acks = self._check_acks(sub, body.get("acks"))
        for link, position in acks:
            link.acked = position
        if kind == WEBHOOK:
            # A callback proves the delivery arrived, whatever became of its response.
            wake.sent = True
            sub.status, sub.attempts, sub.next_attempt_at = "active", 0, None
        next_wake = False
        if body.get("done") is True:
            next_wake = self._end_wake(sub)
        else:
            self._extend_lease(sub, wake)
        await self._writer.saved()
        return _json(200, {"ok": True, "next_wake": next_wake})

    async def _release(self, request: Request, sub_id: str) -> None:
        sub = self._get(sub_id)
        _require_type(sub, PULL_WAKE, "release")
        body = _json_body(request)
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object")
        self._fence(request, sub, body)
        self._end_wake(sub)
        await self._writer.saved()

    def _fence(self, request: Request, sub: Subscription, body: dict) -> Wake:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SubscriptionError(401, "TOKEN_INVALID", "send Authorization: Bearer <token>")
        try:
            generation, wake_id = self._key_or_fail().read_token(token, sub.id)
        except TokenError as exc:
            raise SubscriptionError(401, exc.code, exc.message) from None
        self._expire_if_due(sub)
        wake = sub.wake
        claimed = body.get("generation")
        if (
            wake is None
            or generation != wake.generation
            or wake_id != wake.id
            or not isinstance(claimed, int)
            or isinstance(claimed, bool)
            or claimed != wake.generation
            or body.get("wake_id") != wake.id
        ):
            raise SubscriptionError(
                409, "FENCED", "this wake is no longer current", generation=sub.generation
            )
        return wake

    def _check_acks(self, sub: Subscription, acks: object) -> list[tuple[Link, int]]:
        """Every ack validated before any applies, so a bad one changes nothing."""
        if acks is None:
            return []
        if not isinstance(acks, list):
            raise invalid("acks must be an array")
        checked = []
        for ack in acks:
            if not isinstance(ack, dict):
                raise invalid('each ack must be {"stream": ..., "offset": ...}')
            path = stream_path(ack.get("stream", ack.get("path")), "acks[].stream")
            offset = ack.get("offset")
            if not isinstance(offset, str):
                raise invalid("acks[].offset must be an offset string")
            link = sub.links.get(path)
            if link is None:
                raise _bad_offset(f"{path} is not linked to this subscription")
            try:
                if offset == BEGINNING:
                    raise InvalidOffset(offset)
                position = parse_offset(offset)
            except InvalidOffset:
                raise _bad_offset(f"{offset!r} is not an offset this server issued") from None
            if position < link.acked:
                raise _bad_offset(f"ack for {path} is behind its acked offset")
            stream = self._find(path)
            if position > (stream.durable.tail if stream is not None else link.acked):
                raise _bad_offset(f"ack for {path} is beyond the stream's tail")
            checked.append((link, position))
        return checked

    # -- helpers ------------------------------------------------------------------------

    def _views(self, sub: Subscription) -> list[_View]:
        """Each visible link with its stream's tail; glob links to vanished streams go."""
        views = []
        vanished = []
        for path in sorted(sub.links):
            link = sub.links[path]
            stream = self._find(path)
            if stream is not None:
                views.append((path, link, stream.durable.tail))
            elif link.explicit:
                views.append((path, link, link.acked))
            else:
                vanished.append(path)
        if vanished:
            for path in vanished:
                del sub.links[path]
            self._writer.changed()
        return views

    def _find(self, path: str) -> Stream | None:
        try:
            return self._engine.lookup(self._root + path, touch=False)
        except StreamError:
            return None

    def _streams(self) -> list[tuple[str, Stream]]:
        """Every live stream below the root, by relative path."""
        return [
            (stream.path[len(self._root) :], stream)
            for stream in self._engine.live_streams(self._root)
        ]

    def _key_or_fail(self) -> SigningKey:
        assert self._key is not None, "Subscriptions.start() was not awaited"
        return self._key

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("subscription task failed", exc_info=task.exception())


_ACTIONS = frozenset({"callback", "claim", "ack", "release"})


def _first_pending(views: list[_View]) -> str | None:
    return next((path for path, link, tail in views if tail > link.acked), None)


def _link_type(link: Link) -> str:
    # The spec has explicit win when a stream is linked both ways.
    return "explicit" if link.explicit else "glob"


def _stream_info(view: _View) -> dict:
    path, link, tail = view
    return {
        "path": path,
        "link_type": _link_type(link),
        "acked_offset": format_offset(link.acked),
        "tail_offset": format_offset(tail),
        "has_pending": tail > link.acked,
    }


def _require_type(sub: Subscription, kind: str, action: str) -> None:
    if sub.config.type != kind:
        raise invalid(f"{action} is for {kind} subscriptions; {sub.id} is {sub.config.type}")


def _bad_offset(message: str) -> SubscriptionError:
    return SubscriptionError(409, "INVALID_OFFSET", message)


async def _read_capped(reply: httpx.Response) -> bytes | None:
    chunks = []
    size = 0
    async for chunk in reply.aiter_bytes():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _says_done(reply: bytes | None) -> bool:
    if not reply:
        return False
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(reply)
        return isinstance(parsed, dict) and parsed.get("done") is True
    return False


def _json_body(request: Request) -> Any:
    if not request.body.strip():
        return {}
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None


def _base_url(request: Request) -> str:
    return f"http://{request.headers.get('host', 'localhost')}"


def _json(status: int, body: dict) -> Response:
    headers = [*BASE_HEADERS, ("content-type", "application/json"), ("cache-control", "no-store")]
    return Response(status, headers, orjson.dumps(body))


def _error(exc: SubscriptionError) -> Response:
    return _json(exc.status, {"error": {"code": exc.code, "message": exc.message, **exc.extra}})


def _not_allowed(allow: str) -> Response:
    body = {"error": {"code": "METHOD_NOT_ALLOWED", "message": f"use {allow}"}}
    response = _json(405, body)
    response.headers.append(("allow", allow))
    return response
