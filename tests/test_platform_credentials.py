"""Credentials on the data plane of a real `fusebox serve` (run with -v, its output in a file).

- Rotating a service's secret with an overlap: during it the old and the new secret both
  open shapes and streams; once it has passed only the new one does (polled for, never
  timed), and a client token signed with the old secret stops working with it.
- A shape-scoped client token opens exactly its shape: the same table, where, params and
  columns (columns in any order or quoting), and nothing else (403); expired, it is refused.
- No secret, token or database password ever reaches the server's log output (checked
  after provoking failed checks, a dropped replication connection and refused requests),
  nor the admin API's answers or the data directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port
from platform_helpers import (
    Admin,
    Platform,
    drop_database,
    new_database,
    poll,
    read_shape,
    running_platform,
    shape_rows,
)
from postgres import PostgresCluster

pytestmark = pytest.mark.timeout(300)

# The token's shape: owner 7's rows of `items`, three columns (one of them mixed case).
PINNED = {
    "table": "items",
    "where": "owner = $1",
    "params": {"1": "7"},
    "columns": ["id", "title", '"Note"'],
}
ASKED = {
    "table": "items",
    "where": "owner = $1",
    "params[1]": "7",
    "columns": 'id,title,"Note"',
}


@dataclass
class Setup:
    platform: Platform
    admin: Admin
    database: str
    database_url: str
    password: str
    source: dict[str, Any]
    streams: dict[str, Any]
    # Every credential the run has seen: none may be in the log.
    sensitive: set[str] = field(default_factory=set)

    @property
    def shape_url(self) -> str:
        return f"{self.platform.url}/v1/shape"

    def stream_url(self, name: str) -> str:
        return f"{self.platform.url}/v1/stream/{self.streams['id']}/{name}"

    def token(self, **body: Any) -> str:
        token = self.admin.client_token(self.source["id"], **body)
        self.sensitive.add(token)
        return token

    def rotate(self, service: dict[str, Any], overlap_seconds: int) -> tuple[str, datetime]:
        answer = self.admin.rotate(service["id"], overlap_seconds)
        self.sensitive.add(answer["secret"])
        until = datetime.fromisoformat(answer["previous_valid_until"].replace("Z", "+00:00"))
        return answer["secret"], until


def shape(setup: Setup, **params: str) -> httpx.Response:
    """One catch-up request for a shape of this source (the given credential in params)."""
    return httpx.get(
        setup.shape_url,
        params={"offset": "-1", "source_id": setup.source["id"], **params},
        timeout=30,
    )


def token_shape(setup: Setup, token: str, **overrides: str) -> httpx.Response:
    params = {**ASKED, **overrides}
    return shape(setup, token=token, **{k: v for k, v in params.items() if v is not None})


def read_stream(setup: Setup, name: str, secret: str) -> httpx.Response:
    return httpx.get(
        setup.stream_url(name),
        params={"offset": "-1"},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def role(postgres: PostgresCluster) -> Iterator[tuple[str, str]]:
    """(name, password) of a login role with REPLICATION: the password goes in the URL."""
    name = f"cred_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    postgres.psql(f"CREATE ROLE {name} LOGIN REPLICATION PASSWORD '{password}'")
    try:
        yield name, password
    finally:
        postgres.psql(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture(scope="module")
def database(postgres: PostgresCluster, role: tuple[str, str]) -> Iterator[str]:
    name = new_database(postgres, "cred", owner=role[0])
    for sql in (
        'CREATE TABLE items (id int PRIMARY KEY, title text, "Note" text, secret_col text, '
        "owner int)",
        "INSERT INTO items VALUES (1, 'one', 'n1', 'hidden-1', 7), (2, 'two', 'n2', "
        "'hidden-2', 7), (3, 'three', 'n3', 'hidden-3', 8)",
        'CREATE TABLE other (id int PRIMARY KEY, title text, "Note" text, owner int)',
        "INSERT INTO other VALUES (1, 'other-row', 'n', 7)",
        f"ALTER TABLE items OWNER TO {role[0]}",
        f"ALTER TABLE other OWNER TO {role[0]}",
    ):
        postgres.psql(sql, name)
    try:
        yield name
    finally:
        drop_database(postgres, name)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresCluster,
    role: tuple[str, str],
    database: str,
) -> Iterator[Setup]:
    name, password = role
    url = f"postgresql://{name}:{password}@127.0.0.1:{postgres.port}/{database}"
    # -v: debug logging everywhere, the most a log could give away.
    with running_platform(tmp_path_factory.mktemp("credentials"), "-v") as platform:
        admin = Admin(platform)
        environment = admin.environment("credentials")
        source = admin.service(environment, "postgres", database_url=url)
        streams = admin.service(environment, "streams")
        made = Setup(platform, admin, database, url, password, source, streams)
        made.sensitive |= {admin.session, source["secret"], streams["secret"], password}
        first = read_shape(made.shape_url, {"table": "items", "source_id": source["id"],
                                           "secret": source["secret"]})  # fmt: skip
        assert first.status_code == 200, first.text
        yield made


# -- rotation ---------------------------------------------------------------------------------


def inside(until: datetime, check: Callable[[], int]) -> int | None:
    """The status `check` got, if its answer arrived before `until` (so the server judged
    it inside the overlap); None when too late to say."""
    status = check()
    return status if datetime.now(UTC) < until else None


def test_rotation_overlap_then_only_the_new_secret(setup: Setup) -> None:
    stream_name = f"rot-{uuid.uuid4().hex[:6]}"
    made = httpx.put(
        setup.stream_url(stream_name),
        content=b"rotating",
        headers={
            "Authorization": f"Bearer {setup.streams['secret']}",
            "content-type": "text/plain",
        },
    )
    assert made.status_code == 201, made.text

    # Rotate both services with an overlap; check both secrets inside it. A machine too
    # slow to finish the checks inside the window tries again with a longer one (the
    # previous secrets never outlive the newest overlap, so each round starts clean).
    for overlap in (5, 15, 45):
        old_source, old_streams = setup.source["secret"], setup.streams["secret"]
        old_token = setup.token(table="items")  # signed with the old secret
        new_source, source_until = setup.rotate(setup.source, overlap)
        new_streams, streams_until = setup.rotate(setup.streams, overlap)
        setup.source["secret"], setup.streams["secret"] = new_source, new_streams
        until = min(source_until, streams_until)
        statuses = [
            inside(until, lambda s=s: shape(setup, table="items", secret=s).status_code)
            for s in (old_source, new_source)
        ]
        statuses.append(
            inside(until, lambda t=old_token: shape(setup, table="items", token=t).status_code)
        )
        statuses += [
            inside(until, lambda s=s: read_stream(setup, stream_name, s).status_code)
            for s in (old_streams, new_streams)
        ]
        if None not in statuses:
            break
    else:
        pytest.fail("could not check the overlap even with a 45 s window")
    assert statuses == [200] * 5, statuses

    # After the overlap: the old secrets and the old token are refused (polled, however
    # long the machine takes); the new ones keep working.
    poll(
        lambda: shape(setup, table="items", secret=old_source).status_code == 401,
        what="the old source secret to be refused",
    )
    poll(
        lambda: read_stream(setup, stream_name, old_streams).status_code == 401,
        what="the old streams secret to be refused",
    )
    poll(
        lambda: shape(setup, table="items", token=old_token).status_code == 401,
        what="the token signed with the old secret to be refused",
    )
    assert shape(setup, table="items", api_secret=old_source).status_code == 401
    assert shape(setup, table="items", secret=new_source).status_code == 200
    assert shape(setup, table="items", api_secret=new_source).status_code == 200
    read = read_stream(setup, stream_name, new_streams)
    assert read.status_code == 200 and read.content == b"rotating"
    assert shape(setup, table="items", token=setup.token(table="items")).status_code == 200
    # The old secret is not a credential of the other service either.
    assert read_stream(setup, stream_name, old_source).status_code == 401
    assert read_stream(setup, stream_name, new_source).status_code == 401


def test_rotation_without_overlap_ends_the_old_secret_at_once(setup: Setup) -> None:
    old = setup.source["secret"]
    new, _ = setup.rotate(setup.source, 0)
    setup.source["secret"] = new
    assert shape(setup, table="items", secret=old).status_code == 401
    assert shape(setup, table="items", secret=new).status_code == 200


# -- client tokens ----------------------------------------------------------------------------


ALLOWED = {
    "exactly as minted": {},
    "columns in another order": {"columns": '"Note",title,id'},
    "columns all quoted": {"columns": '"id","title","Note"'},
    "columns with spaces": {"columns": ' title , "Note",id '},
    "bare columns in upper case": {"columns": 'ID,Title,"Note"'},
    "a column twice": {"columns": 'id,id,title,"Note"'},
    "table with its schema": {"table": "public.items"},
    "table quoted": {"table": '"items"'},
    "params as a JSON object": {"params[1]": None, "params": '{"1": "7"}'},
    "params as a JSON array": {"params[1]": None, "params": '["7"]'},
}

REFUSED_SHAPES = {
    "another table": {"table": "other"},
    "another schema": {"table": "private.items"},
    "a case-sensitive table of another name": {"table": '"Items"'},
    "a wider where": {"where": "owner = $1 OR true"},
    "no where": {"where": None, "params[1]": None},
    "the where spelled differently": {"where": "owner=$1"},
    "the where with the value inlined": {"where": "owner = 7", "params[1]": None},
    "another param value": {"params[1]": "8"},
    "no params": {"params[1]": None},
    "an extra param": {"params[2]": "1"},
    "a JSON param overriding the pinned one": {"params": '{"1": "8"}'},
    "fewer columns": {"columns": "id,title"},
    "more columns": {"columns": 'id,title,"Note",secret_col'},
    "all columns (none named)": {"columns": None},
    "a column folded to lower case": {"columns": "id,title,note"},
    "the last table param is another table": {"table": None, "__raw": "table=items&table=other"},
}


def test_client_token_opens_exactly_its_shape(setup: Setup) -> None:
    token = setup.token(**PINNED)
    for name, overrides in ALLOWED.items():
        answer = token_shape(setup, token, **overrides)
        assert answer.status_code == 200, (name, answer.status_code, answer.text)
        rows = shape_rows(answer.content)
        assert sorted(r["id"] for r in rows) == ["1", "2"], (name, rows)
        assert all(set(r) == {"id", "title", "Note"} for r in rows), (name, rows)

    # The same token as `Authorization: Bearer`, and on the follow-up request a client
    # makes with the handle and offset it was given.
    headers = {"Authorization": f"Bearer {token}"}
    first = httpx.get(
        setup.shape_url,
        params={"offset": "-1", "source_id": setup.source["id"], **ASKED},
        headers=headers,
    )
    assert first.status_code == 200, first.text
    follow = httpx.get(
        setup.shape_url,
        params={
            "offset": first.headers["electric-offset"],
            "handle": first.headers["electric-handle"],
            "source_id": setup.source["id"],
            **ASKED,
        },
        headers=headers,
    )
    assert follow.status_code == 200, follow.text

    for name, overrides in REFUSED_SHAPES.items():
        raw = overrides.get("__raw")
        params = {**ASKED, **{k: v for k, v in overrides.items() if k != "__raw"}}
        encoded = httpx.QueryParams(
            {"offset": "-1", "source_id": setup.source["id"], "token": token}
            | {k: v for k, v in params.items() if v is not None}
        )
        url = f"{setup.shape_url}?{encoded}" + (f"&{raw}" if raw else "")
        answer = httpx.get(url)
        assert answer.status_code == 403, (name, answer.status_code, answer.text)
        assert "hidden" not in answer.text and "other-row" not in answer.text

    # Repeated parameters: the gateway checks the same (last) value the shape is built from.
    for name, raw in {
        "table": "table=other&table=items",
        "where": "where=owner%20%3D%20%241%20OR%20true&where=owner%20%3D%20%241",
        "params": "params%5B1%5D=8&params%5B1%5D=7",
        "columns": "columns=secret_col&columns=id%2Ctitle%2C%22Note%22",
    }.items():
        rest = {k: v for k, v in ASKED.items() if not k.startswith(name)}
        encoded = httpx.QueryParams(
            {"offset": "-1", "source_id": setup.source["id"], "token": token} | rest
        )
        answer = httpx.get(f"{setup.shape_url}?{raw}&{encoded}")
        assert answer.status_code == 200, (name, answer.text)
        rows = shape_rows(answer.content)
        assert sorted(r["id"] for r in rows) == ["1", "2"], (name, rows)
        assert "hidden" not in answer.text and "other-row" not in answer.text

    # A token minted for another shape of the same source does not open this one.
    bare = setup.token(table="items")
    assert token_shape(setup, bare).status_code == 403
    assert shape(setup, table="items", token=bare).status_code == 200
    # A token is not a secret, and a wrong secret beside a good token is still refused.
    assert shape(setup, table="items", secret=bare).status_code == 401
    assert token_shape(setup, token, secret="wrong").status_code == 401
    # Tampered with: refused as invalid (401), whatever it claims.
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert token_shape(setup, f"{head}.{payload}.{flipped}").status_code == 401
    # Tokens are for shapes only: not a Bearer for streams.
    assert read_stream(setup, "anything", token).status_code == 401


def test_subsets_stay_inside_the_tokens_shape(setup: Setup) -> None:
    """Subset queries (`subset__*`, or a POST body) add a where and an order to a shape's
    rows. With a token they never reach rows outside its shape, and a token limited to some
    columns cannot use them at all: their where and order_by may name any column, so
    `secret_col LIKE 'hidden-1%'` would read a column the token does not show."""
    limited = setup.token(**PINNED)
    by_secret = {"subset__order_by": "secret_col", "subset__limit": "1"}
    probes = [
        ("GET", {"subset__where": "secret_col LIKE 'hidden-1%'"}, None),
        ("GET", {"subset__where": "true", **by_secret}, None),
        ("POST", {}, {"where": "secret_col = 'hidden-1'"}),
    ]
    for method, extra, body in probes:
        answer = httpx.request(
            method,
            setup.shape_url,
            params={"offset": "-1", "source_id": setup.source["id"], "token": limited}
            | ASKED
            | extra,
            json=body,
        )
        assert answer.status_code == 403, (extra, body, answer.status_code, answer.text)
        assert "hidden" not in answer.text
    # Without subset options the same token still works.
    assert token_shape(setup, limited).status_code == 200

    # A token for whole rows may use subsets, inside its own rows only.
    rows_only = setup.token(table="items", where="owner = $1", params={"1": "7"})
    pinned = {"table": "items", "where": "owner = $1", "params[1]": "7"}
    for where, ids in (("true", ["1", "2"]), ("owner = 8", []), ("id = 3", [])):
        answer = httpx.get(
            setup.shape_url,
            params={"offset": "-1", "source_id": setup.source["id"], "token": rows_only}
            | pinned
            | {"subset__where": where},
        )
        assert answer.status_code == 200, (where, answer.text)
        got = sorted(item["value"]["id"] for item in answer.json()["data"])
        assert got == ids, (where, got)


def test_an_expired_client_token_is_refused(setup: Setup) -> None:
    short = setup.token(**PINNED, ttl_seconds=1)
    poll(
        lambda: token_shape(setup, short).status_code == 401,
        what="the 1-second token to expire",
    )
    assert "invalid token" in token_shape(setup, short).text
    # A fresh one for the same shape works.
    assert token_shape(setup, setup.token(**PINNED)).status_code == 200


# -- secrets stay out of logs ----------------------------------------------------------------


def test_no_secret_reaches_the_log_the_api_or_the_data_dir(
    setup: Setup, postgres: PostgresCluster
) -> None:
    """Runs last: provokes what might log a credential, stops the server, then greps."""
    admin, platform = setup.admin, setup.platform
    api_token = admin.post(
        "/tokens",
        {
            "workspace_id": admin.get("/auth/whoami")["workspaces"][0]["id"],
            "name": "ci",
            "scopes": ["services:read"],
        },
    )["token"]
    setup.sensitive.add(api_token)
    assert admin.get("/services", environment_id=setup.source["environment_id"])

    # Failed checks, with passwords in their URLs: a closed port, and a role without
    # REPLICATION.
    other_password = f"pw-{uuid.uuid4().hex}"
    setup.sensitive.add(other_password)
    norepl = f"norepl_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE ROLE {norepl} LOGIN NOREPLICATION PASSWORD '{other_password}'")
    failed = []
    try:
        for url in (
            f"postgresql://someone:{other_password}@127.0.0.1:{free_port()}/nowhere",
            f"postgresql://{norepl}:{other_password}@127.0.0.1:{postgres.port}/{setup.database}",
        ):
            created = admin.post(
                "/services",
                {
                    "environment_id": setup.source["environment_id"],
                    "type": "postgres",
                    "region": "local",
                    "database_url": url,
                },
            )
            setup.sensitive.add(created["secret"])
            failed.append(admin.settle(created["id"]))
    finally:
        postgres.psql(f"DROP ROLE IF EXISTS {norepl}")
    assert [s["state"] for s in failed] == ["error", "error"]
    assert {s["error"]["check"] for s in failed} == {"connection", "replication_permission"}

    # Drop the live source's replication connection: it reconnects (and logs why).
    source_id = setup.source["id"]
    user = setup.database_url.split("//", 1)[1].split(":", 1)[0]
    postgres.psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE usename = '{user}'"
    )
    poll(
        lambda: any(
            e["kind"] == "connection_error" for e in admin.get(f"/services/{source_id}/events")
        ),
        what="the dropped connection to be noticed",
    )
    poll(
        lambda: shape(setup, table="items", secret=setup.source["secret"]).status_code == 200,
        what="the source to serve again",
    )

    # Refused requests carrying credentials, on both planes.
    for params in (
        {"secret": setup.source["secret"] + "x"},
        {"api_secret": setup.streams["secret"]},
        {"token": api_token},
    ):
        assert shape(setup, table="items", **params).status_code == 401
    assert read_stream(setup, "nope", setup.source["secret"]).status_code == 401
    bad_login = httpx.post(
        f"{platform.url}/api/v1/auth/login",
        json={"email": platform.owner_email, "password": other_password},
    )
    assert bad_login.status_code == 401
    bad_body = httpx.post(
        f"{platform.url}/api/v1/services",
        json={"environment_id": "env_x", "type": "postgres", "database_url": setup.database_url},
        headers={"Authorization": f"Bearer {admin.session}"},
    )
    assert bad_body.status_code in (404, 422), bad_body.text
    assert setup.password not in bad_body.text  # validation errors do not echo it

    # The admin API shows connection strings masked, in services and events alike.
    shown = [admin.get(f"/services/{s['id']}") for s in (setup.source, *failed)]
    events = [admin.get(f"/services/{s['id']}/events") for s in (setup.source, *failed)]
    answers = str(shown) + str(events) + str(admin.get("/services"))
    assert setup.password not in answers and other_password not in answers
    assert setup.source["secret"] not in answers

    platform.stop()  # flush and close the log; the fixture's stop is then a no-op
    log = Path(platform.log_path).read_text(errors="replace")
    assert "stopping" in log  # the log is the whole run's, through shutdown
    leaked = sorted(s for s in setup.sensitive if s and s in log)
    assert leaked == [], [f"{s[:6]}…" for s in leaked]
    # The owner's first password is shown once on stdout by design, and nowhere else.
    assert log.count(platform.owner_password) == 1

    # At rest: nothing in the data directory holds a credential in plain text.
    for path in Path(platform.data_dir).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found = [s[:6] for s in setup.sensitive if s and s.encode() in data]
            assert found == [], (path, found)
