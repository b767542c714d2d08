"""The platform: every tenant's engines in one process, behind one gateway.

All services share one log engine (one WAL, one group commit): a Streams service's streams
live under `/v1/stream/<service-id>/`, a Sync source's shape logs under
`/__sync/<service-id>/`. Each Sync source has its own replication process. The control
plane decides which services exist; this module is the `ServiceRuntime` that runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusebox.cloud.checks import check_database
from fusebox.cloud.control import ControlPlane
from fusebox.cloud.gateway import Tenants
from fusebox.cloud.runtime import CheckResult
from fusebox.streams.engine import StreamEngine
from fusebox.streams.protocol import StreamsProtocol
from fusebox.streams.subscriptions import Subscriptions
from fusebox.streams.webhooks import PublicAddressesOnly
from fusebox.sync.service import SyncSettings, SyncSource

log = logging.getLogger("fusebox.platform")

# How long a new Sync source may take to start streaming before it counts as failed.
START_TIMEOUT = 60.0


@dataclass
class PlatformSettings:
    data_dir: Path
    long_poll_timeout: float = 20.0
    stream_long_poll_timeout: float = 30.0
    chunk_bytes: int = 10 * 1024 * 1024


class Platform:
    """Runs services for the control plane (implements `ServiceRuntime`)."""

    def __init__(
        self, settings: PlatformSettings, engine: StreamEngine, control: ControlPlane
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.control = control
        self.tenants = Tenants(sources={}, streams={})
        self._sources: dict[str, SyncSource] = {}
        self._subscriptions: dict[str, Subscriptions] = {}

    # -- ServiceRuntime -------------------------------------------------------------------

    async def check_database(self, database_url: str) -> CheckResult:
        return await check_database(database_url)

    async def start_service(
        self, service: dict[str, Any], secret: str, database_url: str | None
    ) -> None:
        service_id = service["id"]
        if service["type"] == "streams":
            await self._start_streams(service_id)
        else:
            assert database_url is not None
            await self._start_source(service_id, database_url)

    async def stop_service(self, service: dict[str, Any]) -> None:
        service_id = service["id"]
        self.tenants.streams.pop(service_id, None)
        self.tenants.sources.pop(service_id, None)
        subscriptions = self._subscriptions.pop(service_id, None)
        if subscriptions is not None:
            await subscriptions.stop()
        if service["type"] == "streams":
            # Deleting a service deletes its streams: nothing of it may outlive it.
            for stream in self.engine.live_streams(f"/v1/stream/{service_id}/"):
                with contextlib.suppress(Exception):
                    await self.engine.delete(stream.path)
        source = self._sources.pop(service_id, None)
        if source is not None:
            try:
                await source.destroy()
            except Exception as exc:
                log.warning("could not release %s's slot and publication: %s", service_id, exc)
        shutil.rmtree(self._service_dir(service_id), ignore_errors=True)

    # -- engines --------------------------------------------------------------------------

    def _service_dir(self, service_id: str) -> Path:
        return self.settings.data_dir / "services" / service_id

    async def _start_streams(self, service_id: str) -> None:
        prefix = f"/v1/stream/{service_id}"
        subscriptions = Subscriptions(
            self.engine,
            self._service_dir(service_id),
            prefix=prefix,
            # A tenant's webhook must not reach this machine or its private network.
            webhook_policy=PublicAddressesOnly(),
        )
        self._service_dir(service_id).mkdir(parents=True, exist_ok=True)
        await subscriptions.start()
        self._subscriptions[service_id] = subscriptions
        self.tenants.streams[service_id] = StreamsProtocol(
            self.engine,
            prefix=prefix,
            long_poll_timeout=self.settings.stream_long_poll_timeout,
            extra_routes=subscriptions.route,
        )

    async def _start_source(self, service_id: str, database_url: str) -> None:
        settings = SyncSettings(
            database_url=database_url,
            data_dir=self._service_dir(service_id),
            secret=None,  # the gateway has checked the secret or client token already
            chunk_bytes=self.settings.chunk_bytes,
            long_poll_timeout=self.settings.long_poll_timeout,
            # Slot and publication names take [a-z0-9_] only.
            stream_id=service_id.lower(),
        )
        source = SyncSource(settings, self.engine)
        resources = self.control.resources

        def on_event(kind: str, details: dict) -> None:
            with contextlib.suppress(Exception):
                resources.record_event(service_id, kind, details)

        source.replication.on_event = on_event
        await source.start()
        self._sources[service_id] = source
        self.tenants.sources[service_id] = source.protocol
        # The service is `active` when it can serve shapes: wait for replication to stream
        # (or to wait on another instance's lock, which is a state users must see too).
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while source.status.state not in ("active", "waiting"):
            if asyncio.get_running_loop().time() > deadline:
                await self.stop_service({"id": service_id, "type": "postgres"})
                raise RuntimeError(
                    f"replication did not start within {START_TIMEOUT:.0f} s: "
                    f"{source.status.reason or 'no answer from the database'}"
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for subscriptions in self._subscriptions.values():
            await subscriptions.stop()
        for source in self._sources.values():
            await source.stop()
        self._sources.clear()
        self.tenants.sources.clear()
        self.tenants.streams.clear()

    def health(self) -> dict[str, Any]:
        # Unauthenticated: counts only, never a tenant's service id.
        states: dict[str, int] = {}
        for source in self._sources.values():
            states[source.status.state] = states.get(source.status.state, 0) + 1
        return {
            "status": "active",
            "sources": len(self._sources),
            "source_states": states,
            "streams": len(self.tenants.streams),
        }
