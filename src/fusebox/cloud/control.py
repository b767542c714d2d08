"""The control plane as one object: database, keys, accounts and resources, opened together.

`open_control_plane(data_dir)` is the embedded default: SQLite at `<data_dir>/control.db`,
the master key from FUSEBOX_MASTER_KEY or `<data_dir>/master.key`, schema migrated to the
newest revision. Give `database_url` (postgresql://...) for the cluster setup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy.engine import Engine

from fusebox.cloud import db
from fusebox.cloud.accounts import DEFAULT_SESSION_TTL, Accounts, BootstrapResult
from fusebox.cloud.clock import Clock, utcnow
from fusebox.cloud.crypto import Keyring, Passwords, load_master_key
from fusebox.cloud.members import Members
from fusebox.cloud.resources import DEFAULT_SECRET_CACHE_SECONDS, Resources, ServiceStatus


@dataclass
class ControlPlane:
    engine: Engine
    keyring: Keyring
    accounts: Accounts
    resources: Resources
    members: Members
    clock: Clock

    def verify_service_secret(self, service_id: str, presented: str) -> bool:
        """For the data-plane gateway: is this a valid secret of that live service now?"""
        return self.resources.verify_service_secret(service_id, presented)

    def service_status(self, service_id: str) -> ServiceStatus | None:
        """For the gateway: the state (and error) of a live service, None if there is none."""
        return self.resources.service_status(service_id)

    def bootstrap(self, owner_email: str | None = None) -> BootstrapResult | None:
        """First start: make the owner account (shown once). None when users exist."""
        return self.accounts.bootstrap(owner_email)

    def close(self) -> None:
        self.engine.dispose()


def open_control_plane(
    data_dir: Path,
    *,
    database_url: str | None = None,
    master_key: bytes | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Clock = utcnow,
    session_ttl: timedelta = DEFAULT_SESSION_TTL,
    password_hasher: PasswordHasher | None = None,
    secret_cache_seconds: float = DEFAULT_SECRET_CACHE_SECONDS,
) -> ControlPlane:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.create_db_engine(database_url or db.sqlite_url(data_dir))
    db.upgrade(engine)
    keyring = Keyring(master_key if master_key is not None else load_master_key(data_dir, environ))
    accounts = Accounts(
        engine, passwords=Passwords(password_hasher), clock=clock, session_ttl=session_ttl
    )
    resources = Resources(engine, keyring, clock=clock, secret_cache_seconds=secret_cache_seconds)
    return ControlPlane(
        engine=engine,
        keyring=keyring,
        accounts=accounts,
        resources=resources,
        members=Members(engine, accounts, clock),
        clock=clock,
    )
