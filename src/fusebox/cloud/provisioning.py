"""Bringing services up in the background: checks, events, start, state.

Creating a service answers at once with state `provisioning`; a task per service then
records `initializing`, runs the pre-flight checks for postgres sources (`checks_passed`, or
`check_failed` with the check's message and state `error`), asks the runtime to start the
engine, and sets `active` (event `ready`) or `error` (event `start_failed`). Deleting a
service cancels its task before the runtime stops it, so a slow check cannot start an
engine for a service that no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fusebox.cloud.dsn import scrub
from fusebox.cloud.resources import Resources
from fusebox.cloud.runtime import ServiceRuntime

log = logging.getLogger("fusebox.cloud")


class Provisioner:
    def __init__(self, resources: Resources, runtime: ServiceRuntime) -> None:
        self.resources = resources
        self.runtime = runtime
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def submit(self, service_id: str) -> None:
        """Start provisioning a service (from the event loop)."""
        task = asyncio.get_running_loop().create_task(
            self._provision(service_id), name=f"provision {service_id}"
        )
        self._tasks[service_id] = task
        task.add_done_callback(lambda done: self._forget(service_id, done))

    def _forget(self, service_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(service_id) is task:
            del self._tasks[service_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("provisioning %s failed", service_id, exc_info=task.exception())

    async def cancel(self, service_id: str) -> None:
        task = self._tasks.pop(service_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self, service: dict[str, Any]) -> None:
        """Stop a deleted service: cancel its provisioning, then stop its engine."""
        await self.cancel(service["id"])
        try:
            await self.runtime.stop_service(service)
        except Exception as exc:
            # The service is deleted either way; the failure is shown in its event log.
            url = await asyncio.to_thread(self.resources.database_url_of, service["id"])
            message = scrub(str(exc) or type(exc).__name__, url) if url else str(exc)
            log.error("stopping %s failed: %s", service["id"], message)
            await self._event(service["id"], "stop_failed", {"message": message})

    async def wait_idle(self) -> None:
        """Wait until no provisioning is in progress (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for service_id in list(self._tasks):
            await self.cancel(service_id)

    async def resume(self) -> None:
        """After a restart: provision what was provisioning, start what was active."""
        for service_id in await asyncio.to_thread(self.resources.live_service_ids, "provisioning"):
            self.submit(service_id)
        for service_id in await asyncio.to_thread(self.resources.live_service_ids, "active"):
            found = await asyncio.to_thread(self.resources.service_for_runtime, service_id)
            if found is None:
                continue
            service, secret, database_url = found
            try:
                await self.runtime.start_service(service, secret, database_url)
            except Exception as exc:
                message = str(exc) or type(exc).__name__
                if database_url:
                    message = scrub(message, database_url)
                log.error("restarting %s failed: %s", service_id, message)
                await self._fail(service_id, "start", message, database_url, expected="active")

    async def _event(self, service_id: str, kind: str, details: dict[str, Any]) -> None:
        await asyncio.to_thread(self.resources.record_event, service_id, kind, details)

    async def _fail(
        self,
        service_id: str,
        check: str,
        message: str,
        database_url: str | None,
        expected: str = "provisioning",
    ) -> None:
        if database_url:
            message = scrub(message, database_url)
        kind = "start_failed" if check == "start" else "check_failed"
        await self._event(service_id, kind, {"check": check, "message": message})
        await asyncio.to_thread(
            self.resources.set_state,
            service_id,
            "error",
            {"check": check, "message": message},
            expected=expected,  # type: ignore[arg-type]
        )

    async def _provision(self, service_id: str) -> None:
        found = await asyncio.to_thread(self.resources.service_for_runtime, service_id)
        if found is None:  # deleted before we got here
            return
        service, secret, database_url = found
        await self._event(service_id, "initializing", {"type": service["type"]})
        if database_url is not None:
            try:
                result = await self.runtime.check_database(database_url)
            except Exception as exc:  # a runtime should return a failure, but be safe
                await self._fail(service_id, "connection", str(exc), database_url)
                return
            if not result.ok:
                assert result.check is not None
                await self._fail(service_id, result.check, result.message or "", database_url)
                return
            await self._event(service_id, "checks_passed", {"checks": list(result.passed)})
        try:
            await self.runtime.start_service(service, secret, database_url)
        except Exception as exc:
            await self._fail(service_id, "start", str(exc) or type(exc).__name__, database_url)
            return
        became_active = await asyncio.to_thread(
            self.resources.set_state, service_id, "active", None, expected="provisioning"
        )
        if not became_active:
            # Deleted while starting: do not leave an engine running for it.
            await self.runtime.stop_service(service)
            return
        await self._event(service_id, "ready", {})
