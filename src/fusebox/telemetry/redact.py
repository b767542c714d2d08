"""Keep secrets out of every log line.

A filter on the root handlers rewrites `secret=…`, `api_secret=…`, `token=…`,
`password=…` (in query strings, key=value text and JSON) and `Bearer …` credentials
before any handler formats the record, whatever module logged it.
"""

from __future__ import annotations

import logging
import re

_NAMES = r"(?:api_secret|secret|token|access_token|api_key|password)"
_PATTERNS = [
    # query strings and key=value text: secret=abc&...
    (re.compile(rf"(?i)\b({_NAMES})=([^&\s\"',;]+)"), r"\1=[REDACTED]"),
    # JSON: "secret": "abc"
    (re.compile(rf'(?i)("{_NAMES}"\s*:\s*)"[^"]*"'), r'\1"[REDACTED]"'),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
    # passwords inside connection strings: postgresql://user:pass@host
    (re.compile(r"(?i)(\w+://[^:/@\s]+:)[^@\s]+@"), r"\1[REDACTED]@"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    """Add the filter to every root handler (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
