"""Two tenants side by side on one `fusebox serve`: neither reaches the other's data.

Tenants A and B each have a workspace, a Sync source on a database of their own and a
Streams service. Every trick below is tried in both directions (A against B and B
against A): the other's id with one's own secret or client token, path spellings (`//`,
`..`, `%2F`, `%2E%2E`, case), duplicated and mixed credential parameters, odd
Authorization headers, forged tokens, forks of the other's streams and shape logs.
Requests are written to a socket byte for byte, so no client normalises them first.
Each must be refused (400, 401, 403 or 404; never a 2xx, never a 5xx) and no answer may
carry the other tenant's rows, bytes or secret. Afterwards each tenant still reads exactly
its own data.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest

from platform_helpers import (
    REFUSED,
    Admin,
    Platform,
    Reply,
    drop_database,
    new_database,
    query,
    raw_request,
    read_shape,
    running_platform,
    shape_rows,
)
from postgres import PostgresCluster

pytestmark = pytest.mark.timeout(300)

SHAPE = "table=items&offset=-1"


@dataclass
class Tenant:
    name: str
    database: str
    row_marker: str  # in every row of its table
    byte_marker: str  # in its stream
    rows: list[dict[str, str]] = field(default_factory=list)
    source: dict = field(default_factory=dict)
    streams: dict = field(default_factory=dict)
    token: str = ""  # a client token for its `items` shape
    handle: str = ""  # the handle of that shape

    @property
    def src(self) -> str:
        return self.source["id"]

    @property
    def svc(self) -> str:
        return self.streams["id"]

    @property
    def stream_bytes(self) -> bytes:
        return f"{self.byte_marker}|second".encode()

    def secrets(self) -> list[str]:
        return [self.source["secret"], self.streams["secret"], self.token]

    def leaked_into(self, reply: Reply) -> list[str]:
        """Which of this tenant's data or secrets appear anywhere in a response."""
        text = reply.raw.decode("latin-1")
        found = [m for m in (self.row_marker, self.byte_marker, *self.secrets()) if m in text]
        return found


@dataclass
class World:
    platform: Platform
    a: Tenant
    b: Tenant

    @property
    def port(self) -> int:
        return self.platform.port


@pytest.fixture(scope="module")
def databases(postgres: PostgresCluster) -> Iterator[tuple[Tenant, Tenant]]:
    tenants = []
    for name in ("a", "b"):
        marker = f"{name}-rows-{uuid.uuid4().hex}"
        tenant = Tenant(
            name, new_database(postgres, f"iso_{name}"), marker, f"{name}-bytes-{uuid.uuid4().hex}"
        )
        postgres.psql(
            "CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL)", tenant.database
        )
        postgres.psql(
            f"INSERT INTO items VALUES (1, '{marker} one'), (2, '{marker} two')", tenant.database
        )
        tenant.rows = [{"id": "1", "title": f"{marker} one"}, {"id": "2", "title": f"{marker} two"}]
        tenants.append(tenant)
    try:
        yield tenants[0], tenants[1]
    finally:
        for tenant in tenants:
            drop_database(postgres, tenant.database)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    databases: tuple[Tenant, Tenant],
    postgres: PostgresCluster,
) -> Iterator[World]:
    # Set up after the databases, so stopped before they are dropped.
    with running_platform(tmp_path_factory.mktemp("isolation")) as platform:
        admin = Admin(platform)
        for tenant in databases:
            environment = admin.environment(f"tenant-{tenant.name}")
            tenant.source = admin.service(
                environment, "postgres", database_url=postgres.url(tenant.database)
            )
            tenant.streams = admin.service(environment, "streams")
            tenant.token = admin.client_token(tenant.src, table="items")
            # Its own data: a shape (so a shape log exists) and a stream with two appends.
            shape = read_shape(
                f"{platform.url}/v1/shape",
                {"table": "items", "source_id": tenant.src, "secret": tenant.source["secret"]},
            )
            assert shape.status_code == 200, shape.text
            tenant.handle = shape.headers["electric-handle"]
            auth = [("Authorization", f"Bearer {tenant.streams['secret']}")]
            path = f"/v1/stream/{tenant.svc}/log"
            text = [*auth, ("Content-Type", "text/plain")]
            made = raw_request(platform.port, "PUT", path, text, tenant.byte_marker.encode())
            assert made.status == 201, made
            more = raw_request(platform.port, "POST", path, text, b"|second")
            assert more.status in (200, 204), more
        yield World(platform, *databases)


# -- the attacks ------------------------------------------------------------------------------


@dataclass
class Attack:
    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Must be refused afterwards too: a path the attack may have created (a fork).
    then_absent: str | None = None


def bearer(value: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {value}")]


def forged(claims: dict, key: str) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def unsigned(claims: dict) -> str:
    return jwt.encode(claims, None, algorithm="none")


def fork(me: Tenant, name: str, source: str) -> Attack:
    path = f"/v1/stream/{me.svc}/{name}"
    headers = [*bearer(me.streams["secret"]), ("Stream-Forked-From", source)]
    return Attack("PUT", path, headers, then_absent=path)


Build = Callable[[Tenant, Tenant, int], Attack]

# Each builds one request from the attacker `me` against the victim `them`.
ATTACKS: dict[str, Build] = {
    # -- shapes: the other's source_id with my credentials --------------------------------
    "shape: their source_id, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: their source_id, my secret as api_secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}&api_secret={me.source['secret']}"
    ),
    "shape: their source_id, my Streams secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}&secret={me.streams['secret']}"
    ),
    "shape: their source_id, my client token in token=": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}&token={me.token}"
    ),
    "shape: their source_id, my client token as Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}", bearer(me.token)
    ),
    "shape: their source_id, my secret plus my token": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}&token={me.token}",
    ),
    "shape: their source_id, a wrong secret plus my token as Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}&secret=nope", bearer(me.token)
    ),
    "shape: their source_id, empty secret, my api_secret": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&secret=&api_secret={me.source['secret']}",
    ),
    "shape: their source_id, my secret, their id as api_secret": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}&api_secret={them.src}",
    ),
    "shape: source_id twice (mine, theirs), my secret": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={me.src}&source_id={them.src}&secret={me.source['secret']}",
    ),
    "shape: source_id twice (theirs, mine), my secret": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&source_id={me.src}&secret={me.source['secret']}",
    ),
    "shape: their source_id, secret twice (mine, theirs)": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}"
        f"&secret={me.source['secret']}&secret={them.source['secret']}",
    ),
    "shape: my source_id, secret twice (theirs, mine)": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={me.src}"
        f"&secret={them.source['secret']}&secret={me.source['secret']}",
    ),
    "shape: token twice (mine, a forged one for theirs)": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&token={me.token}&token="
        + forged({"iss": "fusebox", "sub": them.src, "exp": 4102444800}, me.source["secret"]),
    ),
    "shape: their source_id upper-cased, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src.upper()}&secret={me.source['secret']}"
    ),
    "shape: their source_id in mixed case, my secret": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src[:4]}{them.src[4:].upper()}"
        f"&secret={me.source['secret']}",
    ),
    "shape: my source_id upper-cased, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={me.src.upper()}&secret={me.source['secret']}"
    ),
    "shape: their source_id with a trailing newline, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}%0A&secret={me.source['secret']}"
    ),
    "shape: their source_id with a NUL, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.src}%00&secret={me.source['secret']}"
    ),
    "shape: trailing slash, their source_id, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape/?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: //v1/shape, their source_id, my secret": lambda me, them, port: Attack(
        "GET", f"//v1/shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: /v1/shape//, their source_id, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape//?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: /v1/x/../shape, their source_id, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/x/../shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: %-encoded path and %2F, their source_id, my secret": lambda me, them, port: Attack(
        "GET", f"/v1%2F%73hape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: %-encoded parameter name source%5Fid": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source%5Fid={them.src}&secret={me.source['secret']}"
    ),
    "shape: ;-joined source_ids": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={me.src};source_id={them.src}&secret={me.source['secret']}",
    ),
    "shape: source_id[] array syntax": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id[]={them.src}&secret={me.source['secret']}"
    ),
    "shape: their source_id in a header only": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&secret={me.source['secret']}",
        [("source_id", them.src), ("X-Source-Id", them.src)],
    ),
    "shape: a token re-signed by me claiming their source": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&"
        + query(
            token=forged(
                {"iss": "fusebox", "sub": them.src, "exp": 4102444800, "shape": {"table": "items"}},
                me.source["secret"],
            )
        ),
    ),
    "shape: an unsigned (alg none) token claiming their source": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&"
        + query(
            token=unsigned(
                {"iss": "fusebox", "sub": them.src, "exp": 4102444800, "shape": {"table": "items"}}
            )
        ),
    ),
    "shape: my token with its signature swapped onto their claims": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?{SHAPE}&source_id={them.src}&token="
        + forged({"iss": "fusebox", "sub": them.src, "exp": 4102444800}, "x" * 32).rsplit(".", 1)[0]
        + "."
        + me.token.rsplit(".", 1)[1],
    ),
    "shape: their handle and offset, their source_id, my secret": lambda me, them, port: Attack(
        "GET",
        f"/v1/shape?table=items&offset=0_0&handle={them.handle}"
        f"&source_id={them.src}&secret={me.source['secret']}",
    ),
    "shape: POST (subset) with their source_id, my secret": lambda me, them, port: Attack(
        "POST",
        f"/v1/shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}",
        [("Content-Type", "application/json")],
        b'{"where": "true", "order_by": "id", "limit": 10}',
    ),
    "shape: HEAD with their source_id, my secret": lambda me, them, port: Attack(
        "HEAD", f"/v1/shape?{SHAPE}&source_id={them.src}&secret={me.source['secret']}"
    ),
    "shape: DELETE their shape with my secret": lambda me, them, port: Attack(
        "DELETE",
        f"/v1/shape?table=items&handle={them.handle}&source_id={them.src}"
        f"&secret={me.source['secret']}",
    ),
    "shape: their Streams service id as source_id, my secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={them.svc}&secret={me.source['secret']}"
    ),
    # A wrong-type id with its own, valid secret: not a source, so 404 (not 503 forever).
    "shape: my Streams service id as source_id, its own secret": lambda me, them, port: Attack(
        "GET", f"/v1/shape?{SHAPE}&source_id={me.svc}&secret={me.streams['secret']}"
    ),
    # -- streams: the other's service with my credentials -----------------------------------
    "stream: their id in the path, my Bearer (GET)": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: their id in the path, my Bearer (HEAD)": lambda me, them, port: Attack(
        "HEAD", f"/v1/stream/{them.svc}/log", bearer(me.streams["secret"])
    ),
    "stream: their id in the path, my Bearer (POST append)": lambda me, them, port: Attack(
        "POST",
        f"/v1/stream/{them.svc}/log",
        [*bearer(me.streams["secret"]), ("Content-Type", "text/plain")],
        b"|intruder",
    ),
    "stream: their id in the path, my Bearer (PUT create)": lambda me, them, port: Attack(
        "PUT",
        f"/v1/stream/{them.svc}/planted",
        [*bearer(me.streams["secret"]), ("Content-Type", "text/plain")],
        b"planted",
        then_absent=f"/v1/stream/{them.svc}/planted",
    ),
    "stream: their id in the path, my Bearer (DELETE)": lambda me, them, port: Attack(
        "DELETE", f"/v1/stream/{them.svc}/log", bearer(me.streams["secret"])
    ),
    "stream: their id in the path, my Sync secret": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/log?offset=-1", bearer(me.source["secret"])
    ),
    "stream: their id in the path, my client token": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/log?offset=-1", bearer(me.token)
    ),
    "stream: their Sync source id in the path, my Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.src}/log?offset=-1", bearer(me.streams["secret"])
    ),
    # A wrong-type id with its own, valid secret: not a Streams service, so 404.
    "stream: my Sync source id in the path, its own secret": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{me.src}/log?offset=-1", bearer(me.source["secret"])
    ),
    "stream: //v1/stream/<theirs>": lambda me, them, port: Attack(
        "GET", f"//v1/stream/{them.svc}/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: /v1/stream//<theirs>": lambda me, them, port: Attack(
        "GET", f"/v1/stream//{them.svc}/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: /v1/stream/<mine>/../<theirs>/log": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{me.svc}/../{them.svc}/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: /v1/stream/<mine>/./../<theirs>/log": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}/./../{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: /v1/stream/<mine>/x/../../<theirs>/log": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}/x/../../{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: %2E%2E segment": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}/%2E%2E/{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: %2e%2e%2F in the stream name": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}/%2e%2e%2F{them.svc}%2Flog?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: ..%2F in the stream name": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}/..%2F{them.svc}%2Flog?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: %2F..%2F in the service id": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}%2F..%2F{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: %2E%2E as the service id": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/%2E%2E/v1/stream/{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: double-encoded %252E%252E": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}/%252E%252E/{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: their id with %2F before the name": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}%2Flog?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: the whole path %2F-encoded": lambda me, them, port: Attack(
        "GET", f"/v1%2Fstream%2F{them.svc}%2Flog?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: backslash dot-dot": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}\\..\\{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: %5C-encoded backslash dot-dot": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{me.svc}%5C..%5C{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: their id upper-cased, my Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc.upper()}/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: their id in mixed case, my Bearer": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{them.svc[:4]}{them.svc[4:].upper()}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: my id upper-cased, my Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{me.svc.upper()}/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: their id with a NUL, my Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}%00/log?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: trailing slash after their stream, my Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/log/?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: their service root with a trailing slash": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: their service root": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}?offset=-1", bearer(me.streams["secret"])
    ),
    "stream: absolute-form request target": lambda me, them, port: Attack(
        "GET",
        f"http://127.0.0.1:{port}/v1/stream/{them.svc}/log?offset=-1",
        bearer(me.streams["secret"]),
    ),
    "stream: an empty Bearer": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/log?offset=-1", [("Authorization", "Bearer ")]
    ),
    "stream: Bearer and nothing else": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{them.svc}/log?offset=-1", [("Authorization", "Bearer")]
    ),
    "stream: an empty Bearer on my own stream": lambda me, them, port: Attack(
        "GET", f"/v1/stream/{me.svc}/log?offset=-1", [("Authorization", "Bearer ")]
    ),
    "stream: my Bearer with extra spaces": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{them.svc}/log?offset=-1",
        [("Authorization", f"Bearer    {me.streams['secret']}   ")],
    ),
    "stream: my secret with a lower-case scheme": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{them.svc}/log?offset=-1",
        [("Authorization", f"bearer {me.streams['secret']}")],
    ),
    "stream: two Authorization headers (mine, junk)": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{them.svc}/log?offset=-1",
        [*bearer(me.streams["secret"]), ("Authorization", "Bearer junk")],
    ),
    "stream: my secret as Basic credentials": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{them.svc}/log?offset=-1",
        [("Authorization", f"Basic {me.streams['secret']}")],
    ),
    "stream: my secret in the query string": lambda me, them, port: Attack(
        "GET",
        f"/v1/stream/{them.svc}/log?offset=-1&secret={me.streams['secret']}"
        f"&token={me.streams['secret']}",
    ),
    # -- forks: one's own new stream, made from the other's data ------------------------------
    "fork: their stream by absolute path": lambda me, them, port: fork(
        me, "stolen-abs", f"/v1/stream/{them.svc}/log"
    ),
    "fork: their stream by full URL": lambda me, them, port: fork(
        me, "stolen-url", f"http://127.0.0.1:{port}/v1/stream/{them.svc}/log"
    ),
    "fork: their stream by URL with an upper-case scheme": lambda me, them, port: fork(
        me, "stolen-URL", f"HTTP://elsewhere/v1/stream/{them.svc}/log"
    ),
    "fork: their stream with surrounding spaces": lambda me, them, port: fork(
        me, "stolen-spaces", f"   /v1/stream/{them.svc}/log  "
    ),
    "fork: their stream by a relative ../ path": lambda me, them, port: fork(
        me, "stolen-rel", f"../{them.svc}/log"
    ),
    "fork: their stream via my prefix and ..": lambda me, them, port: fork(
        me, "stolen-dots", f"/v1/stream/{me.svc}/../{them.svc}/log"
    ),
    "fork: their Sync source's shape registry": lambda me, them, port: fork(
        me, "stolen-registry", f"/__sync/{them.src}/shapes"
    ),
    "fork: their Sync source's shape log": lambda me, them, port: fork(
        me, "stolen-log", f"/__sync/{them.src}/logs/{them.handle}"
    ),
    "fork: their shape log by full URL": lambda me, them, port: fork(
        me, "stolen-log-url", f"http://127.0.0.1:{port}/__sync/{them.src}/logs/{them.handle}"
    ),
    "fork: my own Sync source's shape log": lambda me, them, port: fork(
        me, "own-log", f"/__sync/{me.src}/logs/{me.handle}"
    ),
}


def directions(world: World) -> dict[str, tuple[Tenant, Tenant]]:
    return {"a-attacks-b": (world.a, world.b), "b-attacks-a": (world.b, world.a)}


@pytest.mark.parametrize("direction", ["a-attacks-b", "b-attacks-a"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_refused_and_leaks_nothing(world: World, name: str, direction: str) -> None:
    me, them = directions(world)[direction]
    attack = ATTACKS[name](me, them, world.port)
    reply = raw_request(world.port, attack.method, attack.target, attack.headers, attack.body)
    assert reply.status in REFUSED, (reply.status, reply.body[:500])
    assert them.leaked_into(reply) == [], reply.raw[:500]
    if attack.then_absent is not None:
        after = raw_request(
            world.port, "GET", attack.then_absent + "?offset=-1", bearer(me.streams["secret"])
        )
        after_theirs = raw_request(
            world.port, "GET", attack.then_absent + "?offset=-1", bearer(them.streams["secret"])
        )
        for check in (after, after_theirs):
            assert check.status in (401, 404), (check.status, check.body[:300])
            assert them.leaked_into(check) == []


def test_forks_of_ones_own_streams_still_work(world: World) -> None:
    """The fork check refuses only sources outside the service: every way of naming one's
    own stream (relative, absolute, full URL) still forks it."""
    for me, _ in directions(world).values():
        for source in (
            "log",
            f"/v1/stream/{me.svc}/log",
            f"http://127.0.0.1:{world.port}/v1/stream/{me.svc}/log",
        ):
            copy = f"/v1/stream/{me.svc}/copy-{uuid.uuid4().hex[:8]}"
            headers = [*bearer(me.streams["secret"]), ("Stream-Forked-From", source)]
            made = raw_request(world.port, "PUT", copy, headers)
            assert made.status == 201, (source, made)
            read = raw_request(world.port, "GET", copy + "?offset=-1", bearer(me.streams["secret"]))
            assert read.status == 200 and read.body == me.stream_bytes, (source, read)


def test_a_subscription_cannot_link_the_other_tenants_streams(world: World) -> None:
    """`__ds` subscriptions name streams relative to the service: every spelling of the
    other tenant's stream is a stream that does not exist here."""
    for me, them in directions(world).values():
        names = [
            f"../{them.svc}/log",
            f"/v1/stream/{them.svc}/log",
            f"v1/stream/{them.svc}/log",
            f"%2E%2E/{them.svc}/log",
        ]
        body = {"type": "pull-wake", "wake_stream": "wake", "streams": [*names, "missing", "log"]}
        sub = f"/v1/stream/{me.svc}/__ds/subscriptions/sub-{uuid.uuid4().hex[:6]}"
        auth = [*bearer(me.streams["secret"]), ("Content-Type", "application/json")]
        made = raw_request(world.port, "PUT", sub, auth, json.dumps(body).encode())
        assert made.status in (201, 400), made
        assert them.leaked_into(made) == []
        if made.status == 201:
            links = {s["path"]: s["acked_offset"] for s in made.json()["streams"]}
            # An existing stream (its own `log`) is linked at its tail; every spelling of the
            # other's stream is linked like a stream that does not exist.
            assert links["log"] != links["missing"]
            assert {links[n.strip("/")] for n in names if n.strip("/") in links} <= {
                links["missing"]
            }
        shown = raw_request(world.port, "GET", sub, bearer(me.streams["secret"]))
        assert them.leaked_into(shown) == []
        # And with the other's bearer, the subscription is not there to see.
        other = raw_request(world.port, "GET", sub, bearer(them.streams["secret"]))
        assert other.status in REFUSED and me.leaked_into(other) == []


def test_preflights_and_health_name_no_tenant(world: World) -> None:
    """What answers without credentials says nothing about anyone's services or data."""
    for path in (
        f"/v1/stream/{world.b.svc}/log",
        f"/v1/shape?source_id={world.b.src}",
        "/v1/health",
    ):
        method = "GET" if path == "/v1/health" else "OPTIONS"
        reply = raw_request(world.port, method, path)
        assert reply.status in (200, 204), reply
        for tenant in (world.a, world.b):
            assert tenant.leaked_into(reply) == []
            for service_id in (tenant.src, tenant.svc):
                assert service_id not in reply.body.decode("latin-1"), (path, reply.body)


def test_each_tenant_still_reads_exactly_its_own_data(world: World) -> None:
    """After every attack (appends, deletes, creates and forks among them)."""
    for me, them in directions(world).values():
        # Shapes: by secret and by client token, exactly its own rows.
        for credential in ({"secret": me.source["secret"]}, {"token": me.token}):
            reply = raw_request(
                world.port,
                "GET",
                f"/v1/shape?{SHAPE}&source_id={me.src}&{query(**credential)}",
            )
            assert reply.status == 200, reply
            rows = sorted(shape_rows(reply.body), key=lambda row: row["id"])
            assert rows == me.rows
            assert them.leaked_into(reply) == []
        # Streams: exactly its own bytes, untouched by the other's appends and deletes.
        reply = raw_request(
            world.port, "GET", f"/v1/stream/{me.svc}/log?offset=-1", bearer(me.streams["secret"])
        )
        assert reply.status == 200, reply
        assert reply.body == me.stream_bytes
        assert them.leaked_into(reply) == []


def test_server_log_has_no_errors(world: World) -> None:
    """None of the above made the server log an unhandled error."""
    log = Path(world.platform.log_path).read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
