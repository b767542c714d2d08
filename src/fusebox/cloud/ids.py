"""Prefixed resource IDs: `usr_`, `ws_`, `proj_`, `env_`, `svc_`, `tok_` + 20 base32 characters.

The prefix makes an ID readable in logs and lets a lookup reject an ID of the wrong kind
before touching the database. 20 base32 characters carry 100 random bits.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal

Kind = Literal["usr", "ws", "proj", "env", "svc", "tok", "ses"]

# Lower-case RFC 4648 base32: no 0/1/8/9, so no O/0 or l/1 confusion when read aloud.
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
RANDOM_LENGTH = 20

_SHAPE = re.compile(rf"^(usr|ws|proj|env|svc|tok|ses)_[{ALPHABET}]{{{RANDOM_LENGTH}}}$")


def new_id(kind: Kind) -> str:
    """A fresh random ID of the given kind."""
    return f"{kind}_" + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))


def is_id(value: str, kind: Kind) -> bool:
    """Whether `value` is shaped like an ID of `kind` (says nothing about whether it exists)."""
    match = _SHAPE.match(value)
    return match is not None and match.group(1) == kind
