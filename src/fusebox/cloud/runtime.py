"""What the control plane needs from whatever runs the engines: the `ServiceRuntime` interface.

The control plane decides (a service exists, is checked, should run, is deleted); a runtime
does (checks a database, starts and stops engines). The real runtime lives outside this
package; `NullRuntime` is for unit tests only and no production path defaults to it.

Contract for implementations:
- `check_database` returns a CheckResult rather than raising; `checks.check_database` does
  the real checks and is what a runtime normally delegates to.
- `start_service` returns once the engine serves the service (or raises: the service then
  shows state `error`); it is given the current secret and, for postgres, the decrypted URL.
- `stop_service` must be idempotent and accept services that never started (a service can
  be deleted while provisioning or after its checks failed). For postgres it also drops
  the replication slot and publication.
- Later events (`waiting_for_replication_lock`, `connection_error`, `slot_invalidated`, ...)
  and state changes are reported back through `Resources.record_event` and
  `Resources.set_state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

CheckName = Literal["connection", "replication_permission", "wal_level"]


@dataclass(frozen=True)
class CheckResult:
    """The pre-flight checks' outcome: `check` names the first that failed (None: all passed)."""

    check: CheckName | None = None
    message: str | None = None
    passed: tuple[CheckName, ...] = ()

    @property
    def ok(self) -> bool:
        return self.check is None

    @classmethod
    def success(cls, passed: tuple[CheckName, ...] = ()) -> CheckResult:
        return cls(passed=passed)

    @classmethod
    def failure(
        cls, check: CheckName, message: str, passed: tuple[CheckName, ...] = ()
    ) -> CheckResult:
        return cls(check=check, message=message, passed=passed)


@runtime_checkable
class ServiceRuntime(Protocol):
    async def check_database(self, database_url: str) -> CheckResult: ...

    async def start_service(
        self, service: dict[str, Any], secret: str, database_url: str | None
    ) -> None: ...

    async def stop_service(self, service: dict[str, Any]) -> None: ...


@dataclass
class NullRuntime:
    """For unit tests: runs nothing, records what it was asked, answers as configured."""

    check_result: CheckResult = field(default_factory=CheckResult.success)
    start_error: Exception | None = None
    checked: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    async def check_database(self, database_url: str) -> CheckResult:
        self.checked.append(database_url)
        return self.check_result

    async def start_service(
        self, service: dict[str, Any], secret: str, database_url: str | None
    ) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started.append(service["id"])

    async def stop_service(self, service: dict[str, Any]) -> None:
        self.stopped.append(service["id"])
