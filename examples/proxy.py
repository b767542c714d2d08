"""An example shape proxy: the `/v1/shape` endpoint of *your* backend, in front of Fusebox.

Browsers must never hold a Sync source's secret. Instead they call this proxy, without
credentials; the proxy decides whether the user may read the shape, adds `source_id` and
`secret` on the server side, and passes Fusebox's answer back as it arrives (long-polls and
SSE included). See docs/proxy.md for how to run it and how to adapt it.

    FUSEBOX_URL=http://127.0.0.1:8080/v1/shape \\
    FUSEBOX_SOURCE_ID=svc_... FUSEBOX_SECRET=fbxsec_... \\
    uvicorn proxy:app --app-dir examples --port 3000

It needs Starlette, httpx and an ASGI server (uvicorn above): nothing from Fusebox itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# What the Electric client sends to move through a shape's log. Forwarded as they are.
PROTOCOL_PARAMS = frozenset(
    {
        "offset",
        "handle",
        "live",
        "live_sse",
        "experimental_live_sse",
        "cursor",
        "expired_handle",
        "log",
        "cache-buster",
    }
)
# What defines the shape. Forwarded too, after `authorize` has had its say on them.
SHAPE_PARAMS = frozenset({"table", "where", "columns", "replica"})
SHAPE_PREFIXES = ("params[", "subset__")  # params[1]=..., subset__where=...

# The headers a browser's JavaScript must be able to read: without them in
# access-control-expose-headers the Electric client cannot follow the shape.
ELECTRIC_HEADERS = (
    "electric-handle",
    "electric-offset",
    "electric-schema",
    "electric-cursor",
    "electric-up-to-date",
    "electric-has-data",
    "electric-snapshot",
    "electric-internal-known-error",
    "retry-after",
    "etag",
)

# Not passed back to the browser:
# - hop-by-hop headers belong to the connection between the proxy and Fusebox;
# - content-encoding and content-length: httpx decompresses the body as it reads it
#   (`aiter_bytes`), so what the browser gets is not the encoded body those headers
#   describe. Kept, they would make the browser try to gunzip plain JSON, or cut the
#   response at the compressed length. The ASGI server frames the new body itself.
# - CORS headers: the middleware below answers for this proxy's own origin policy.
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-encoding",
        "content-length",
    }
)
# Request headers worth passing on: content negotiation and cache revalidation. Cookies
# and Authorization are for this proxy's own check and stay here.
FORWARDED_REQUEST_HEADERS = ("accept", "if-none-match")


@dataclass(frozen=True)
class Settings:
    fusebox_url: str  # the source's shape URL, such as https://sync.example.com/v1/shape
    source_id: str
    secret: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        missing = [
            name
            for name in ("FUSEBOX_URL", "FUSEBOX_SOURCE_ID", "FUSEBOX_SECRET")
            if not environ.get(name)
        ]
        if missing:
            raise RuntimeError(f"set {', '.join(missing)} (see docs/proxy.md)")
        return cls(environ["FUSEBOX_URL"], environ["FUSEBOX_SOURCE_ID"], environ["FUSEBOX_SECRET"])


class Refused(Exception):
    """Raised by an `authorize` hook: the user may not read this shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# (the browser's request, the shape parameters it asked for) -> the parameters to send.
Authorize = Callable[[Request, dict[str, str]], Awaitable[dict[str, str]]]


async def allow_everything(request: Request, shape: dict[str, str]) -> dict[str, str]:
    """The default hook, and the place for your own check. For example:

        user = await current_user(request)          # your session cookie or JWT
        if user is None:
            raise Refused(401, "sign in first")
        if shape.get("table") != "todos":
            raise Refused(403, "only todos are synced")
        # Pin what they see (a parameter, never the user's id pasted into SQL):
        return {**shape, "where": "owner_id = $1", "params[1]": str(user.id)}

    Whatever it returns is what Fusebox is asked for, so a `where` set here cannot be
    widened by the browser. If the answer depends on the user, keep CDNs from sharing it
    between users (cache-control `private`, or `Vary` on your session header).
    """
    return shape


def _split(query: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(protocol params, shape params) of the browser's query; everything else (`secret`,
    `api_secret`, `source_id`, `token`, anything unknown) is dropped here."""
    protocol: dict[str, str] = {}
    shape: dict[str, str] = {}
    for name, value in query.items():
        if name in PROTOCOL_PARAMS:
            protocol[name] = value
        elif name in SHAPE_PARAMS or name.startswith(SHAPE_PREFIXES):
            shape[name] = value
    return protocol, shape


def create_app(
    settings: Settings | None = None, authorize: Authorize = allow_everything
) -> Starlette:
    """The proxy; settings from FUSEBOX_URL, FUSEBOX_SOURCE_ID, FUSEBOX_SECRET if not given."""
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["settings"] = settings or Settings.from_env()
        # No read timeout: a live request waits up to ~20 s for a change, and SSE for as
        # long as the browser stays; Fusebox ends idle ones itself.
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            state["client"] = client
            yield

    async def shape(request: Request) -> Response:
        config: Settings = state["settings"]  # type: ignore[assignment]
        client: httpx.AsyncClient = state["client"]  # type: ignore[assignment]
        protocol, asked = _split(request.query_params)
        try:
            allowed = await authorize(request, asked)
        except Refused as refused:
            return JSONResponse({"message": refused.message}, status_code=refused.status)
        # The credentials go last, so nothing the browser sent can stand in for them.
        params = {**protocol, **allowed, "source_id": config.source_id, "secret": config.secret}
        headers = {
            name: request.headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        upstream_request = client.build_request(
            "GET", config.fusebox_url, params=params, headers=headers
        )
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError:
            # Never echo the exception: its text holds the URL, and so the secret.
            return JSONResponse({"message": "the sync service is unreachable"}, status_code=502)
        passed = {
            name: value
            for name, value in upstream.headers.items()
            if name.lower() not in DROPPED_RESPONSE_HEADERS
            and not name.lower().startswith("access-control-")
        }
        return StreamingResponse(
            upstream.aiter_bytes(),
            status_code=upstream.status_code,
            headers=passed,
            background=BackgroundTask(upstream.aclose),
        )

    return Starlette(
        routes=[Route("/v1/shape", shape, methods=["GET"])],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=os.environ.get("PROXY_ALLOW_ORIGINS", "*").split(","),
                allow_methods=["GET"],
                expose_headers=list(ELECTRIC_HEADERS),
            )
        ],
        lifespan=lifespan,
    )


app = create_app()
