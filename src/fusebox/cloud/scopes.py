"""API token scopes (docs/admin-api.md): what each allows, and `write implies read`."""

from __future__ import annotations

from collections.abc import Iterable

SCOPES: tuple[str, ...] = (
    "projects:read",
    "projects:write",
    "environments:read",
    "environments:write",
    "services:read",
    "services:write",
    "services:secrets",
    "tokens:read",
    "tokens:write",
    "members:read",
    "members:write",
)
ALL_SCOPES: frozenset[str] = frozenset(SCOPES)


def effective(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes granted, with `<resource>:read` added for every `<resource>:write`."""
    granted = set(scopes)
    for scope in list(granted):
        resource, _, action = scope.partition(":")
        if action == "write":
            granted.add(f"{resource}:read")
    return frozenset(granted & ALL_SCOPES)


def unknown(scopes: Iterable[str]) -> list[str]:
    return sorted(set(scopes) - ALL_SCOPES)
