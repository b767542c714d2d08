"""Secrets at rest and the hashing of credentials.

- Service secrets and connection strings are encrypted with AES-256-GCM under the master key.
  A ciphertext reads `fbx1.<key id>.<base64url(nonce | ciphertext | tag)>`: the key id lets a
  later key rotation decrypt old values with the old key while new ones use the new key. The
  row's identity (for example `service_secret:svc_...`) is bound as associated data, so a
  ciphertext copied into another row does not decrypt.
- API tokens and session tokens are stored only as SHA-256 hashes: they are long random
  values, so a fast hash is enough and a lookup by hash stays cheap on every request.
- Passwords are hashed with argon2id (argon2-cffi), slow on purpose.
- Every comparison of a secret or a hash uses `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fusebox.cloud.errors import ConfigError

log = logging.getLogger("fusebox.cloud")

MASTER_KEY_ENV = "FUSEBOX_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
_FORMAT = "fbx1"
_NONCE_BYTES = 12


def key_id(key: bytes) -> str:
    """A short, stable name for a key (not secret: a hash prefix, not the key)."""
    return hashlib.sha256(b"fusebox-key-id:" + key).hexdigest()[:12]


class Keyring:
    """Encrypts with the primary key; decrypts with whichever key a ciphertext names."""

    def __init__(self, primary: bytes, others: tuple[bytes, ...] = ()) -> None:
        for key in (primary, *others):
            if len(key) != 32:
                raise ConfigError("master keys are 32 bytes (AES-256)")
        self.primary_id = key_id(primary)
        self._keys = {key_id(key): AESGCM(key) for key in (*others, primary)}

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.primary_id].encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_FORMAT}.{self.primary_id}.{body}"

    def decrypt(self, ciphertext: str, context: str) -> str:
        try:
            version, kid, body = ciphertext.split(".", 2)
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, binascii.Error) as exc:
            raise ValueError("not a Fusebox ciphertext") from exc
        if version != _FORMAT:
            raise ValueError(f"unknown ciphertext format {version!r}")
        aead = self._keys.get(kid)
        if aead is None:
            raise ValueError(f"ciphertext was sealed with unknown key {kid}")
        try:
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag as exc:
            raise ValueError("ciphertext does not decrypt (wrong key or wrong row)") from exc


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"{origin}: not base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{origin}: must decode to 32 bytes, got {len(key)}")
    return key


def load_master_key(data_dir: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The master key from FUSEBOX_MASTER_KEY, else `<data_dir>/master.key` (made if missing).

    The file is created with O_EXCL and mode 0600 in one step, so it is never readable by
    others, and two processes starting together agree on one key.
    """
    environ = os.environ if environ is None else environ
    configured = environ.get(MASTER_KEY_ENV)
    if configured:
        return _decode_key(configured, MASTER_KEY_ENV)
    path = Path(data_dir) / MASTER_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode)
        return _decode_key(path.read_text(), str(path))
    with os.fdopen(fd, "w") as file:
        file.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        file.flush()
        os.fsync(file.fileno())
    return _decode_key(path.read_text(), str(path))


# -- tokens ---------------------------------------------------------------------------------

API_TOKEN_PREFIX = "fbx_"
SESSION_TOKEN_PREFIX = "fbxs_"
SERVICE_SECRET_PREFIX = "fbss_"


def new_token(prefix: str) -> str:
    """A fresh bearer credential: prefix (for secret scanners and dispatch) + 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(_utf8(token)).hexdigest()


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate in input must fail a comparison, not raise.
    return text.encode("utf-8", "surrogatepass")


def same_secret(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time equality for secrets, whatever their type."""
    return hmac.compare_digest(
        _utf8(a) if isinstance(a, str) else a, _utf8(b) if isinstance(b, str) else b
    )


# -- passwords ------------------------------------------------------------------------------


class Passwords:
    """argon2id hashing; `verify` also says whether the stored hash should be upgraded."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Verified against when an email is unknown, so a miss costs as much as a hit and
        # timing does not reveal which emails have accounts.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(_utf8(password))

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            matched = self._hasher.verify(stored or self._dummy, _utf8(password))
            return matched and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
