"""Who belongs to a workspace, and with which role.

- `owner`: everything, including making and unmaking owners;
- `admin`: everything a member can, and managing members other than owners;
- `member`: the workspace's resources, within the caller's scopes.

A workspace always keeps at least one owner: the last one can be neither demoted nor
removed. Anyone may leave a workspace (remove themselves), the last owner excepted. As
everywhere in the admin API, a workspace the caller cannot see is 404, never 403.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, get_args

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fusebox.cloud import db
from fusebox.cloud.accounts import Accounts, Principal, insert_membership, normalise_email
from fusebox.cloud.clock import Clock, rfc3339, utcnow
from fusebox.cloud.errors import Conflict, Forbidden, NotFound, ValidationFailed

MemberRole = Literal["owner", "admin", "member"]
ROLES: tuple[str, ...] = get_args(MemberRole)
_MANAGERS = frozenset({"owner", "admin"})


def _member(row: Any) -> dict[str, Any]:
    return {
        "workspace_id": row.workspace_id,
        "role": row.role,
        "user": {
            "id": row.user_id,
            "email": row.email,
            "name": row.name,
            "created_at": rfc3339(row.user_created_at),
        },
        "created_at": rfc3339(row.created_at),
    }


class Members:
    def __init__(self, engine: Engine, accounts: Accounts, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.accounts = accounts
        self.clock = clock

    def list(self, visible: Collection[str], workspace_id: str) -> list[dict[str, Any]]:
        self._visible(visible, workspace_id)
        with db.reading(self.engine) as conn:
            return [_member(row) for row in self._rows(conn, workspace_id)]

    def add(
        self,
        principal: Principal,
        visible: Collection[str],
        workspace_id: str,
        email: str,
        role: MemberRole,
        password: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Add the user with `email`; with `password`, create the account if there is none."""
        self._visible(visible, workspace_id)
        email = normalise_email(email)
        with db.reading(self.engine) as conn:
            self._check_may_grant(conn, principal, workspace_id, role)
            user_id = conn.execute(
                select(db.users.c.id).where(
                    db.users.c.email == email, db.users.c.deleted_at.is_(None)
                )
            ).scalar()
        if user_id is None:
            if password is None:
                raise ValidationFailed(
                    f"no user has the email {email}: give a password to create the account"
                )
            user_id = self.accounts.create_user(email, password, name)["id"]
        elif password is not None:
            # Never let one workspace's admin reset the password of an existing account.
            raise Conflict(f"a user with email {email} exists: add them without a password")
        try:
            with db.writing(self.engine) as conn:
                insert_membership(conn, workspace_id, user_id, role, self.clock())  # type: ignore[arg-type]
                return _member(self._rows(conn, workspace_id, user_id)[0])
        except IntegrityError:
            raise Conflict(f"{email} is already a member of {workspace_id}") from None

    def set_role(
        self,
        principal: Principal,
        visible: Collection[str],
        workspace_id: str,
        user_id: str,
        role: MemberRole,
    ) -> dict[str, Any]:
        self._visible(visible, workspace_id)
        m = db.memberships
        with db.writing(self.engine) as conn:
            current = self._member_role(conn, workspace_id, user_id)
            self._check_may_grant(conn, principal, workspace_id, role)
            if current == "owner":
                self._check_may_grant(conn, principal, workspace_id, current)
                if role != "owner":
                    self._keep_an_owner(conn, workspace_id)
            conn.execute(
                update(m)
                .where(m.c.workspace_id == workspace_id, m.c.user_id == user_id)
                .values(role=role)
            )
            return _member(self._rows(conn, workspace_id, user_id)[0])

    def remove(
        self, principal: Principal, visible: Collection[str], workspace_id: str, user_id: str
    ) -> None:
        self._visible(visible, workspace_id)
        m = db.memberships
        with db.writing(self.engine) as conn:
            current = self._member_role(conn, workspace_id, user_id)
            if user_id != principal.user_id:  # leaving needs no right; removing others does
                self._check_may_grant(conn, principal, workspace_id, current)
            if current == "owner":
                self._keep_an_owner(conn, workspace_id)
            conn.execute(m.delete().where(m.c.workspace_id == workspace_id, m.c.user_id == user_id))

    # -- rules ------------------------------------------------------------------------------

    def _check_may_grant(
        self, conn: Connection, principal: Principal, workspace_id: str, role: str
    ) -> None:
        """The caller may hand out (or take away) `role` in this workspace."""
        mine = self._role_of(conn, workspace_id, principal.user_id)
        if mine not in _MANAGERS:
            raise Forbidden("only the workspace's owners and admins manage its members")
        if role == "owner" and mine != "owner":
            raise Forbidden("only an owner can make or unmake owners")

    def _keep_an_owner(self, conn: Connection, workspace_id: str) -> None:
        m = db.memberships
        owners = conn.execute(
            select(func.count())
            .select_from(m)
            .where(m.c.workspace_id == workspace_id, m.c.role == "owner")
        ).scalar_one()
        if owners <= 1:
            raise Conflict("a workspace keeps at least one owner: make another owner first")

    # -- lookups ----------------------------------------------------------------------------

    @staticmethod
    def _visible(visible: Collection[str], workspace_id: str) -> None:
        if workspace_id not in visible:
            raise NotFound(f"no workspace {workspace_id}")

    def _member_role(self, conn: Connection, workspace_id: str, user_id: str) -> str:
        role = self._role_of(conn, workspace_id, user_id)
        if role is None:
            raise NotFound(f"{user_id} is not a member of {workspace_id}")
        return role

    @staticmethod
    def _role_of(conn: Connection, workspace_id: str, user_id: str) -> str | None:
        m = db.memberships
        return conn.execute(
            select(m.c.role).where(m.c.workspace_id == workspace_id, m.c.user_id == user_id)
        ).scalar()

    @staticmethod
    def _rows(conn: Connection, workspace_id: str, user_id: str | None = None) -> list[Any]:
        m, u = db.memberships, db.users
        query = (
            select(
                m.c.workspace_id,
                m.c.role,
                m.c.created_at,
                u.c.id.label("user_id"),
                u.c.email,
                u.c.name,
                u.c.created_at.label("user_created_at"),
            )
            .join(u, u.c.id == m.c.user_id)
            .where(m.c.workspace_id == workspace_id, u.c.deleted_at.is_(None))
            .order_by(m.c.created_at, u.c.email)
        )
        if user_id is not None:
            query = query.where(m.c.user_id == user_id)
        return list(conn.execute(query).all())
