"""The multi-tenant gateway: every data-plane request finds its tenant here, or nothing.

- `/v1/shape?source_id=…&secret=…` (or `api_secret`, or a shape-scoped client token in
  `token` / `Authorization: Bearer`) reaches that Sync source's shapes;
- `/v1/stream/<service-id>/…` with `Authorization: Bearer <secret>` reaches that Streams
  service's streams, and only those: the service's streams live under its own prefix in
  the log engine, so no path can name another tenant's stream;
- `/api/…` goes to the admin API.

Paths are checked before routing: empty, `.` or `..` segments are refused, so that no
spelling of a path reaches something other than what it plainly names. Every tenant's
streams and shape logs share one log engine, so a path given in a header (a fork's
`Stream-Forked-From`) must name a stream of the same service too.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from fusebox.cloud.resources import ServiceStatus
from fusebox.http.messages import Request, Response
from fusebox.streams.errors import StreamError
from fusebox.streams.protocol import BASE_HEADERS as STREAM_HEADERS
from fusebox.streams.protocol import StreamsProtocol
from fusebox.streams.protocol import _fork_spec as fork_spec
from fusebox.sync.protocol import ShapeProtocol
from fusebox.sync.shape import ShapeError, parse_identifiers, parse_params, parse_table

Handler = Callable[[Request], Awaitable[Response]]

_CORS = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ("access-control-allow-headers", "*"),
    ("access-control-max-age", "86400"),
    ("x-content-type-options", "nosniff"),
]


class SecretCheck(Protocol):
    def __call__(self, service_id: str, presented: str) -> bool: ...


class ClientTokens(Protocol):
    def verify(self, token: str, source_id: str, request: Request) -> str | None:
        """None when the token allows this request; else why not (for a 403)."""
        ...


@dataclass
class Tenants:
    """The running services, by service id; the platform keeps these current."""

    sources: dict[str, ShapeProtocol]
    streams: dict[str, StreamsProtocol]


def _json(status: int, body: object, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [
        ("content-type", "application/json"),
        ("x-content-type-options", "nosniff"),
        ("access-control-allow-origin", "*"),
        ("cache-control", "no-store"),
        *(extra or []),
    ]
    return Response(status, headers, orjson.dumps(body))


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise ShapeError(name, f"{name} must be given once")
    return values[0]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


class Gateway:
    def __init__(
        self,
        tenants: Tenants,
        check_secret: SecretCheck,
        client_tokens: ClientTokens,
        admin: Handler,
        health: Callable[[], Response],
        service_status: Callable[[str], ServiceStatus | None],
    ) -> None:
        self.tenants = tenants
        self._check_secret = check_secret
        self._service_status = service_status
        self._client_tokens = client_tokens
        self._admin = admin
        self._health = health

    async def handle(self, request: Request) -> Response:
        path = request.path
        segments = path.split("/")
        inner = segments[1:-1]
        if any(part in ("", ".", "..") for part in inner) or segments[-1] in (".", ".."):
            return _json(400, {"message": f"invalid path {request.raw_path!r}"})
        if path.startswith("/api/"):
            return await self._admin(request)
        if path in ("/v1/shape", "/v1/shape/"):
            return await self._shape(request)
        if path.startswith("/v1/stream/"):
            return await self._stream(request, segments)
        if path == "/v1/health":
            return self._health()
        return _json(404, {"message": f"no route for {path}"})

    async def _shape(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(204, list(_CORS))
        query = request.query
        try:
            source_id = _single(query, "source_id")
            secret = _single(query, "secret") or _single(query, "api_secret")
            token = _single(query, "token") or _bearer(request)
        except ShapeError as exc:
            return _json(400, {"message": "Invalid request", "errors": {exc.field: [exc.message]}})
        if not source_id:
            return _json(401, {"message": "Unauthorized - source_id is required"})
        if secret is not None:
            if not self._check_secret(source_id, secret):
                return _json(401, {"message": "Unauthorized - Invalid API secret"})
        elif token is not None:
            refusal = self._client_tokens.verify(token, source_id, request)
            if refusal is not None:
                status = 401 if refusal.startswith("invalid") else 403
                return _json(status, {"message": f"Forbidden - {refusal}"})
        else:
            return _json(401, {"message": "Unauthorized - secret or token is required"})
        source = self.tenants.sources.get(source_id)
        if source is None:
            if source_id in self.tenants.streams:
                return _json(404, {"message": f"{source_id} is not a Sync source"})
            return self._not_serving(source_id, "Source", lambda body: body)
        return await source.handle(request)

    async def _stream(self, request: Request, segments: list[str]) -> Response:
        # ['', 'v1', 'stream', '<service-id>', '<name>', ...]
        if len(segments) < 5 or not segments[4]:
            return _json(404, {"message": "streams live under /v1/stream/<service-id>/<name>"})
        service_id = segments[3]
        if request.method == "OPTIONS":
            return Response(204, [*STREAM_HEADERS, *_CORS[1:4]])
        presented = _bearer(request)
        if presented is None or not self._check_secret(service_id, presented):
            return _json(
                401,
                {"error": {"status": 401, "message": "a valid Authorization: Bearer is required"}},
                [("www-authenticate", 'Bearer realm="fusebox"')],
            )
        protocol = self.tenants.streams.get(service_id)
        if protocol is None:
            if service_id in self.tenants.sources:
                return _json(404, {"message": f"{service_id} is not a Streams service"})
            # The Durable Streams clients read errors from an `error` object.
            return self._not_serving(service_id, "Service", lambda body: {"error": body})
        if request.method == "PUT" and not _forks_own_stream(request, f"/v1/stream/{service_id}"):
            return _json(
                403,
                {
                    "error": {
                        "status": 403,
                        "message": "Stream-Forked-From must name a stream of this service",
                    }
                },
            )
        return await protocol.handle(request)

    def _not_serving(
        self, service_id: str, noun: str, envelope: Callable[[dict], object]
    ) -> Response:
        """The answer, to a caller whose credentials are valid, when the service does not
        run: wait (it is starting), or stop and fix it (it is in `error`).

        `error` is final until someone acts, so it is a 4xx: Electric's and the Durable
        Streams clients retry 5xx (and 429) for ever with backoff, and a 503 would have
        every client hammer a service that cannot recover by itself; a 4xx ends the retry
        loop and hands the message to the application's error handler. 424 Failed
        Dependency says what happened: the request and its credentials are fine, what
        failed is what the service depends on (its database's checks, or its engine's
        start). Not 409 (Electric's must-refetch), 400/422 (nothing is wrong with the
        request) or 403 (the credentials are good).
        """
        status = self._service_status(service_id)
        if status is not None and status.state == "error":
            error = status.error or {}
            check, reason = error.get("check"), error.get("message") or "unknown error"
            what = f"the {check} check failed: {reason}" if check != "start" else reason
            body = {
                "status": 424,
                "code": "service_error",
                "message": (
                    f"{noun} {service_id} is in error ({what}). Fix the cause, then create "
                    "the service again through the admin API; its events say more: "
                    f"GET /api/v1/services/{service_id}/events"
                ),
                "check": check,
                "reason": reason,
            }
            return _json(424, envelope(body))
        body = {
            "status": 503,
            "code": "service_not_active",
            "message": f"{noun} is not active yet",
        }
        return _json(503, envelope(body), [("retry-after", "5")])


def _forks_own_stream(request: Request, prefix: str) -> bool:
    """False when the request forks a stream outside `prefix` (another tenant's stream, or a
    Sync source's shape log): the header is resolved exactly as the streams protocol does."""
    try:
        fork = fork_spec(request.headers, prefix)
    except StreamError:
        return True  # malformed: the protocol refuses it with its own 400
    if fork is None:
        return True
    if not fork.source.startswith(prefix + "/"):
        return False
    # The rule `handle` applies to request paths: no empty, `.` or `..` segment inside.
    *inner, last = fork.source[len(prefix) + 1 :].split("/")
    return not any(part in ("", ".", "..") for part in inner) and last not in (".", "..")


class ShapeTokens:
    """Checks shape-scoped client tokens: valid, for this source, and for this exact shape."""

    def __init__(self, verify_claims: Callable[[str], dict | None]) -> None:
        self._verify_claims = verify_claims

    def verify(self, token: str, source_id: str, request: Request) -> str | None:
        claims = self._verify_claims(token)
        if claims is None:
            return "invalid token (bad signature, unknown service, or expired)"
        if not hmac.compare_digest(str(claims.get("sub", "")).encode(), source_id.encode()):
            return "the token is for another source"
        pinned = claims.get("shape") or {}
        query = request.query
        try:
            asked = _shape_of(
                (query.get("table") or [""])[-1],
                (query.get("where") or [None])[-1],
                dict(parse_params(query)),
                (query.get("columns") or [None])[-1],
            )
            allowed = _shape_of(
                pinned.get("table") or "",
                pinned.get("where"),
                {str(k): str(v) for k, v in (pinned.get("params") or {}).items()},
                ",".join(pinned["columns"]) if pinned.get("columns") else None,
            )
        except ShapeError as exc:
            return f"the request's {exc.field} is invalid: {exc.message}"
        if asked != allowed:
            return "the request asks for a shape the token does not allow"
        if pinned.get("columns") and _asks_subset(request):
            # A subset's where and order_by may name any column of the table: with them a
            # token limited to some columns could filter on (and so read) the others.
            return "a token limited to some columns does not allow subset queries"
        return None


def _asks_subset(request: Request) -> bool:
    """Whether the request carries subset options (as `ShapeProtocol` reads them)."""
    if any(key.startswith("subset__") for key in request.query):
        return True
    return request.method == "POST" and bool(request.body.strip())


def _shape_of(table: str, where: str | None, params: dict[str, str], columns: str | None):
    """A shape definition in a comparable form: quoting and column order do not matter."""
    chosen = sorted(set(parse_identifiers(columns, "columns", ","))) if columns else None
    return (parse_table(table), where or None, sorted(params.items()), chosen)
