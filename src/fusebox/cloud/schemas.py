"""Request and response bodies of the admin API (docs/admin-api.md), as Pydantic models.

The constraints here are the API's validation and appear in its OpenAPI document, so that
what the document calls valid is what the server accepts: bounded lengths, no control
characters in names, bounded integers, unknown fields refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from fusebox.cloud.scopes import SCOPES

# Printable text: control characters have no place in a name, and Postgres rejects NUL.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
Reference = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
Region = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
Scope = Literal[SCOPES]  # type: ignore[valid-type]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
# A Postgres identifier as shapes take it: quoted ("Mixed Case") or bare (folded to lower case).
_IDENTIFIER = r'(?:"(?:[^"\x00]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
TableName = Annotated[
    str, StringConstraints(max_length=200, pattern=rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER})?$")
]
ColumnName = Annotated[str, StringConstraints(max_length=200, pattern=rf"^{_IDENTIFIER}$")]


def _json_integer(value: Any) -> Any:
    # A JSON integer, as JSON Schema defines it: 60 and 60.0, but not true or "60".
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def json_int(minimum: int, maximum: int) -> Any:
    """An integer field in [minimum, maximum] (bounds before the validator, so that they
    reach the OpenAPI document as minimum/maximum)."""
    return Annotated[int, Field(ge=minimum, le=maximum), BeforeValidator(_json_integer)]


MAX_OVERLAP_SECONDS = 30 * 24 * 3600
MAX_CLIENT_TOKEN_TTL_SECONDS = 7 * 24 * 3600


class _Request(BaseModel):
    # Strict: `false` is not 0 and "60" is not 60 in a JSON body; unknown fields are errors.
    model_config = ConfigDict(extra="forbid", strict=True)


# -- errors ---------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: Literal[
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "conflict",
        "validation_error",
        "internal_error",
    ]
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# -- accounts -------------------------------------------------------------------------------


class LoginRequest(_Request):
    email: Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=_PRINTABLE)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class User(BaseModel):
    id: str
    email: str
    name: str | None
    created_at: Timestamp


class LoginResponse(BaseModel):
    token: str
    user: User


class Token(BaseModel):
    id: str
    name: str
    scopes: list[str]
    workspace_id: str
    created_by: str
    created_at: Timestamp


class CreatedToken(Token):
    token: str = Field(description="The API token itself: shown this once, never again.")


class CreateTokenRequest(_Request):
    workspace_id: Reference
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(SCOPES))]


# Passwords a person chooses: long enough to be worth something, bounded for the hasher.
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


class ChangePasswordRequest(_Request):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    new_password: NewPassword


# -- members --------------------------------------------------------------------------------

MemberRole = Literal["owner", "admin", "member"]


class Member(BaseModel):
    workspace_id: str
    user: User
    role: MemberRole
    created_at: Timestamp


class AddMemberRequest(_Request):
    email: Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=_PRINTABLE)]
    role: MemberRole = "member"
    password: NewPassword | None = Field(
        None, description="Creates the account when no user has this email; refused otherwise."
    )
    name: Name | None = None


class SetRoleRequest(_Request):
    role: MemberRole


# -- resources ------------------------------------------------------------------------------


class Workspace(BaseModel):
    id: str
    name: str
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class Whoami(BaseModel):
    user: User
    workspaces: list[Workspace]
    token: Token | None = Field(description="The API token in use; null for a session.")


class CreateWorkspaceRequest(_Request):
    name: Name


class Project(BaseModel):
    id: str
    name: str
    workspace_id: str
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class CreateProjectRequest(_Request):
    workspace_id: Reference
    name: Name


class Environment(BaseModel):
    id: str
    name: str
    project_id: str
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class CreateEnvironmentRequest(_Request):
    project_id: Reference
    name: Name
    clone_from: Reference | None = Field(
        default=None, description="An environment ID or name in the same project."
    )


class ServiceError(BaseModel):
    check: Literal["connection", "replication_permission", "wal_level", "start"]
    message: str


class Service(BaseModel):
    id: str
    name: str
    type: Literal["postgres", "streams"]
    region: str
    environment_id: str
    state: Literal["provisioning", "active", "error"]
    error: ServiceError | None
    url: str
    database: str | None = Field(description="The connection string, password masked.")
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class CreatedService(Service):
    secret: str = Field(description="The service secret (also readable with services:secrets).")


class CreatePostgresService(_Request):
    environment_id: Reference
    type: Literal["postgres"]
    name: Name | None = None
    region: Region
    database_url: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=4096, pattern=r"^postgres(ql)?://[^\x00-\x1f\x7f]+$"
        ),
    ]


class CreateStreamsService(_Request):
    environment_id: Reference
    type: Literal["streams"]
    name: Name | None = None
    region: Region


CreateServiceRequest = Annotated[
    CreatePostgresService | CreateStreamsService, Field(discriminator="type")
]


class Secret(BaseModel):
    id: str
    secret: str


class RotateSecretRequest(_Request):
    overlap_seconds: json_int(0, MAX_OVERLAP_SECONDS) = 3600  # type: ignore[valid-type]


class RotatedSecret(BaseModel):
    id: str
    secret: str
    previous_valid_until: Timestamp


class Event(BaseModel):
    id: int
    service_id: str
    kind: str
    details: dict[str, Any]
    created_at: Timestamp


class ClientTokenRequest(_Request):
    table: TableName
    where: (
        Annotated[str, StringConstraints(min_length=1, max_length=10_000, pattern=r"^[^\x00]+$")]
        | None
    ) = None
    params: (
        dict[Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,3}$")], str]
        | Annotated[list[str], Field(max_length=1000)]
        | None
    ) = None
    columns: Annotated[list[ColumnName], Field(min_length=1, max_length=1000)] | None = None
    ttl_seconds: json_int(1, MAX_CLIENT_TOKEN_TTL_SECONDS) = 3600  # type: ignore[valid-type]


class ClientToken(BaseModel):
    token: str
    expires_at: Timestamp
