"""Subscriptions as held in memory and on disk: configuration, stream links and wakes.

Cursors are byte positions, like offsets: a link's `acked` is where the subscriber's
next read starts, so the link has pending work while the stream's tail is past it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

DEFAULT_LEASE_MS = 30_000
MIN_LEASE_MS = 1_000
MAX_LEASE_MS = 600_000
WEBHOOK = "webhook"
PULL_WAKE = "pull-wake"


class SubscriptionError(Exception):
    """A refused subscription request; becomes `{"error": {"code", "message", ...}}`."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def invalid(message: str) -> SubscriptionError:
    return SubscriptionError(400, "INVALID_REQUEST", message)


def stream_path(value: object, what: str) -> str:
    """A stream-root-relative path as clients may write it (slashes around are dropped)."""
    if not isinstance(value, str) or not value.strip("/"):
        raise invalid(f"{what} must be a non-empty stream path")
    path = value.strip("/")
    if path == "__ds" or path.startswith("__ds/"):
        raise invalid(f"{what} must not be under the reserved __ds/ prefix")
    return path


@dataclass(frozen=True, slots=True)
class Config:
    """What a client chose; re-PUTting an equal one re-confirms, another one conflicts."""

    type: str
    pattern: str | None
    streams: tuple[str, ...]
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    @classmethod
    def parse(cls, body: object) -> Config:
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object")
        kind = body.get("type")
        if kind not in (WEBHOOK, PULL_WAKE):
            raise invalid('type must be "webhook" or "pull-wake"')
        pattern = body.get("pattern")
        if pattern is not None:
            pattern = stream_path(pattern, "pattern")
        streams = body.get("streams") or []
        if not isinstance(streams, list):
            raise invalid("streams must be an array of stream paths")
        explicit = tuple(sorted({stream_path(s, "each of streams") for s in streams}))
        if pattern is None and not explicit:
            raise invalid("give a pattern, streams, or both")
        lease = body.get("lease_ttl_ms", DEFAULT_LEASE_MS)
        if (
            not isinstance(lease, int)
            or isinstance(lease, bool)
            or not MIN_LEASE_MS <= lease <= MAX_LEASE_MS
        ):
            raise invalid(f"lease_ttl_ms must be an integer from {MIN_LEASE_MS} to {MAX_LEASE_MS}")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid("description must be a string")
        webhook_url = wake_stream = None
        if kind == WEBHOOK:
            webhook = body.get("webhook")
            url = webhook.get("url") if isinstance(webhook, dict) else None
            if not isinstance(url, str) or not url:
                raise invalid("webhook subscriptions need webhook.url")
            webhook_url = url
        else:
            wake_stream = stream_path(body.get("wake_stream"), "wake_stream")
        return cls(kind, pattern, explicit, webhook_url, wake_stream, lease, description)

    def digest(self) -> str:
        canonical = {
            "type": self.type,
            "pattern": self.pattern,
            "streams": list(self.streams),
            "webhook": self.webhook_url,
            "wake_stream": self.wake_stream,
            "lease_ttl_ms": self.lease_ttl_ms,
            "description": self.description,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def compile_glob(pattern: str) -> re.Pattern[str]:
    """`*` is one whole path segment, `**` zero or more; anything else is literal.

    The regex is matched against the path with a trailing slash, so every segment,
    the last included, ends in one.
    """
    regex = []
    for segment in pattern.split("/"):
        if segment == "**":
            regex.append("(?:[^/]+/)*")
        elif segment == "*":
            regex.append("[^/]+/")
        elif segment:
            regex.append(re.escape(segment) + "/")
    return re.compile("".join(regex))


@dataclass(slots=True)
class Link:
    explicit: bool
    glob: bool
    acked: int
    # The engine's id for the stream the cursor was taken on: a path deleted and
    # created again is another stream, and the old cursor means nothing in it.
    stream_id: int | None


@dataclass(slots=True)
class Wake:
    id: str
    generation: int
    # Tail positions when the wake was last delivered: what `{"done": true}` acks.
    snapshot: dict[str, int] = field(default_factory=dict)
    holder: str | None = None
    # Wall-clock expiry, so a restarted server honours leases granted before it stopped.
    lease_until: float | None = None
    # Webhook: a delivery got a 2xx. Pull-wake: the wake event is in the wake stream.
    sent: bool = False


@dataclass(slots=True)
class Subscription:
    id: str
    config: Config
    digest: str
    created: float
    # The scheme and host clients reached us by; webhook callback URLs are built on it.
    base_url: str
    links: dict[str, Link] = field(default_factory=dict)
    generation: int = 0
    wake: Wake | None = None
    status: str = "active"
    attempts: int = 0
    next_attempt_at: float | None = None
    glob: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if self.config.pattern is not None:
            self.glob = compile_glob(self.config.pattern)

    def matches(self, path: str) -> bool:
        return self.glob is not None and self.glob.fullmatch(path + "/") is not None

    @property
    def created_at(self) -> str:
        moment = datetime.fromtimestamp(self.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # -- persistence --------------------------------------------------------------------

    def to_json(self) -> dict:
        config = self.config
        wake = self.wake
        return {
            "id": self.id,
            "type": config.type,
            "pattern": config.pattern,
            "streams": list(config.streams),
            "webhook_url": config.webhook_url,
            "wake_stream": config.wake_stream,
            "lease_ttl_ms": config.lease_ttl_ms,
            "description": config.description,
            "digest": self.digest,
            "created": self.created,
            "base_url": self.base_url,
            # Links are many, so each is a compact list in Link's field order.
            "links": {
                path: [link.explicit, link.glob, link.acked, link.stream_id]
                for path, link in self.links.items()
            },
            "generation": self.generation,
            "wake": None
            if wake is None
            else {
                "id": wake.id,
                "generation": wake.generation,
                "snapshot": wake.snapshot,
                "holder": wake.holder,
                "lease_until": wake.lease_until,
                "sent": wake.sent,
            },
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
        }

    @classmethod
    def from_json(cls, entry: dict) -> Subscription:
        config = Config(
            entry["type"],
            entry["pattern"],
            tuple(entry["streams"]),
            entry["webhook_url"],
            entry["wake_stream"],
            entry["lease_ttl_ms"],
            entry["description"],
        )
        wake = entry["wake"]
        return cls(
            entry["id"],
            config,
            entry["digest"],
            entry["created"],
            entry["base_url"],
            links={path: Link(*values) for path, values in entry["links"].items()},
            generation=entry["generation"],
            wake=None if wake is None else Wake(**wake),
            status=entry["status"],
            attempts=entry["attempts"],
            next_attempt_at=entry["next_attempt_at"],
        )
