"""Shape-scoped client tokens: what lets a browser read one shape without a proxy.

A client token is a JWT (HS256) signed with the service's secret, whose `shape` claim pins
the table, where clause, params and columns the bearer may request. The data-plane gateway
checks the signature with the service's secrets (so rotating the secret revokes old tokens
once the overlap window ends) and that the request asks for exactly the claimed shape.
The definition is validated here, when the token is minted, so a bad table name or a where
clause that does not parse is refused at once rather than at every request.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import pglast
from pglast.enums import SetOperation

from fusebox.cloud.errors import ValidationFailed
from fusebox.sync.shape import ShapeError, parse_identifiers, parse_table

ISSUER = "fusebox"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class ShapeClaim:
    table: str
    where: str | None = None
    params: dict[str, str] | None = None
    columns: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "where": self.where,
            "params": self.params,
            "columns": self.columns,
        }


def _check_where(where: str) -> None:
    # Parse as the body of a WHERE: anything that ends the clause early (a second statement,
    # a UNION, a LIMIT...) shows up as more than a lone SELECT with a where clause.
    try:
        statements = pglast.parse_sql(f"SELECT 1 WHERE {where}")
    except pglast.parser.ParseError as exc:
        raise ValidationFailed(f"where does not parse: {exc}") from None
    if len(statements) != 1:
        raise ValidationFailed("where must be one expression")
    select = statements[0].stmt
    extra = (
        "fromClause",
        "groupClause",
        "havingClause",
        "sortClause",
        "limitCount",
        "limitOffset",
        "windowClause",
        "withClause",
        "lockingClause",
        "distinctClause",
        "intoClause",
    )
    if type(select).__name__ != "SelectStmt" or any(getattr(select, f, None) for f in extra):
        raise ValidationFailed("where must be one expression")
    if select.op != SetOperation.SETOP_NONE:
        raise ValidationFailed("where must be one expression")


def _params(params: dict[str, str] | list[str] | None) -> dict[str, str] | None:
    if params is None:
        return None
    found = dict(enumerate(params, 1)) if isinstance(params, list) else params
    normalised = {str(key): value for key, value in found.items()}
    if not all(key.isdigit() for key in normalised):
        raise ValidationFailed("params keys must be positive integers: 1, 2, ...")
    numbers = sorted(int(key) for key in normalised)
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValidationFailed("params must be numbered from 1 with no gaps")
    return {str(n): normalised[str(n)] for n in numbers}


def validate_shape(
    table: str,
    where: str | None = None,
    params: dict[str, str] | list[str] | None = None,
    columns: Iterable[str] | None = None,
) -> ShapeClaim:
    """The shape claim, or ValidationFailed naming what is wrong with the definition."""
    try:
        parse_table(table)
        column_list = list(columns) if columns is not None else None
        if column_list is not None:
            if not column_list:
                raise ValidationFailed("columns, when given, must name at least one column")
            for column in column_list:
                parse_identifiers(column, "columns", ",")
    except ShapeError as exc:
        raise ValidationFailed(f"{exc.field}: {exc.message}") from None
    if where is not None:
        _check_where(where)
    normalised = _params(params)
    if normalised and where is None:
        raise ValidationFailed("params are given but there is no where clause to use them")
    return ShapeClaim(table=table, where=where, params=normalised, columns=column_list)


def mint(
    service_id: str, secret: str, claim: ShapeClaim, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    """(token, expires_at) for the shape, signed with the service's current secret."""
    expires_at = now + ttl
    payload = {
        "iss": ISSUER,
        "sub": service_id,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": secrets.token_urlsafe(12),
        "shape": claim.to_json(),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), expires_at.replace(microsecond=0)


def token_service_id(token: str) -> str | None:
    """The service a token claims to be for (unverified: only to find the keys to check)."""
    try:
        subject = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        return None
    return subject if isinstance(subject, str) else None


def verify(token: str, secrets_in_force: Iterable[str], now: datetime) -> dict[str, Any] | None:
    """The token's claims if one of the secrets signed it and it has not expired at `now`."""
    for secret in secrets_in_force:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                # Expiry is judged against the control plane's clock, below, not time.time().
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "sub"]},
            )
        except jwt.PyJWTError:
            continue
        if isinstance(claims.get("exp"), int) and now.timestamp() < claims["exp"]:
            return claims
        return None
    return None
