"""Workspaces, projects, environments and services: the tenant's resources and their secrets.

Every method a caller reaches through the API takes `visible`, the IDs of the workspaces the
caller may see, and answers NotFound for anything outside them (never Forbidden), so that IDs
do not leak between tenants. Deletes are soft: `deleted_at` is set and the row disappears from
lists and lookups.

Service secrets and connection strings are stored encrypted (crypto.Keyring). A rotated-out
secret stays valid until `valid_until` (the overlap window) so clients can move to the new
one without downtime. `verify_service_secret` is what the data-plane gateway calls on every
request: it keeps decrypted secrets in memory per service and compares in constant time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fusebox.cloud import client_tokens, db
from fusebox.cloud.accounts import insert_membership
from fusebox.cloud.clock import Clock, rfc3339, utcnow
from fusebox.cloud.crypto import SERVICE_SECRET_PREFIX, Keyring, new_token, same_secret
from fusebox.cloud.dsn import InvalidDatabaseUrl, mask_database_url, validate_database_url
from fusebox.cloud.errors import BadRequest, Conflict, NotFound, ValidationFailed
from fusebox.cloud.ids import is_id, new_id
from fusebox.cloud.miss_cache import MissCache

log = logging.getLogger("fusebox.cloud")

ServiceType = Literal["postgres", "streams"]
ServiceState = Literal["provisioning", "active", "error"]
SERVICE_TYPES: tuple[str, ...] = ("postgres", "streams")

# How long a decrypted secret may be served from memory before it is re-read. Changes made
# in this process invalidate at once; this bounds how long a rotation or delete made by
# another process (cluster mode) takes to be seen here.
DEFAULT_SECRET_CACHE_SECONDS = 10.0


def _secret_context(service_id: str) -> str:
    return f"service_secret:{service_id}"


def _url_context(service_id: str) -> str:
    return f"database_url:{service_id}"


def _public_times(row: Any) -> dict[str, Any]:
    return {
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
        "deleted_at": rfc3339(row.deleted_at),
    }


def _workspace(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, **_public_times(row)}


def _project(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "workspace_id": row.workspace_id, **_public_times(row)}


def _environment(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "project_id": row.project_id,
        "workspace_id": row.workspace_id,
        **_public_times(row),
    }


def service_url(public_base_url: str, service: dict[str, Any]) -> str:
    """The data-plane base URL of a service (docs/admin-api.md, `url`)."""
    base = public_base_url.rstrip("/")
    if service["type"] == "postgres":
        return f"{base}/v1/shape"
    return f"{base}/v1/stream/{service['id']}"


@dataclass
class _CachedSecrets:
    # (secret, valid_until or None for the current one)
    secrets: list[tuple[bytes, datetime | None]]
    loaded_at: float
    # What the gateway tells a client whose credentials are right but whose service does
    # not serve (yet): its state, and for `error` the failed check and its message.
    state: str = "active"
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ServiceStatus:
    state: str
    error: dict[str, Any] | None


@dataclass(frozen=True)
class CreatedService:
    service: dict[str, Any]
    secret: str


class Resources:
    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        *,
        clock: Clock = utcnow,
        secret_cache_seconds: float = DEFAULT_SECRET_CACHE_SECONDS,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        self.secret_cache_seconds = secret_cache_seconds
        self._cache: dict[str, _CachedSecrets] = {}
        self._cache_lock = threading.Lock()
        # IDs that matched no live service, so that repeating one costs no query.
        self._misses = MissCache(secret_cache_seconds)
        # Bumped on every invalidation; a load that raced with one is not cached.
        self._generation = 0

    # -- workspaces -----------------------------------------------------------------------

    def list_workspaces(self, visible: Collection[str]) -> list[dict[str, Any]]:
        w = db.workspaces
        with db.reading(self.engine) as conn:
            rows = conn.execute(
                select(w)
                .where(w.c.id.in_(list(visible)), w.c.deleted_at.is_(None))
                .order_by(w.c.created_at, w.c.id)
            ).all()
        return [_workspace(row) for row in rows]

    def create_workspace(self, owner_id: str, name: str) -> dict[str, Any]:
        """A workspace whose owner is `owner_id`."""
        now = self.clock()
        workspace_id = new_id("ws")
        with db.writing(self.engine) as conn:
            conn.execute(
                insert(db.workspaces).values(
                    id=workspace_id, name=name, created_at=now, updated_at=now
                )
            )
            insert_membership(conn, workspace_id, owner_id, "owner", now)
            row = conn.execute(
                select(db.workspaces).where(db.workspaces.c.id == workspace_id)
            ).one()
        return _workspace(row)

    def get_workspace(self, visible: Collection[str], workspace_id: str) -> dict[str, Any]:
        w = db.workspaces
        if workspace_id in visible:
            with db.reading(self.engine) as conn:
                row = conn.execute(
                    select(w).where(w.c.id == workspace_id, w.c.deleted_at.is_(None))
                ).first()
            if row is not None:
                return _workspace(row)
        raise NotFound(f"no workspace {workspace_id}")

    # -- projects -------------------------------------------------------------------------

    def list_projects(
        self, visible: Collection[str], workspace_id: str | None = None
    ) -> list[dict[str, Any]]:
        p = db.projects
        wanted = self._narrow(visible, workspace_id)
        with db.reading(self.engine) as conn:
            rows = conn.execute(
                select(p)
                .where(p.c.workspace_id.in_(wanted), p.c.deleted_at.is_(None))
                .order_by(p.c.created_at, p.c.id)
            ).all()
        return [_project(row) for row in rows]

    def create_project(
        self, visible: Collection[str], workspace_id: str, name: str
    ) -> dict[str, Any]:
        self.get_workspace(visible, workspace_id)
        now = self.clock()
        project_id = new_id("proj")
        with db.writing(self.engine) as conn:
            conn.execute(
                insert(db.projects).values(
                    id=project_id,
                    workspace_id=workspace_id,
                    name=name,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = conn.execute(select(db.projects).where(db.projects.c.id == project_id)).one()
        return _project(row)

    def get_project(self, visible: Collection[str], project_id: str) -> dict[str, Any]:
        with db.reading(self.engine) as conn:
            row = self._live_project(conn, visible, project_id)
        return _project(row)

    def _live_project(self, conn: Connection, visible: Collection[str], project_id: str) -> Any:
        p, w = db.projects, db.workspaces
        row = None
        if is_id(project_id, "proj"):
            row = conn.execute(
                select(p)
                .join(w, w.c.id == p.c.workspace_id)
                .where(
                    p.c.id == project_id,
                    p.c.deleted_at.is_(None),
                    w.c.deleted_at.is_(None),
                    p.c.workspace_id.in_(list(visible)),
                )
            ).first()
        if row is None:
            raise NotFound(f"no project {project_id}")
        return row

    # -- environments ---------------------------------------------------------------------

    def _environment_query(self) -> Select[Any]:
        e, p, w = db.environments, db.projects, db.workspaces
        return (
            select(e, p.c.workspace_id)
            .join(p, p.c.id == e.c.project_id)
            .join(w, w.c.id == p.c.workspace_id)
            .where(e.c.deleted_at.is_(None), p.c.deleted_at.is_(None), w.c.deleted_at.is_(None))
        )

    def list_environments(
        self, visible: Collection[str], project_id: str | None = None
    ) -> list[dict[str, Any]]:
        e, p = db.environments, db.projects
        query = self._environment_query().where(p.c.workspace_id.in_(list(visible)))
        with db.reading(self.engine) as conn:
            if project_id is not None:
                self._live_project(conn, visible, project_id)
                query = query.where(e.c.project_id == project_id)
            rows = conn.execute(query.order_by(e.c.created_at, e.c.id)).all()
        return [_environment(row) for row in rows]

    def get_environment(self, visible: Collection[str], environment_id: str) -> dict[str, Any]:
        with db.reading(self.engine) as conn:
            return _environment(self._live_environment(conn, visible, environment_id))

    def _live_environment(
        self, conn: Connection, visible: Collection[str], environment_id: str, *, lock: bool = False
    ) -> Any:
        e, p = db.environments, db.projects
        row = None
        if is_id(environment_id, "env"):
            query = self._environment_query().where(
                e.c.id == environment_id, p.c.workspace_id.in_(list(visible))
            )
            if lock:  # Postgres: serialise deletes; SQLite writers are serialised already
                query = query.with_for_update(of=e)
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no environment {environment_id}")
        return row

    def create_environment(
        self,
        visible: Collection[str],
        project_id: str,
        name: str,
        clone_from: str | None = None,
    ) -> tuple[dict[str, Any], list[CreatedService]]:
        """The environment, and the services made for it when cloning (to be provisioned).

        `clone_from` (an environment ID or name in the same project): each of its services'
        kinds is created anew with a new secret; postgres services reuse its database URL.
        """
        e = db.environments
        now = self.clock()
        environment_id = new_id("env")
        created: list[CreatedService] = []
        try:
            with db.writing(self.engine) as conn:
                project = self._live_project(conn, visible, project_id)
                source = None
                if clone_from is not None:
                    by = e.c.id if is_id(clone_from, "env") else e.c.name
                    source = conn.execute(
                        select(e).where(
                            by == clone_from, e.c.project_id == project.id, e.c.deleted_at.is_(None)
                        )
                    ).first()
                    if source is None:
                        raise NotFound(f"no environment {clone_from} in project {project.id}")
                conn.execute(
                    insert(e).values(
                        id=environment_id,
                        project_id=project.id,
                        name=name,
                        created_at=now,
                        updated_at=now,
                    )
                )
                if source is not None:
                    for original in self._live_services_of(conn, source.id):
                        url = None
                        if original.database_url_enc is not None:
                            url = self.keyring.decrypt(
                                original.database_url_enc, _url_context(original.id)
                            )
                        created.append(
                            self._insert_service(
                                conn,
                                environment_id,
                                original.type,
                                original.region,
                                original.name,
                                url,
                                now,
                                cloned_from=original.id,
                            )
                        )
                row = conn.execute(self._environment_query().where(e.c.id == environment_id)).one()
        except IntegrityError:
            raise Conflict(
                f"project {project_id} already has an environment named {name!r}"
            ) from None
        for service in created:
            self._invalidate(service.service["id"])
        return _environment(row), created

    def delete_environment(
        self, visible: Collection[str], environment_id: str
    ) -> list[dict[str, Any]]:
        """Soft-delete the environment and its services; returns the services, to stop."""
        now = self.clock()
        with db.writing(self.engine) as conn:
            environment = self._live_environment(conn, visible, environment_id, lock=True)
            doomed = [row.id for row in self._live_services_of(conn, environment.id)]
            conn.execute(
                update(db.environments)
                .where(db.environments.c.id == environment.id)
                .values(deleted_at=now, updated_at=now)
            )
            services = [self._delete_service_row(conn, service_id, now) for service_id in doomed]
        for service in services:
            self._invalidate(service["id"])
        return services

    # -- services -------------------------------------------------------------------------

    def _service_query(self) -> Select[Any]:
        s, e, p, w = db.services, db.environments, db.projects, db.workspaces
        return (
            select(s, e.c.project_id, p.c.workspace_id)
            .join(e, e.c.id == s.c.environment_id)
            .join(p, p.c.id == e.c.project_id)
            .join(w, w.c.id == p.c.workspace_id)
        )

    def _live_service_query(self) -> Select[Any]:
        s, e, p, w = db.services, db.environments, db.projects, db.workspaces
        return self._service_query().where(
            s.c.deleted_at.is_(None),
            e.c.deleted_at.is_(None),
            p.c.deleted_at.is_(None),
            w.c.deleted_at.is_(None),
        )

    def _service(self, row: Any) -> dict[str, Any]:
        database = None
        if row.database_url_enc is not None:
            plain = self.keyring.decrypt(row.database_url_enc, _url_context(row.id))
            database = mask_database_url(plain)
        return {
            "id": row.id,
            "name": row.name,
            "type": row.type,
            "region": row.region,
            "environment_id": row.environment_id,
            "project_id": row.project_id,
            "workspace_id": row.workspace_id,
            "state": row.state,
            "error": row.error,
            "database": database,
            **_public_times(row),
        }

    def _live_services_of(self, conn: Connection, environment_id: str) -> Sequence[Any]:
        s = db.services
        return conn.execute(
            select(s)
            .where(s.c.environment_id == environment_id, s.c.deleted_at.is_(None))
            .order_by(s.c.created_at, s.c.id)
        ).all()

    def _live_service(
        self, conn: Connection, visible: Collection[str], service_id: str, *, lock: bool = False
    ) -> Any:
        s, p = db.services, db.projects
        row = None
        if is_id(service_id, "svc"):
            query = self._live_service_query().where(
                s.c.id == service_id, p.c.workspace_id.in_(list(visible))
            )
            if lock:
                query = query.with_for_update(of=s)
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no service {service_id}")
        return row

    def list_services(
        self, visible: Collection[str], environment_id: str | None = None
    ) -> list[dict[str, Any]]:
        s, p = db.services, db.projects
        query = self._live_service_query().where(p.c.workspace_id.in_(list(visible)))
        with db.reading(self.engine) as conn:
            if environment_id is not None:
                self._live_environment(conn, visible, environment_id)
                query = query.where(s.c.environment_id == environment_id)
            rows = conn.execute(query.order_by(s.c.created_at, s.c.id)).all()
        return [self._service(row) for row in rows]

    def get_service(self, visible: Collection[str], service_id: str) -> dict[str, Any]:
        with db.reading(self.engine) as conn:
            return self._service(self._live_service(conn, visible, service_id))

    def create_service(
        self,
        visible: Collection[str],
        environment_id: str,
        type: str,
        region: str,
        name: str | None = None,
        database_url: str | None = None,
    ) -> CreatedService:
        """A new service in state `provisioning`, with its secret (shown once here)."""
        if type not in SERVICE_TYPES:
            raise ValidationFailed(f"type must be one of {', '.join(SERVICE_TYPES)}")
        if type == "postgres":
            if database_url is None:
                raise ValidationFailed("a postgres service needs database_url")
            try:
                validate_database_url(database_url)
            except InvalidDatabaseUrl as exc:
                raise ValidationFailed(f"database_url: {exc}") from None
        elif database_url is not None:
            raise ValidationFailed("only postgres services take a database_url")
        now = self.clock()
        with db.writing(self.engine) as conn:
            environment = self._live_environment(conn, visible, environment_id)
            created = self._insert_service(
                conn, environment.id, type, region, name or type, database_url, now
            )
        self._invalidate(created.service["id"])  # once committed: no stale miss for it
        return created

    def _insert_service(
        self,
        conn: Connection,
        environment_id: str,
        type: str,
        region: str,
        name: str,
        database_url: str | None,
        now: datetime,
        cloned_from: str | None = None,
    ) -> CreatedService:
        service_id = new_id("svc")
        secret = new_token(SERVICE_SECRET_PREFIX)
        conn.execute(
            insert(db.services).values(
                id=service_id,
                environment_id=environment_id,
                name=name,
                type=type,
                region=region,
                state="provisioning",
                database_url_enc=(
                    self.keyring.encrypt(database_url, _url_context(service_id))
                    if database_url is not None
                    else None
                ),
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            insert(db.service_secrets).values(
                service_id=service_id,
                secret_enc=self.keyring.encrypt(secret, _secret_context(service_id)),
                created_at=now,
            )
        )
        details = {"cloned_from": cloned_from} if cloned_from else {}
        self._insert_event(conn, service_id, "created", details, now)
        row = conn.execute(self._service_query().where(db.services.c.id == service_id)).one()
        return CreatedService(service=self._service(row), secret=secret)

    def delete_service(self, visible: Collection[str], service_id: str) -> dict[str, Any]:
        """Soft-delete; returns the service as it was, for the runtime to stop."""
        now = self.clock()
        with db.writing(self.engine) as conn:
            row = self._live_service(conn, visible, service_id, lock=True)
            service = self._delete_service_row(conn, row.id, now)
        self._invalidate(service_id)
        return service

    def _delete_service_row(
        self, conn: Connection, service_id: str, now: datetime
    ) -> dict[str, Any]:
        conn.execute(
            update(db.services)
            .where(db.services.c.id == service_id)
            .values(deleted_at=now, updated_at=now)
        )
        self._insert_event(conn, service_id, "deleted", {}, now)
        row = conn.execute(self._service_query().where(db.services.c.id == service_id)).one()
        return self._service(row)

    # -- secrets --------------------------------------------------------------------------

    def get_secret(self, visible: Collection[str], service_id: str) -> str:
        with db.reading(self.engine) as conn:
            row = self._live_service(conn, visible, service_id)
            return self._current_secret(conn, row.id)

    def _current_secret(self, conn: Connection, service_id: str) -> str:
        ss = db.service_secrets
        encrypted = conn.execute(
            select(ss.c.secret_enc)
            .where(ss.c.service_id == service_id, ss.c.valid_until.is_(None))
            .order_by(ss.c.id.desc())
            .limit(1)
        ).scalar_one()
        return self.keyring.decrypt(encrypted, _secret_context(service_id))

    def rotate_secret(
        self, visible: Collection[str], service_id: str, overlap: timedelta
    ) -> tuple[str, datetime]:
        """(new secret, time until which the previous one stays valid).

        No older secret outlives the newest overlap: rotating with overlap 0 (a leaked
        secret) ends every previous secret at once.
        """
        ss = db.service_secrets
        now = self.clock()
        until = now + overlap
        secret = new_token(SERVICE_SECRET_PREFIX)
        with db.writing(self.engine) as conn:
            row = self._live_service(conn, visible, service_id, lock=True)
            conn.execute(delete(ss).where(ss.c.service_id == row.id, ss.c.valid_until <= now))
            conn.execute(
                update(ss)
                .where(
                    ss.c.service_id == row.id,
                    or_(ss.c.valid_until.is_(None), ss.c.valid_until > until),
                )
                .values(valid_until=until)
            )
            conn.execute(
                insert(ss).values(
                    service_id=row.id,
                    secret_enc=self.keyring.encrypt(secret, _secret_context(row.id)),
                    created_at=now,
                )
            )
            self._insert_event(
                conn, row.id, "secret_rotated", {"previous_valid_until": rfc3339(until)}, now
            )
        self._invalidate(row.id)
        return secret, until

    def verify_service_secret(self, service_id: str, presented: str) -> bool:
        """Whether `presented` is a secret of the live service `service_id` right now.

        Called by the data-plane gateway on every request: decrypted secrets are cached per
        service (dropped on rotation and delete), every candidate is compared in constant
        time, and a rotated-out secret counts only until its `valid_until`.
        """
        entry = self._cached_secrets(service_id)
        if entry is None:
            return False
        now = self.clock()
        presented_bytes = presented.encode("utf-8", "surrogatepass")
        matched = False
        for secret, valid_until in entry.secrets:
            # No early exit: the time taken does not say which secret (if any) matched.
            if same_secret(secret, presented_bytes) and (valid_until is None or now < valid_until):
                matched = True
        return matched

    def _secrets_in_force(self, service_id: str) -> list[str]:
        entry = self._cached_secrets(service_id)
        if entry is None:
            return []
        now = self.clock()
        return [
            secret.decode()
            for secret, valid_until in entry.secrets
            if valid_until is None or now < valid_until
        ]

    def service_status(self, service_id: str) -> ServiceStatus | None:
        """State (and error) of a live service, for the gateway; None if there is none.
        Served from the same cache as the secrets, so asking costs no query."""
        entry = self._cached_secrets(service_id)
        return None if entry is None else ServiceStatus(entry.state, entry.error)

    def _cached_secrets(self, service_id: str) -> _CachedSecrets | None:
        entry = self._cache.get(service_id)
        if entry is not None and time.monotonic() - entry.loaded_at < self.secret_cache_seconds:
            return entry
        if not is_id(service_id, "svc") or service_id in self._misses:
            return None
        generation = self._generation
        ss, s = db.service_secrets, db.services
        now = self.clock()
        with db.reading(self.engine) as conn:
            live = conn.execute(
                self._live_service_query()
                .with_only_columns(s.c.id, s.c.state, s.c.error)
                .where(s.c.id == service_id)
            ).first()
            if live is None:
                with self._cache_lock:
                    if generation == self._generation:
                        self._misses.add(service_id)
                return None
            rows = conn.execute(
                select(ss.c.secret_enc, ss.c.valid_until).where(
                    ss.c.service_id == service_id,
                    or_(ss.c.valid_until.is_(None), ss.c.valid_until > now),
                )
            ).all()
        entry = _CachedSecrets(
            secrets=[
                (
                    self.keyring.decrypt(row.secret_enc, _secret_context(service_id)).encode(),
                    row.valid_until,
                )
                for row in rows
            ],
            loaded_at=time.monotonic(),
            state=live.state,
            error=live.error,
        )
        with self._cache_lock:
            if generation == self._generation:
                self._cache[service_id] = entry
        return entry

    def _invalidate(self, service_id: str) -> None:
        with self._cache_lock:
            self._generation += 1
            self._cache.pop(service_id, None)
            self._misses.discard(service_id)

    # -- client tokens --------------------------------------------------------------------

    def create_client_token(
        self,
        visible: Collection[str],
        service_id: str,
        claim: client_tokens.ShapeClaim,
        ttl: timedelta,
    ) -> tuple[str, datetime]:
        """A shape-scoped token for browsers, signed with the service's current secret."""
        with db.reading(self.engine) as conn:
            row = self._live_service(conn, visible, service_id)
            if row.type != "postgres":
                raise BadRequest("client tokens are for postgres (sync) services only")
            secret = self._current_secret(conn, row.id)
        return client_tokens.mint(row.id, secret, claim, self.clock(), ttl)

    def verify_client_token(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired client token (for the gateway), else None."""
        service_id = client_tokens.token_service_id(token)
        if service_id is None:
            return None
        return client_tokens.verify(token, self._secrets_in_force(service_id), self.clock())

    # -- events and state (also used by the provisioner and the runtime) ------------------

    def _insert_event(
        self, conn: Connection, service_id: str, kind: str, details: dict[str, Any], now: datetime
    ) -> None:
        conn.execute(
            insert(db.events).values(
                service_id=service_id, kind=kind, details=details, created_at=now
            )
        )

    def record_event(
        self, service_id: str, kind: str, details: dict[str, Any] | None = None
    ) -> None:
        """Append to a service's event log. Details are shown to users: no secrets in them."""
        with db.writing(self.engine) as conn:
            self._insert_event(conn, service_id, kind, details or {}, self.clock())

    def list_events(
        self, visible: Collection[str], service_id: str, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The newest `limit` events, oldest first."""
        ev = db.events
        with db.reading(self.engine) as conn:
            row = self._live_service(conn, visible, service_id)
            rows = conn.execute(
                select(ev).where(ev.c.service_id == row.id).order_by(ev.c.id.desc()).limit(limit)
            ).all()
        return [
            {
                "id": event.id,
                "service_id": event.service_id,
                "kind": event.kind,
                "details": event.details,
                "created_at": rfc3339(event.created_at),
            }
            for event in reversed(rows)
        ]

    def set_state(
        self,
        service_id: str,
        state: ServiceState,
        error: dict[str, str] | None = None,
        *,
        expected: ServiceState | None = None,
    ) -> bool:
        """Move a live service to `state` (only from `expected`, if given); False if the
        service is gone or was not in the expected state."""
        s = db.services
        conditions = [s.c.id == service_id, s.c.deleted_at.is_(None)]
        if expected is not None:
            conditions.append(s.c.state == expected)
        with db.writing(self.engine) as conn:
            result = conn.execute(
                update(s)
                .where(and_(*conditions))
                .values(state=state, error=error, updated_at=self.clock())
            )
        self._invalidate(service_id)  # the gateway reads the state from the cache
        return result.rowcount == 1

    def service_for_runtime(self, service_id: str) -> tuple[dict[str, Any], str, str | None] | None:
        """(service, current secret, database URL) of a live service, decrypted, or None."""
        s = db.services
        with db.reading(self.engine) as conn:
            row = conn.execute(self._live_service_query().where(s.c.id == service_id)).first()
            if row is None:
                return None
            secret = self._current_secret(conn, row.id)
        url = None
        if row.database_url_enc is not None:
            url = self.keyring.decrypt(row.database_url_enc, _url_context(row.id))
        return self._service(row), secret, url

    def database_url_of(self, service_id: str) -> str | None:
        """The decrypted connection string of a service, deleted or not (to scrub messages)."""
        s = db.services
        with db.reading(self.engine) as conn:
            encrypted = conn.execute(
                select(s.c.database_url_enc).where(s.c.id == service_id)
            ).scalar()
        if encrypted is None:
            return None
        return self.keyring.decrypt(encrypted, _url_context(service_id))

    def live_service_ids(self, state: ServiceState | None = None) -> list[str]:
        """Every live service (in `state`, if given): what to resume after a restart."""
        s = db.services
        query = self._live_service_query().with_only_columns(s.c.id)
        if state is not None:
            query = query.where(s.c.state == state)
        with db.reading(self.engine) as conn:
            return list(conn.execute(query.order_by(s.c.created_at, s.c.id)).scalars())

    # -- helpers --------------------------------------------------------------------------

    def _narrow(self, visible: Collection[str], workspace_id: str | None) -> list[str]:
        if workspace_id is None:
            return list(visible)
        if workspace_id not in visible:
            raise NotFound(f"no workspace {workspace_id}")
        return [workspace_id]
