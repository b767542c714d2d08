"""Users, password sign-in, sessions, API tokens and workspace memberships.

Two kinds of bearer credential reach the admin API:
- a **session** (`fbxs_...`), from signing in with a password: the user, every scope, every
  workspace the user belongs to; it expires after `session_ttl`;
- an **API token** (`fbx_...`): bound to one workspace, limited to its scopes, valid while not
  revoked and while its creator is still a member of the workspace.
Both are stored as SHA-256 hashes only; the plaintext is returned once, at creation.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fusebox.cloud import db, scopes
from fusebox.cloud.clock import Clock, rfc3339, utcnow
from fusebox.cloud.crypto import (
    API_TOKEN_PREFIX,
    SESSION_TOKEN_PREFIX,
    Passwords,
    hash_token,
    new_token,
    same_secret,
)
from fusebox.cloud.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from fusebox.cloud.ids import is_id, new_id

log = logging.getLogger("fusebox.cloud")

DEFAULT_SESSION_TTL = timedelta(days=7)
DEFAULT_OWNER_EMAIL = "admin@localhost"
Role = Literal["owner", "admin", "member"]


@dataclass(frozen=True)
class Principal:
    """Who is calling, and with what authority."""

    user: dict[str, Any]
    kind: Literal["session", "api_token"]
    scopes: frozenset[str]
    session_id: str | None = None
    token: dict[str, Any] | None = None  # the API token's public description

    @property
    def user_id(self) -> str:
        return self.user["id"]

    @property
    def bound_workspace_id(self) -> str | None:
        return self.token["workspace_id"] if self.token else None

    def can(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class BootstrapResult:
    """The first owner account, made on first start. The password is shown once."""

    email: str
    password: str = field(repr=False)  # so that logging the result cannot leak it
    user_id: str
    workspace_id: str


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not (at and local and domain) or len(email) > 320:
        raise ValidationFailed("email must look like name@domain")
    return email


def public_user(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "name": row.name,
        "created_at": rfc3339(row.created_at),
    }


def public_token(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "scopes": sorted(row.scopes),
        "workspace_id": row.workspace_id,
        "created_by": row.user_id,
        "created_at": rfc3339(row.created_at),
    }


# The user's columns when joined to another table whose `id` and `created_at` would clash.
_USER_COLUMNS = (
    db.users.c.id.label("user_id"),
    db.users.c.email.label("user_email"),
    db.users.c.name.label("user_name"),
    db.users.c.created_at.label("user_created_at"),
)


def _joined_user(row: Any) -> dict[str, Any]:
    return {
        "id": row.user_id,
        "email": row.user_email,
        "name": row.user_name,
        "created_at": rfc3339(row.user_created_at),
    }


def insert_membership(
    conn: Connection, workspace_id: str, user_id: str, role: Role, now: Any
) -> None:
    conn.execute(
        insert(db.memberships).values(
            workspace_id=workspace_id, user_id=user_id, role=role, created_at=now
        )
    )


class Accounts:
    def __init__(
        self,
        engine: Engine,
        *,
        passwords: Passwords | None = None,
        clock: Clock = utcnow,
        session_ttl: timedelta = DEFAULT_SESSION_TTL,
    ) -> None:
        self.engine = engine
        self.passwords = passwords or Passwords()
        self.clock = clock
        self.session_ttl = session_ttl

    # -- users ----------------------------------------------------------------------------

    def create_user(
        self, email: str, password: str | None, name: str | None = None
    ) -> dict[str, Any]:
        """A new user; `password=None` makes an account that cannot sign in with a password."""
        email = normalise_email(email)
        now = self.clock()
        password_hash = self.passwords.hash(password) if password is not None else None
        user_id = new_id("usr")
        try:
            with db.writing(self.engine) as conn:
                conn.execute(
                    insert(db.users).values(
                        id=user_id,
                        email=email,
                        name=name,
                        password_hash=password_hash,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise Conflict(f"a user with email {email} exists") from None
        return self.get_user(user_id)

    def get_user(self, user_id: str) -> dict[str, Any]:
        with db.reading(self.engine) as conn:
            row = conn.execute(
                select(db.users).where(db.users.c.id == user_id, db.users.c.deleted_at.is_(None))
            ).first()
        if row is None:
            raise NotFound(f"no user {user_id}")
        return public_user(row)

    def set_password(self, user_id: str, password: str) -> None:
        with db.writing(self.engine) as conn:
            conn.execute(
                update(db.users)
                .where(db.users.c.id == user_id)
                .values(password_hash=self.passwords.hash(password), updated_at=self.clock())
            )

    def change_password(self, principal: Principal, current: str, new: str) -> int:
        """Set a new password, given the current one, from a signed-in session; every other
        session of the user ends (whoever else held one must sign in again). Returns how
        many sessions were ended."""
        if principal.kind != "session" or principal.session_id is None:
            raise Forbidden("changing a password needs a signed-in session, not an API token")
        with db.reading(self.engine) as conn:
            stored = conn.execute(
                select(db.users.c.password_hash).where(db.users.c.id == principal.user_id)
            ).scalar()
        if not self.passwords.verify(stored, current):
            raise ValidationFailed("current_password is not the account's password")
        now = self.clock()
        s = db.sessions
        with db.writing(self.engine) as conn:
            conn.execute(
                update(db.users)
                .where(db.users.c.id == principal.user_id)
                .values(password_hash=self.passwords.hash(new), updated_at=now)
            )
            ended = conn.execute(
                update(s)
                .where(
                    s.c.user_id == principal.user_id,
                    s.c.id != principal.session_id,
                    s.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        return ended.rowcount

    # -- sessions -------------------------------------------------------------------------

    def login(self, email: str, password: str) -> tuple[str, dict[str, Any]]:
        """(session token, user) for a correct email and password; Unauthorized otherwise.

        The message is the same for an unknown email and a wrong password.
        """
        try:
            email = normalise_email(email)
        except ValidationFailed:
            email = ""
        with db.reading(self.engine) as conn:
            row = conn.execute(
                select(db.users).where(db.users.c.email == email, db.users.c.deleted_at.is_(None))
            ).first()
        stored = row.password_hash if row is not None else None
        if not self.passwords.verify(stored, password) or row is None:
            raise Unauthorized("wrong email or password")
        now = self.clock()
        token = new_token(SESSION_TOKEN_PREFIX)
        with db.writing(self.engine) as conn:
            if stored is not None and self.passwords.needs_rehash(stored):
                conn.execute(
                    update(db.users)
                    .where(db.users.c.id == row.id)
                    .values(password_hash=self.passwords.hash(password))
                )
            conn.execute(
                insert(db.sessions).values(
                    id=new_id("ses"),
                    user_id=row.id,
                    token_hash=hash_token(token),
                    created_at=now,
                    expires_at=now + self.session_ttl,
                )
            )
        return token, public_user(row)

    def logout(self, principal: Principal) -> None:
        if principal.kind != "session" or principal.session_id is None:
            raise Forbidden("only a signed-in session can log out; revoke API tokens instead")
        with db.writing(self.engine) as conn:
            conn.execute(
                update(db.sessions)
                .where(db.sessions.c.id == principal.session_id)
                .values(revoked_at=self.clock())
            )

    # -- authentication -------------------------------------------------------------------

    def authenticate(self, bearer: str) -> Principal:
        """The principal behind a bearer credential; Unauthorized if it is not valid now."""
        if bearer.startswith(API_TOKEN_PREFIX):
            return self._authenticate_api_token(bearer)
        if bearer.startswith(SESSION_TOKEN_PREFIX):
            return self._authenticate_session(bearer)
        raise Unauthorized("invalid credentials")

    def _authenticate_session(self, bearer: str) -> Principal:
        digest = hash_token(bearer)
        s, u = db.sessions, db.users
        with db.reading(self.engine) as conn:
            row = conn.execute(
                select(s.c.id, s.c.token_hash, s.c.expires_at, s.c.revoked_at, *_USER_COLUMNS)
                .join(u, u.c.id == s.c.user_id)
                .where(s.c.token_hash == digest, u.c.deleted_at.is_(None))
            ).first()
        if row is None or not same_secret(row.token_hash, digest):
            raise Unauthorized("invalid credentials")
        if row.revoked_at is not None or row.expires_at <= self.clock():
            raise Unauthorized("the session has expired; sign in again")
        return Principal(
            user=_joined_user(row), kind="session", scopes=scopes.ALL_SCOPES, session_id=row.id
        )

    def _authenticate_api_token(self, bearer: str) -> Principal:
        digest = hash_token(bearer)
        t, u, m, w = db.api_tokens, db.users, db.memberships, db.workspaces
        with db.reading(self.engine) as conn:
            row = conn.execute(
                select(t, *_USER_COLUMNS[1:])
                .join(u, u.c.id == t.c.user_id)
                .join(w, w.c.id == t.c.workspace_id)
                # The token is worth only what its creator may still do in the workspace.
                .join(m, and_(m.c.workspace_id == t.c.workspace_id, m.c.user_id == t.c.user_id))
                .where(
                    t.c.token_hash == digest,
                    t.c.revoked_at.is_(None),
                    u.c.deleted_at.is_(None),
                    w.c.deleted_at.is_(None),
                )
            ).first()
        if row is None or not same_secret(row.token_hash, digest):
            raise Unauthorized("invalid credentials")
        return Principal(
            user=_joined_user(row),
            kind="api_token",
            scopes=scopes.effective(row.scopes),
            token=public_token(row),
        )

    # -- workspaces the principal can see ---------------------------------------------------

    def visible_workspaces(self, principal: Principal) -> frozenset[str]:
        """IDs of the live workspaces the principal may act in."""
        m, w = db.memberships, db.workspaces
        query = (
            select(w.c.id)
            .join(m, m.c.workspace_id == w.c.id)
            .where(m.c.user_id == principal.user_id, w.c.deleted_at.is_(None))
        )
        if principal.bound_workspace_id is not None:
            query = query.where(w.c.id == principal.bound_workspace_id)
        with db.reading(self.engine) as conn:
            return frozenset(conn.execute(query).scalars())

    def add_member(self, workspace_id: str, user_id: str, role: Role = "member") -> None:
        with db.writing(self.engine) as conn:
            insert_membership(conn, workspace_id, user_id, role, self.clock())

    def remove_member(self, workspace_id: str, user_id: str) -> None:
        with db.writing(self.engine) as conn:
            conn.execute(
                db.memberships.delete().where(
                    db.memberships.c.workspace_id == workspace_id,
                    db.memberships.c.user_id == user_id,
                )
            )

    # -- API tokens -----------------------------------------------------------------------

    def create_api_token(
        self,
        principal: Principal,
        visible: Collection[str],
        workspace_id: str,
        name: str,
        requested: Collection[str],
    ) -> tuple[str, dict[str, Any]]:
        """(plaintext token, description). The plaintext is not kept anywhere."""
        if workspace_id not in visible:
            raise NotFound(f"no workspace {workspace_id}")
        bad = scopes.unknown(requested)
        if bad:
            raise ValidationFailed(f"unknown scopes: {', '.join(bad)}")
        if not requested:
            raise ValidationFailed("a token needs at least one scope")
        # A token may hand out only what it holds, so tokens:write cannot escalate.
        beyond = scopes.effective(requested) - principal.scopes
        if beyond:
            raise Forbidden(f"cannot grant scopes the caller lacks: {', '.join(sorted(beyond))}")
        token = new_token(API_TOKEN_PREFIX)
        token_id = new_id("tok")
        with db.writing(self.engine) as conn:
            conn.execute(
                insert(db.api_tokens).values(
                    id=token_id,
                    workspace_id=workspace_id,
                    user_id=principal.user_id,
                    name=name,
                    scopes=sorted(set(requested)),
                    token_hash=hash_token(token),
                    created_at=self.clock(),
                )
            )
            row = conn.execute(select(db.api_tokens).where(db.api_tokens.c.id == token_id)).one()
        return token, public_token(row)

    def list_api_tokens(
        self, visible: Collection[str], workspace_id: str | None = None
    ) -> list[dict[str, Any]]:
        t = db.api_tokens
        if workspace_id is not None:
            if workspace_id not in visible:
                raise NotFound(f"no workspace {workspace_id}")
            wanted: Collection[str] = [workspace_id]
        else:
            wanted = list(visible)
        with db.reading(self.engine) as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.workspace_id.in_(wanted), t.c.revoked_at.is_(None))
                .order_by(t.c.created_at, t.c.id)
            ).all()
        return [public_token(row) for row in rows]

    def revoke_api_token(self, visible: Collection[str], token_id: str) -> None:
        t = db.api_tokens
        if not is_id(token_id, "tok"):
            raise NotFound(f"no token {token_id}")
        with db.writing(self.engine) as conn:
            result = conn.execute(
                update(t)
                .where(
                    t.c.id == token_id,
                    t.c.workspace_id.in_(list(visible)),
                    t.c.revoked_at.is_(None),
                )
                .values(revoked_at=self.clock())
            )
        if result.rowcount != 1:
            raise NotFound(f"no token {token_id}")

    # -- first start ----------------------------------------------------------------------

    def bootstrap(
        self, email: str | None = None, workspace_name: str = "Default"
    ) -> BootstrapResult | None:
        """On a control plane with no users, make an owner with a random password and a
        first workspace. Returns the credentials to show once, or None if users exist."""
        email = normalise_email(email or DEFAULT_OWNER_EMAIL)
        password = secrets.token_urlsafe(18)
        password_hash = self.passwords.hash(password)
        now = self.clock()
        user_id, workspace_id = new_id("usr"), new_id("ws")
        try:
            with db.writing(self.engine) as conn:
                if conn.execute(select(func.count()).select_from(db.users)).scalar():
                    return None
                conn.execute(
                    insert(db.users).values(
                        id=user_id,
                        email=email,
                        name="Owner",
                        password_hash=password_hash,
                        created_at=now,
                        updated_at=now,
                    )
                )
                conn.execute(
                    insert(db.workspaces).values(
                        id=workspace_id, name=workspace_name, created_at=now, updated_at=now
                    )
                )
                insert_membership(conn, workspace_id, user_id, "owner", now)
        except IntegrityError:  # another process bootstrapped at the same moment
            return None
        log.info("created the first owner account %s", email)
        return BootstrapResult(
            email=email, password=password, user_id=user_id, workspace_id=workspace_id
        )
