"""Webhook trust: the signing key and its JWKS, callback tokens, and URL vetting.

One Ed25519 key signs every webhook delivery. It lives in the data directory so that
receivers keep verifying after a restart, and the callback-token key is derived from it
so that tokens handed out before a restart stay checkable (fencing then decides whether
they are still current) without a second secret on disk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fusebox.streams.subscription_store import write_atomically

# Fencing retires a token when its wake ends; expiry only bounds a leaked token should a
# wake be kept alive by heartbeats. A worker holding one wake for a day must re-claim.
TOKEN_LIFETIME = 24 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SigningKey:
    """The server's webhook signing key, its public JWK, and the token key derived from it."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        x = b64url(
            private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )
        # RFC 7638 thumbprint: members in lexicographic order, no whitespace. Deriving
        # the kid from the key keeps it stable for the key's lifetime, as the spec asks.
        thumbprint = orjson.dumps({"crv": "Ed25519", "kty": "OKP", "x": x})
        self.kid = "ds_" + b64url(hashlib.sha256(thumbprint).digest())
        self.jwk = {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
            "x": x,
        }
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._token_key = hmac.new(raw, b"fusebox subscription tokens v1", "sha256").digest()

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(private)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, pem)
        return cls(private)

    def jwks(self) -> dict:
        return {"keys": [dict(self.jwk)]}

    def signature_header(self, body: bytes, now: float | None = None) -> str:
        """`Webhook-Signature` for `body`: an Ed25519 signature over `<t>.<body>`."""
        timestamp = int(time.time() if now is None else now)
        signature = self._private.sign(b"%d." % timestamp + body)
        return f"t={timestamp},kid={self.kid},ed25519={b64url(signature)}"

    # -- callback and claim tokens ------------------------------------------------------

    def mint_token(self, subscription_id: str, generation: int, wake_id: str) -> str:
        payload = {
            "sub": subscription_id,
            "gen": generation,
            "wake": wake_id,
            "exp": int(time.time()) + TOKEN_LIFETIME,
        }
        body = b64url(orjson.dumps(payload))
        return f"{body}.{self._mac(body)}"

    def read_token(self, token: str, subscription_id: str) -> tuple[int, str]:
        """The (generation, wake_id) a token was issued for; TokenError if it is not ours."""
        body, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(body)):
            raise TokenError("TOKEN_INVALID", "the bearer token is not valid")
        try:
            payload = orjson.loads(_b64url_decode(body))
            generation, wake_id = payload["gen"], payload["wake"]
            subject, expires = payload["sub"], payload["exp"]
        except (ValueError, KeyError, TypeError):
            raise TokenError("TOKEN_INVALID", "the bearer token is not valid") from None
        if subject != subscription_id:
            raise TokenError("TOKEN_INVALID", "the bearer token is for another subscription")
        if time.time() > expires:
            raise TokenError("TOKEN_EXPIRED", "the bearer token has expired")
        return generation, wake_id

    def _mac(self, body: str) -> str:
        return b64url(hmac.new(self._token_key, body.encode("ascii"), "sha256").digest())


# -- URL vetting (SSRF) -------------------------------------------------------------------

_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


_NOT_PUBLIC = "webhook.url must not target private, loopback or link-local addresses"


def webhook_url_problem(url: str, *, allow_loopback: bool = True) -> str | None:
    """Why `url` may not receive webhooks, or None when it may.

    https to a public host is accepted; plain http only to this machine (localhost,
    127.0.0.0/8, ::1), the development exception the spec allows, unless `allow_loopback`
    is False. IP literals in private, link-local, loopback or otherwise non-global ranges
    are refused. Host names are judged by name only: one that resolves to a private
    address is caught at delivery, by `PublicAddressesOnly`, not here.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return "webhook.url is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return "webhook.url must be an https URL"
    if parts.username is not None or parts.password is not None:
        return "webhook.url must not carry credentials"
    host = host.lower().rstrip(".")
    if _is_local_development(host):
        return None if allow_loopback else _NOT_PUBLIC
    if scheme != "https":
        if not allow_loopback:
            return "webhook.url must be an https URL"
        return "http webhook URLs are only allowed for localhost and 127.0.0.x; use https"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not _is_public(address):
            return _NOT_PUBLIC
        return None
    if host.endswith(_INTERNAL_SUFFIXES) or "." not in host:
        return "webhook.url must name a public host"
    return None


def _is_local_development(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


# -- where a webhook may go: the policy a server is given ---------------------------------


class WebhookRefused(Exception):
    """The webhook's host may not be called (now): it resolves to a non-public address."""


@dataclass(frozen=True)
class WebhookTarget:
    """How to send one delivery: the URL to connect to, and what to add to the request."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


class WebhookPolicy(Protocol):
    """Which webhook URLs a server accepts, and where a delivery really connects."""

    def url_problem(self, url: str) -> str | None:
        """Why a subscription may not use `url` (a 400 at creation), or None."""
        ...

    async def target(self, url: str) -> WebhookTarget:
        """Where to deliver to `url` now; WebhookRefused if nowhere."""
        ...


class LocalDevelopmentAllowed:
    """The standalone server's default: https to public hosts, http to this machine (the
    conformance suite's receivers listen on localhost). Names are not resolved here."""

    def url_problem(self, url: str) -> str | None:
        return webhook_url_problem(url)

    async def target(self, url: str) -> WebhookTarget:
        return WebhookTarget(url)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to now (the system resolver, as a connection uses)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class PublicAddressesOnly:
    """For servers whose subscribers are not trusted with the server's network (a
    multi-tenant platform): https only, and only to public addresses.

    A name is resolved at each delivery and refused if any address it gives is not public;
    the delivery then connects to the address that was checked (with the name kept for the
    Host header and TLS), so a second lookup cannot swap in a private one (DNS rebinding).
    """

    def __init__(self, resolve: Resolver = resolve_host) -> None:
        self._resolve = resolve

    def url_problem(self, url: str) -> str | None:
        return webhook_url_problem(url, allow_loopback=False)

    async def target(self, url: str) -> WebhookTarget:
        problem = self.url_problem(url)
        if problem is not None:
            raise WebhookRefused(problem)
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        try:
            literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                host
            )
        except ValueError:
            literal = None
        if literal is not None:
            return WebhookTarget(url)  # judged by url_problem already; nothing to resolve
        try:
            found = await self._resolve(host, parts.port or 443)
            addresses = [ipaddress.ip_address(text.partition("%")[0]) for text in found]
        except (OSError, ValueError) as exc:
            raise WebhookRefused(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise WebhookRefused(f"{host} resolves to no address")
        if not all(_is_public(address) for address in addresses):
            raise WebhookRefused(f"{host} resolves to a private, loopback or link-local address")
        chosen = addresses[0]
        netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
        if parts.port is not None:
            netloc += f":{parts.port}"
        return WebhookTarget(
            urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
            headers={"host": parts.netloc},
            extensions={"sni_hostname": host},
        )
