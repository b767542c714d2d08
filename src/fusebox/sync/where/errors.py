"""Errors: `WhereError` is the client's fault (a 400), `WhereEvalError` a runtime failure."""

from __future__ import annotations


class WhereError(ValueError):
    """A where clause or its params that cannot be accepted.

    `field` names the request parameter at fault ("where" or "params"), so the HTTP layer
    can answer `{"message": "Invalid request", "errors": {field: [message]}}` as Electric does.
    """

    def __init__(self, message: str, field: str = "where", location: int | None = None) -> None:
        if location is not None and field == "where":
            message = f"At location {location}: {message}"
        super().__init__(message)
        self.message = message
        self.field = field
        self.location = location

    def errors(self) -> dict[str, list[str]]:
        return {self.field: [self.message]}


class WhereEvalError(ArithmeticError):
    """Evaluating an accepted clause on one row failed, where Postgres would raise too.

    Examples: integer overflow, division by zero, a text column that does not cast to int4.
    Postgres would fail the whole snapshot query on such a row; callers on the replication
    path usually treat the row as not matching and log it.
    """
