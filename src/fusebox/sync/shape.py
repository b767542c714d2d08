"""Shape definitions: what a client asks to sync, parsed and validated.

A shape is a table, optionally narrowed by a where clause (with `$n` params) and to some
columns, in a replica mode (`default` sends changed columns, `full` whole rows) and a log
mode (`changes_only` skips the initial snapshot). Two requests with equal definitions
share one shape and one log.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import orjson


class ShapeError(ValueError):
    """A bad shape parameter; `field` names it in Electric's error shape."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ShapeDefinition:
    schema: str
    table: str
    where: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    # Sorted; None means every column.
    columns: tuple[str, ...] | None = None
    replica: str = "default"
    log_mode: str = "full"

    def fingerprint(self) -> str:
        """A stable digest of the definition, used in handles and to find equal shapes."""
        encoded = orjson.dumps(
            [
                self.schema,
                self.table,
                self.where,
                self.params,
                self.columns,
                self.replica,
                self.log_mode,
            ]
        )
        return hashlib.blake2b(encoded, digest_size=8).hexdigest()

    def to_json(self) -> dict:
        return {
            "schema": self.schema,
            "table": self.table,
            "where": self.where,
            "params": [list(p) for p in self.params],
            "columns": list(self.columns) if self.columns is not None else None,
            "replica": self.replica,
            "log": self.log_mode,
        }

    @classmethod
    def from_json(cls, data: dict) -> ShapeDefinition:
        return cls(
            data["schema"],
            data["table"],
            data["where"],
            tuple((k, v) for k, v in data["params"]),
            tuple(data["columns"]) if data["columns"] is not None else None,
            data["replica"],
            data["log"],
        )


_IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def parse_identifiers(text: str, field: str, separator: str) -> list[str]:
    """Split `a, "B c", d` (or `schema.table`): quoted names keep case, bare ones fold."""
    names = []
    position = 0
    text = text.strip()
    while True:
        while position < len(text) and text[position] == " ":
            position += 1
        match = _IDENTIFIER.match(text, position)
        if match is None:
            raise ShapeError(field, f"Invalid identifier list: {text!r}")
        quoted, bare = match.groups()
        names.append(quoted.replace('""', '"') if quoted is not None else bare.lower())
        position = match.end()
        while position < len(text) and text[position] == " ":
            position += 1
        if position == len(text):
            return names
        if text[position] != separator:
            raise ShapeError(field, f"Invalid identifier list: {text!r}")
        position += 1


def parse_table(text: str | None) -> tuple[str, str]:
    if not text:
        raise ShapeError("table", "table can't be blank")
    parts = parse_identifiers(text, "table", ".")
    if len(parts) == 1:
        return "public", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ShapeError("table", f"Invalid table name: {text!r}")


def parse_params(query: dict[str, list[str]]) -> tuple[tuple[str, str], ...]:
    """`params[1]=a&params[2]=b` (or `params={"1":"a"}`); keys must run 1..n."""
    found: dict[str, str] = {}
    for key, values in query.items():
        if key.startswith("params[") and key.endswith("]"):
            found[key[7:-1]] = values[-1]
    if "params" in query:
        try:
            parsed = orjson.loads(query["params"][-1])
        except orjson.JSONDecodeError:
            raise ShapeError("params", "params must be an object of $n values") from None
        if not isinstance(parsed, dict | list):
            raise ShapeError("params", "params must be an object of $n values")
        items = parsed.items() if isinstance(parsed, dict) else enumerate(parsed, 1)
        for key, value in items:
            found[str(key)] = value if isinstance(value, str) else orjson.dumps(value).decode()
    if not found:
        return ()
    if not all(key.isdigit() for key in found):
        raise ShapeError("params", "params keys must be positive integers: params[1], params[2]")
    numbers = sorted(int(key) for key in found)
    if numbers != list(range(1, len(numbers) + 1)):
        raise ShapeError("params", "params must be numbered from 1 with no gaps")
    return tuple((str(n), found[str(n)]) for n in numbers)


def choice(query: dict[str, list[str]], name: str, allowed: tuple[str, ...]) -> str:
    values = query.get(name)
    if not values:
        return allowed[0]
    value = values[-1]
    if value not in allowed:
        raise ShapeError(name, f"{name} must be one of {', '.join(allowed)}")
    return value
