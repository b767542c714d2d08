"""The admin API as the CLI sees it: where to reach it, with which credential, and errors.

Settings come from flags, then the environment (`FUSEBOX_API_URL`, `FUSEBOX_API_TOKEN`,
`FUSEBOX_WORKSPACE_ID`), then the login stored by `fusebox auth login`. The stored session
is only ever sent to the server it came from. Every failure is a `CliError` carrying the
exit code scripts rely on (see `EXIT_CODES_HELP`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the API refused the request or it failed (the API's message is "
    "shown); 2 usage error (bad or missing options, or a confirmation that needs --force); "
    "3 not signed in, or the credential was rejected or lacks a scope (HTTP 401/403); "
    "4 not found (HTTP 404)."
)

DEFAULT_API_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
TIMEOUT_SECONDS = 30.0


class CliError(Exception):
    """A failure to report to the user: a message, what to do about it, and an exit code."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int = EXIT_ERROR,
        code: str = "error",
        hint: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code
        self.hint = hint
        self.status = status

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.status is not None:
            body["status"] = self.status
        return {"error": body, "exit_code": self.exit_code}


def usage_error(message: str, hint: str | None = None) -> CliError:
    return CliError(message, exit_code=EXIT_USAGE, code="usage_error", hint=hint)


# -- the stored login -------------------------------------------------------------------------


def config_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fusebox"


@dataclass(frozen=True)
class StoredLogin:
    api_url: str
    token: str
    email: str
    user_id: str


class LoginStore:
    """`auth.json` in the config directory, readable by its owner only (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None  # why an existing file could not be read

    def load(self) -> StoredLogin | None:
        """The stored login; None when there is none or it is unreadable (see `problem`),
        so that `auth login` can still rewrite it and --token still works."""
        try:
            data = json.loads(self.path.read_text())
            return StoredLogin(
                api_url=normalize_api_url(str(data["api_url"])),
                token=str(data["token"]),
                email=str(data.get("email", "")),
                user_id=str(data.get("user_id", "")),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, CliError) as exc:
            self.problem = f"{self.path} could not be read ({exc})"
            return None

    def save(self, login: StoredLogin) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written to a private temporary file and renamed, so the token is never readable
        # by others, not even for a moment, and a crash leaves the old file whole.
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".auth-", suffix=".json")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(asdict(login), file, indent=2)
                file.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def clear(self) -> bool:
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False


# -- settings ---------------------------------------------------------------------------------


def normalize_api_url(url: str) -> str:
    """`http://host:port`, without a trailing slash or the `/api/v1` suffix people paste."""
    url = url.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise usage_error(
            f"{url!r} is not an API URL",
            hint="Give the server's base URL, such as http://127.0.0.1:8080.",
        )
    return url


@dataclass(frozen=True)
class Settings:
    api_url: str
    api_url_source: str
    token: str | None
    token_source: str | None  # "--token", "FUSEBOX_API_TOKEN" or "stored login"
    workspace_id: str | None
    store: LoginStore
    stored: StoredLogin | None


def resolve_settings(
    api_url: str | None, token: str | None, environ: Mapping[str, str]
) -> Settings:
    """Flags, then environment variables, then the stored login."""
    store = LoginStore(config_dir(environ) / "auth.json")
    stored = store.load()
    url, url_source = next(
        (normalize_api_url(value), source)
        for value, source in (
            (api_url, "--api-url"),
            (environ.get("FUSEBOX_API_URL"), "FUSEBOX_API_URL"),
            (stored.api_url if stored else None, "stored login"),
            (DEFAULT_API_URL, "default"),
        )
        if value
    )
    credential, credential_source = None, None
    if token:
        credential, credential_source = token, "--token"
    elif environ.get("FUSEBOX_API_TOKEN"):
        credential, credential_source = environ["FUSEBOX_API_TOKEN"], "FUSEBOX_API_TOKEN"
    elif stored is not None and stored.api_url == url:
        # Never send a session to a server other than the one that issued it.
        credential, credential_source = stored.token, "stored login"
    return Settings(
        api_url=url,
        api_url_source=url_source,
        token=credential,
        token_source=credential_source,
        workspace_id=environ.get("FUSEBOX_WORKSPACE_ID") or None,
        store=store,
        stored=stored,
    )


# -- HTTP -------------------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("fusebox")
    except metadata.PackageNotFoundError:
        return "dev"


class ApiClient:
    """JSON in, JSON out; every failure becomes a `CliError` with the API's own message."""

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        *,
        token_source: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url
        self.token_source = token_source
        headers = {"user-agent": f"fusebox-cli/{_version()}", "accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=api_url + API_PREFIX,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=body)
        except httpx.TimeoutException:
            raise CliError(
                f"{self.api_url} did not answer within {TIMEOUT_SECONDS:g} s",
                code="timeout",
                hint="The server may be overloaded; try again.",
            ) from None
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach {self.api_url}: {exc}",
                code="unreachable",
                hint="Is `fusebox serve` running there? Point the CLI at it with --api-url "
                "or FUSEBOX_API_URL.",
            ) from None
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and data is not None:
            return data
        raise self._failure(response, data)

    def _failure(self, response: httpx.Response, data: Any) -> CliError:
        status = response.status_code
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict) or "message" not in error:
            snippet = response.text[:200].strip() or response.reason_phrase
            return CliError(
                f"unexpected answer from {self.api_url} (HTTP {status}): {snippet}",
                code="bad_response",
                status=status,
                hint="Check that --api-url points at a Fusebox server.",
            )
        code, message = str(error.get("code", "error")), str(error["message"])
        if status == 401:
            return CliError(
                message, exit_code=EXIT_AUTH, code=code, status=status, hint=self._hint_401()
            )
        if status == 403:
            return CliError(
                message,
                exit_code=EXIT_AUTH,
                code=code,
                status=status,
                hint="Use an API token that has this scope, or a signed-in session "
                "(`fusebox auth login`).",
            )
        if status == 404:
            return CliError(message, exit_code=EXIT_NOT_FOUND, code=code, status=status)
        return CliError(message, code=code, status=status)

    def _hint_401(self) -> str:
        if self.token_source == "stored login":
            return "Your session has ended or was revoked: sign in with `fusebox auth login`."
        if self.token_source in ("--token", "FUSEBOX_API_TOKEN"):
            return (
                f"The token from {self.token_source} was refused: it may be revoked or "
                "mistyped. Make a new one with `fusebox auth token create`."
            )
        return "Check the email and password."
