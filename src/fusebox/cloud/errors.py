"""Domain errors of the control plane, each carrying the admin API's error code and status.

The service layer raises these; the API turns them into `{"error": {"code", "message"}}`.
"""

from __future__ import annotations


class CloudError(Exception):
    code = "bad_request"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CloudError):
    code = "bad_request"
    status = 400


class Unauthorized(CloudError):
    code = "unauthorized"
    status = 401


class Forbidden(CloudError):
    code = "forbidden"
    status = 403


class NotFound(CloudError):
    """Also used for resources that exist in a workspace the caller cannot see."""

    code = "not_found"
    status = 404


class Conflict(CloudError):
    code = "conflict"
    status = 409


class ValidationFailed(CloudError):
    code = "validation_error"
    status = 422


class ConfigError(Exception):
    """The control plane cannot start with this configuration (bad master key, ...)."""
