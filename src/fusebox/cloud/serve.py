"""`fusebox serve`: the whole platform on one machine, on its embedded defaults.

One port serves the data plane (shapes and streams of every tenant, through the gateway)
and the admin API (`/api/v1`). The control plane is SQLite in the data directory, the
master key is generated there on first start, and the first start creates an owner account
and says how to sign in.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from fusebox.allocator import retain_freed_memory
from fusebox.cloud.api import create_admin_app
from fusebox.cloud.control import open_control_plane
from fusebox.cloud.gateway import Gateway, ShapeTokens
from fusebox.cloud.platform import Platform, PlatformSettings
from fusebox.collector import HeapFreezer
from fusebox.http.asgi import AsgiMount
from fusebox.http.messages import Request, Response
from fusebox.http.server import HttpServer
from fusebox.streams.engine import StreamEngine
from fusebox.streams.store import FileStore

log = logging.getLogger("fusebox")


@dataclass
class ServeSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    owner_email: str | None = None
    database_url: str | None = None  # the control plane's database; SQLite when None


class PlatformServer:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.port = settings.port
        self.control = None
        self.engine: StreamEngine | None = None
        self.platform: Platform | None = None
        self.http: HttpServer | None = None
        self.admin: AsgiMount | None = None
        self.bootstrap = None

    @property
    def base_url(self) -> str:
        return self.settings.public_url or f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.control = await asyncio.to_thread(
            open_control_plane, data_dir / "control", database_url=self.settings.database_url
        )
        self.bootstrap = await asyncio.to_thread(self.control.bootstrap, self.settings.owner_email)
        self.engine = StreamEngine(FileStore(data_dir / "log"))
        await self.engine.start()
        self.platform = Platform(PlatformSettings(data_dir), self.engine, self.control)
        # Bind first (port 0 picks one), so the admin API knows the URL it hands out.
        self.http = HttpServer(self._handle)
        self.port = await self.http.start(self.settings.host, self.settings.port)
        app = create_admin_app(self.control, self.platform, self.base_url)
        self.admin = AsgiMount(app, (self.settings.host, self.port))
        await self.admin.startup()
        self.gateway = Gateway(
            self.platform.tenants,
            self.control.verify_service_secret,
            ShapeTokens(self.control.resources.verify_client_token),
            self.admin.handle,
            self._health,
            self.control.service_status,
        )
        await app.state.provisioner.resume()

    async def _handle(self, request: Request) -> Response:
        gateway = getattr(self, "gateway", None)
        if gateway is None:
            return Response(503, [("retry-after", "1")], b"starting")
        return await gateway.handle(request)

    def _health(self) -> Response:
        assert self.platform is not None
        body = orjson.dumps(self.platform.health())
        return Response(200, [("content-type", "application/json")], body)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.admin is not None:
            await self.admin.shutdown()
        if self.platform is not None:
            await self.platform.stop()
        if self.engine is not None:
            await self.engine.stop()
        if self.control is not None:
            self.control.close()


def _sign_in_message(server: PlatformServer) -> str:
    lines = [f"Fusebox is running at {server.base_url}", ""]
    bootstrap = server.bootstrap
    if bootstrap is not None:
        lines += [
            "First start: an owner account was created. Sign in with:",
            f"    fusebox auth login --api-url {server.base_url} --email {bootstrap.email}",
            f"    password: {bootstrap.password}",
            "(shown once: keep it somewhere safe, or change it after signing in)",
            "",
        ]
    lines += [
        f"Admin API:  {server.base_url}/api/v1   (OpenAPI: /api/v1/openapi.json)",
        f"Shapes:     {server.base_url}/v1/shape?source_id=...&secret=...",
        f"Streams:    {server.base_url}/v1/stream/<service-id>/<name>  (Bearer <secret>)",
        f"Started {datetime.now().isoformat(timespec='seconds')}; Ctrl-C stops.",
    ]
    return "\n".join(lines)


async def serve(settings: ServeSettings) -> None:
    retain_freed_memory()
    server = PlatformServer(settings)
    await server.start()
    heap = HeapFreezer()
    heap.start()
    # The sign-in details go to the terminal, never to the log.
    print(_sign_in_message(server), file=sys.stdout, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    await heap.stop()
    await server.stop()
