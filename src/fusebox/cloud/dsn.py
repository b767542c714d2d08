"""Postgres connection strings: which ones a source accepts, and how they are shown.

Only the URI form (`postgres://` or `postgresql://`) is accepted: it is what Electric Cloud
asks for, and it has one place for a password (plus the `password` query parameter), so the
masked form shown back to users can be trusted to hide it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "****"
_SCHEMES = ("postgres", "postgresql")
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


class InvalidDatabaseUrl(ValueError):
    pass


def validate_database_url(url: str) -> str:
    """`url` if it is a usable Postgres URI, else InvalidDatabaseUrl saying what is wrong."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidDatabaseUrl("the connection string contains control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidDatabaseUrl(f"the connection string does not parse: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise InvalidDatabaseUrl(
            "the connection string must start with postgresql:// (or postgres://)"
        )
    if not parts.hostname:
        raise InvalidDatabaseUrl("the connection string names no host")
    return url


def mask_database_url(url: str) -> str:
    """The connection string with its password (in the user info or the query) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostinfo}" if has_password else f"{user}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key in _SECRET_PARAMS for key, _ in pairs):
            masked = [(key, MASK if key in _SECRET_PARAMS else value) for key, value in pairs]
            query = urlencode(masked, safe="*", quote_via=quote)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def database_password(url: str) -> str | None:
    """The password in the connection string, so messages can be scrubbed of it."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password" and value:
            return value
    return None


def scrub(message: str, url: str) -> str:
    """`message` with any appearance of the connection string's password masked."""
    password = database_password(url)
    if password:
        message = message.replace(password, MASK)
        message = message.replace(quote(password, safe=""), MASK)
    return message
