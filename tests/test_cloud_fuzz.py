"""Schemathesis fuzzing of the admin API from its own OpenAPI document, in process (ASGI).

Every operation gets generated requests, valid and invalid, authenticated with an API token
holding every scope. A second pass puts real IDs (a live workspace, project, environment and
postgres service) into paths and bodies, so requests reach the code behind the lookups: the
where-clause check of client tokens, rotation bounds, name rules. Whatever comes in, the
answer is never a 5xx and always matches the document.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import CloudHarness
from fusebox.cloud.scopes import SCOPES

API = "/api/v1"


@pytest.fixture
def fuzz_target(cloud: CloudHarness) -> dict:
    headers = cloud.login()

    def post(path: str, body: dict) -> dict:
        response = cloud.client.post(API + path, json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    project = post("/projects", {"workspace_id": cloud.workspace_id, "name": "fuzz"})
    environment = post("/environments", {"project_id": project["id"], "name": "production"})
    service = post(
        "/services",
        {
            "environment_id": environment["id"],
            "type": "postgres",
            "region": "local",
            "database_url": "postgresql://app:pw@127.0.0.1:5432/app",
        },
    )
    token = post(
        "/tokens", {"workspace_id": cloud.workspace_id, "name": "fuzz", "scopes": list(SCOPES)}
    )
    # The one DELETE /tokens/{id} may revoke: not the token the fuzzer authenticates with.
    spare = post(
        "/tokens",
        {"workspace_id": cloud.workspace_id, "name": "spare", "scopes": ["projects:read"]},
    )
    return {
        "headers": {"Authorization": f"Bearer {token['token']}"},
        "ids": {
            "workspace_id": cloud.workspace_id,
            "project_id": project["id"],
            "environment_id": environment["id"],
            "service_id": service["id"],
            "token_id": spare["id"],
        },
    }


def with_real_ids(case, ids: dict[str, str], mode: GenerationMode) -> None:
    """Swap generated IDs for live ones. For invalid requests only in the path: an ID in the
    query or body may be the very part made invalid, and swapping it would make it valid."""
    containers = [case.path_parameters]
    if mode == GenerationMode.POSITIVE:
        containers += [case.query, case.body]
    for container in containers:
        if isinstance(container, dict):
            for name in list(container):
                if name in ids:
                    container[name] = ids[name]


# Rules JSON Schema cannot state: a where clause must parse as SQL, a connection string as a
# URL, params must match the $n in the clause. Input valid by the document can fail those,
# and is refused with a 422 naming the problem; everywhere else, valid input is accepted.
SEMANTIC_VALIDATION = {
    ("POST", "/api/v1/services"),
    ("POST", "/api/v1/services/{service_id}/client-tokens"),
    # Adding a member depends on who exists (an unknown email needs a password, a known one
    # must not have one); changing a role, on who else is an owner.
    ("POST", "/api/v1/workspaces/{workspace_id}/members"),
    ("PATCH", "/api/v1/workspaces/{workspace_id}/members/{user_id}"),
}


def fuzz_operation(operation, mode: GenerationMode, target: dict, real_ids: bool) -> None:
    # Pytest's own schemathesis integration (`schema.parametrize`) does not work with the
    # pytest in use here, so each operation is driven through Hypothesis directly.
    excluded = []
    if (operation.method.upper(), operation.path) in SEMANTIC_VALIDATION:
        excluded.append(positive_data_acceptance)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        if real_ids:
            with_real_ids(case, target["ids"], mode)
        if isinstance(case.query, dict):
            # The HTTP client drops None-valued parameters; send them empty, so the server
            # sees the (unknown or invalid) parameter that the case is about.
            for name, value in case.query.items():
                if value is None:
                    case.query[name] = ""
        case.call_and_validate(headers=dict(target["headers"]), excluded_checks=excluded)

    run()


MAX_EXAMPLES = 25


@pytest.mark.parametrize("real_ids", [False, True], ids=["random-ids", "real-ids"])
@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"]
)
def test_admin_api_fuzz(cloud: CloudHarness, fuzz_target: dict, mode, real_ids: bool) -> None:
    schema = schemathesis.openapi.from_asgi(f"{API}/openapi.json", cloud.app)
    # The token is added to every request below; generated (or deliberately missing)
    # Authorization headers would only be overwritten. Bad credentials have their own tests.
    schema.config.generation.update(with_security_parameters=False)
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 26
    # Deletes last, so that the real IDs stay live for every other operation; the
    # environment's last of all, since it takes its services with it.
    operations.sort(
        key=lambda op: (op.method.upper() == "DELETE", op.path.startswith(f"{API}/environments"))
    )
    for operation in operations:
        try:
            fuzz_operation(operation, mode, fuzz_target, real_ids)
        except Unsatisfiable:
            # Only for invalid requests: an operation whose inputs have no constraint (an
            # ID in the path, no query, no body) cannot be sent an invalid request.
            assert mode == GenerationMode.NEGATIVE
        except BaseException as exc:  # schemathesis reports failures as exception groups
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
