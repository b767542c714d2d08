"""The admin HTTP API (docs/admin-api.md) under /api/v1, as a FastAPI application.

Auth is a bearer credential: a session (every scope, the user's workspaces) or an API token
(one workspace, its scopes). Scopes are checked before anything is looked up, so a 403 says
nothing about a resource; a resource outside the caller's workspaces is 404, never 403.
Every error, including FastAPI's own 404/405/422, is `{"error": {"code", "message"}}`.

Handlers that only touch the database are plain functions (FastAPI runs them in its thread
pool: password hashing and SQLite waits do not block the loop); those that also start or
stop engines are coroutines that call the database through `run_in_threadpool`.

(No `from __future__ import annotations` here: FastAPI must evaluate the handlers'
annotations, which refer to dependencies defined inside `create_admin_app`.)
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from fusebox.cloud import client_tokens
from fusebox.cloud.accounts import Principal
from fusebox.cloud.clock import rfc3339
from fusebox.cloud.control import ControlPlane
from fusebox.cloud.errors import CloudError, Forbidden, Unauthorized, ValidationFailed
from fusebox.cloud.provisioning import Provisioner
from fusebox.cloud.resources import service_url
from fusebox.cloud.runtime import ServiceRuntime
from fusebox.cloud.schemas import (
    AddMemberRequest,
    ChangePasswordRequest,
    ClientToken,
    ClientTokenRequest,
    CreatedService,
    CreatedToken,
    CreateEnvironmentRequest,
    CreatePostgresService,
    CreateProjectRequest,
    CreateStreamsService,
    CreateTokenRequest,
    CreateWorkspaceRequest,
    Environment,
    ErrorBody,
    Event,
    LoginRequest,
    LoginResponse,
    Member,
    Project,
    RotatedSecret,
    RotateSecretRequest,
    Secret,
    Service,
    SetRoleRequest,
    Token,
    Whoami,
    Workspace,
)

log = logging.getLogger("fusebox.cloud")

PREFIX = "/api/v1"

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "validation_error",
}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return 400, "bad_request", "the request body is not valid JSON"
    parts = []
    for error in errors[:5]:
        # The location and the rule only: the rejected input may be a password.
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return 422, "validation_error", "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CloudError)
    async def _cloud_error(_request: Request, exc: CloudError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(*_describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(
            exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error"
        )
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        return _error(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error")


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": code.replace("_", " ")}
    for status, code in _CODES.items()
    if status != 405
}


def _query_names(dependant: Any) -> frozenset[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not take: `?workspace=` instead of
    `?workspace_id=` would otherwise list everything, silently."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    unknown = set(request.query_params) - _query_names(dependant)
    if unknown:
        shown = ", ".join(sorted(repr(name[:40]) for name in unknown)[:5])
        raise ValidationFailed(f"unknown query parameters: {shown}")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    visible: frozenset[str]


def create_admin_app(
    control: ControlPlane, runtime: ServiceRuntime, public_base_url: str
) -> FastAPI:
    """The admin API over `control`, starting and stopping engines through `runtime`;
    `public_base_url` is the data plane's base URL, shown in each service's `url`."""
    provisioner = Provisioner(control.resources, runtime)
    accounts, resources, members = control.accounts, control.resources, control.members

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await provisioner.close()

    app = FastAPI(
        title="Fusebox admin API",
        version="1",
        description="Workspaces, projects, environments and services of a Fusebox cloud.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.control = control
    app.state.provisioner = provisioner
    install_error_handlers(app)

    bearer = HTTPBearer(
        auto_error=False, description="A session token (login) or an API token (fbx_...)."
    )

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        if credentials is None:
            raise Unauthorized("send Authorization: Bearer <session or API token>")
        principal = accounts.authenticate(credentials.credentials)
        return Caller(principal, accounts.visible_workspaces(principal))

    def needs(scope: str) -> Callable[[Caller], Caller]:
        def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
            if not who.principal.can(scope):
                raise Forbidden(f"this token lacks the {scope} scope")
            return who

        return check

    def session_only(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.principal.kind != "session":
            raise Forbidden("this needs a signed-in session, not an API token")
        return who

    def present(service: dict[str, Any]) -> dict[str, Any]:
        return {**service, "url": service_url(public_base_url, service)}

    api = APIRouter(prefix=PREFIX, dependencies=[Depends(known_query_only)])

    # -- auth -----------------------------------------------------------------------------

    @api.post("/auth/login", response_model=LoginResponse, tags=["auth"])
    def login(body: LoginRequest) -> dict[str, Any]:
        token, user = accounts.login(body.email, body.password)
        return {"token": token, "user": user}

    @api.post("/auth/logout", status_code=204, tags=["auth"])
    def logout(who: Annotated[Caller, Depends(session_only)]) -> Response:
        accounts.logout(who.principal)
        return Response(status_code=204)

    @api.post("/auth/password", status_code=204, tags=["auth"])
    def change_password(
        body: ChangePasswordRequest, who: Annotated[Caller, Depends(session_only)]
    ) -> Response:
        accounts.change_password(who.principal, body.current_password, body.new_password)
        return Response(status_code=204)

    @api.get("/auth/whoami", response_model=Whoami, tags=["auth"])
    def whoami(who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        return {
            "user": who.principal.user,
            "workspaces": resources.list_workspaces(who.visible),
            "token": who.principal.token,
        }

    # -- API tokens -----------------------------------------------------------------------

    @api.get("/tokens", response_model=list[Token], tags=["tokens"])
    def list_tokens(
        who: Annotated[Caller, Depends(needs("tokens:read"))],
        workspace_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        return accounts.list_api_tokens(who.visible, workspace_id)

    @api.post("/tokens", status_code=201, response_model=CreatedToken, tags=["tokens"])
    def create_token(
        body: CreateTokenRequest, who: Annotated[Caller, Depends(needs("tokens:write"))]
    ) -> dict[str, Any]:
        secret, token = accounts.create_api_token(
            who.principal, who.visible, body.workspace_id, body.name, body.scopes
        )
        return {**token, "token": secret}

    @api.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
    def revoke_token(
        token_id: str, who: Annotated[Caller, Depends(needs("tokens:write"))]
    ) -> Response:
        accounts.revoke_api_token(who.visible, token_id)
        return Response(status_code=204)

    # -- workspaces and projects ----------------------------------------------------------

    @api.get("/workspaces", response_model=list[Workspace], tags=["workspaces"])
    def list_workspaces(who: Annotated[Caller, Depends(caller)]) -> list[dict[str, Any]]:
        return resources.list_workspaces(who.visible)

    @api.post("/workspaces", status_code=201, response_model=Workspace, tags=["workspaces"])
    def create_workspace(
        body: CreateWorkspaceRequest, who: Annotated[Caller, Depends(session_only)]
    ) -> dict[str, Any]:
        return resources.create_workspace(who.principal.user_id, body.name)

    # -- members --------------------------------------------------------------------------

    members_path = "/workspaces/{workspace_id}/members"

    @api.get(members_path, response_model=list[Member], tags=["members"])
    def list_members(
        workspace_id: str, who: Annotated[Caller, Depends(needs("members:read"))]
    ) -> list[dict[str, Any]]:
        return members.list(who.visible, workspace_id)

    @api.post(members_path, status_code=201, response_model=Member, tags=["members"])
    def add_member(
        workspace_id: str,
        body: AddMemberRequest,
        who: Annotated[Caller, Depends(needs("members:write"))],
    ) -> dict[str, Any]:
        return members.add(
            who.principal, who.visible, workspace_id, body.email, body.role, body.password,
            body.name,
        )  # fmt: skip

    @api.patch(members_path + "/{user_id}", response_model=Member, tags=["members"])
    def set_member_role(
        workspace_id: str,
        user_id: str,
        body: SetRoleRequest,
        who: Annotated[Caller, Depends(needs("members:write"))],
    ) -> dict[str, Any]:
        return members.set_role(who.principal, who.visible, workspace_id, user_id, body.role)

    @api.delete(members_path + "/{user_id}", status_code=204, tags=["members"])
    def remove_member(
        workspace_id: str, user_id: str, who: Annotated[Caller, Depends(needs("members:write"))]
    ) -> Response:
        members.remove(who.principal, who.visible, workspace_id, user_id)
        return Response(status_code=204)

    @api.get("/projects", response_model=list[Project], tags=["projects"])
    def list_projects(
        who: Annotated[Caller, Depends(needs("projects:read"))],
        workspace_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        return resources.list_projects(who.visible, workspace_id)

    @api.post("/projects", status_code=201, response_model=Project, tags=["projects"])
    def create_project(
        body: CreateProjectRequest, who: Annotated[Caller, Depends(needs("projects:write"))]
    ) -> dict[str, Any]:
        return resources.create_project(who.visible, body.workspace_id, body.name)

    # -- environments ---------------------------------------------------------------------

    @api.get("/environments", response_model=list[Environment], tags=["environments"])
    def list_environments(
        who: Annotated[Caller, Depends(needs("environments:read"))],
        project_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        return resources.list_environments(who.visible, project_id)

    @api.post("/environments", status_code=201, response_model=Environment, tags=["environments"])
    async def create_environment(
        body: CreateEnvironmentRequest,
        who: Annotated[Caller, Depends(needs("environments:write"))],
    ) -> dict[str, Any]:
        if body.clone_from is not None and not who.principal.can("services:write"):
            # Cloning creates services, so it needs what creating them needs.
            raise Forbidden("cloning an environment creates services: needs services:write")
        environment, created = await run_in_threadpool(
            resources.create_environment, who.visible, body.project_id, body.name, body.clone_from
        )
        for service in created:
            provisioner.submit(service.service["id"])
        return environment

    @api.delete("/environments/{environment_id}", status_code=204, tags=["environments"])
    async def delete_environment(
        environment_id: str, who: Annotated[Caller, Depends(needs("environments:write"))]
    ) -> Response:
        services = await run_in_threadpool(
            resources.delete_environment, who.visible, environment_id
        )
        for service in services:
            await provisioner.stop(service)
        return Response(status_code=204)

    # -- services -------------------------------------------------------------------------

    @api.get("/services", response_model=list[Service], tags=["services"])
    def list_services(
        who: Annotated[Caller, Depends(needs("services:read"))],
        environment_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        return [present(s) for s in resources.list_services(who.visible, environment_id)]

    @api.post("/services", status_code=201, response_model=CreatedService, tags=["services"])
    async def create_service(
        body: Annotated[CreatePostgresService | CreateStreamsService, Body(discriminator="type")],
        who: Annotated[Caller, Depends(needs("services:write"))],
    ) -> dict[str, Any]:
        created = await run_in_threadpool(
            resources.create_service,
            who.visible,
            body.environment_id,
            body.type,
            body.region,
            body.name,
            getattr(body, "database_url", None),
        )
        provisioner.submit(created.service["id"])
        return {**present(created.service), "secret": created.secret}

    @api.get("/services/{service_id}", response_model=Service, tags=["services"])
    def get_service(
        service_id: str, who: Annotated[Caller, Depends(needs("services:read"))]
    ) -> dict[str, Any]:
        return present(resources.get_service(who.visible, service_id))

    @api.delete("/services/{service_id}", status_code=204, tags=["services"])
    async def delete_service(
        service_id: str, who: Annotated[Caller, Depends(needs("services:write"))]
    ) -> Response:
        service = await run_in_threadpool(resources.delete_service, who.visible, service_id)
        await provisioner.stop(service)
        return Response(status_code=204)

    @api.get("/services/{service_id}/secret", response_model=Secret, tags=["services"])
    def get_secret(
        service_id: str, who: Annotated[Caller, Depends(needs("services:secrets"))]
    ) -> dict[str, Any]:
        return {"id": service_id, "secret": resources.get_secret(who.visible, service_id)}

    @api.post(
        "/services/{service_id}/rotate-secret", response_model=RotatedSecret, tags=["services"]
    )
    def rotate_secret(
        service_id: str,
        who: Annotated[Caller, Depends(needs("services:secrets"))],
        body: RotateSecretRequest | None = None,
    ) -> dict[str, Any]:
        overlap = timedelta(seconds=(body or RotateSecretRequest()).overlap_seconds)
        secret, until = resources.rotate_secret(who.visible, service_id, overlap)
        return {"id": service_id, "secret": secret, "previous_valid_until": rfc3339(until)}

    @api.get("/services/{service_id}/events", response_model=list[Event], tags=["services"])
    def list_events(
        service_id: str,
        who: Annotated[Caller, Depends(needs("services:read"))],
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        return resources.list_events(who.visible, service_id, limit)

    @api.post(
        "/services/{service_id}/client-tokens",
        status_code=201,
        response_model=ClientToken,
        tags=["services"],
    )
    def create_client_token(
        service_id: str,
        body: ClientTokenRequest,
        who: Annotated[Caller, Depends(needs("services:secrets"))],
    ) -> dict[str, Any]:
        # Visibility first: a bad shape on someone else's service is still a 404.
        resources.get_service(who.visible, service_id)
        claim = client_tokens.validate_shape(body.table, body.where, body.params, body.columns)
        token, expires_at = resources.create_client_token(
            who.visible, service_id, claim, timedelta(seconds=body.ttl_seconds)
        )
        return {"token": token, "expires_at": rfc3339(expires_at)}

    app.include_router(api)
    return app
