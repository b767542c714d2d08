"""Crash recovery of a real server process under concurrent load.

Many concurrent connections append to several streams (byte, text and JSON streams, a
fork, a stream that gets closed mid-load, and a stream written by idempotent producers).
Every acknowledged append is recorded with its body and returned Stream-Next-Offset. The
server is then SIGKILLed mid-load and restarted on the same data directory, several times,
and after every restart the whole history is checked:

- every acknowledged append is readable at exactly its offset (the bytes just before its
  returned offset are its body), and offsets never move (content only ever grows);
- a stream's bytes are a concatenation of whole append bodies, each sent at most once, none
  of them refused; nothing torn or foreign sits inside them;
- producer state survives: retrying the last acknowledged Producer-Seq is a 204 duplicate,
  the next seq is accepted, and a superseded epoch stays fenced;
- closed state, forks and soft-deleted fork sources survive.

SIGKILL stops the process, not the machine: page-cache writes survive it. Torn WAL tails
(as after a power cut) are covered in test_engine.py.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from conftest import StreamsProcess

PREFIX = "/v1/stream/"
_TOKEN = re.compile(rb"<[^<>]*>")
# Makes every append body unique across all rounds of a test.
_SERIAL = itertools.count()


def position(offset: str) -> int:
    """Our offsets end in the byte position (the format is ours; clients treat it as opaque)."""
    return int(offset.rsplit("_", 1)[1])


def offset_at(position: int) -> str:
    return f"{0:016d}_{position:016d}"


@dataclass
class Model:
    """What we know about one stream: everything sent, acknowledged or refused."""

    name: str
    content_type: str = "application/octet-stream"
    # Fork of (source name, fork position); inherited bytes come first.
    fork_of: tuple[str, int] | None = None
    sent: set[bytes] = field(default_factory=set)
    # (end position from Stream-Next-Offset, framed body) of every acknowledged append.
    acked: list[tuple[int, bytes]] = field(default_factory=list)
    refused: set[bytes] = field(default_factory=set)
    closed_at: int | None = None
    soft_deleted: bool = False
    # Content seen at the last verification: content only ever grows.
    content: bytes = b""

    @property
    def path(self) -> str:
        return PREFIX + self.name

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"

    @property
    def base(self) -> int:
        return self.fork_of[1] if self.fork_of else 0

    def body(self, tag: str, size: int | None = None) -> tuple[bytes, bytes]:
        """A unique body for an append and its framed (stored) form."""
        pad = "x" * (random.randint(0, 300) if size is None else size)
        if self.is_json:
            body = f'{{"t":"{self.name}|{tag}|{pad}"}}'.encode()
            return body, body + b",\n"
        body = f"<{self.name}|{tag}|{pad}>".encode()
        return body, body

    def tokens(self, own: bytes) -> list[bytes]:
        if self.is_json:
            pieces = own.split(b",\n")
            assert pieces[-1] == b"", f"{self.name}: JSON content does not end on a message"
            return [piece + b",\n" for piece in pieces[:-1]]
        return _TOKEN.findall(own)


@dataclass
class ProducerModel:
    id: str
    epoch: int = 0
    last_acked: int = -1
    # A request sent but not answered (the server died): (seq, framed body).
    in_flight: tuple[int, bytes] | None = None
    fenced_epochs: list[int] = field(default_factory=list)
    # Set by the test; the producer moves to the next epoch before its next request.
    bump_requested: bool = False


@dataclass
class Ledger:
    models: dict[str, Model]
    producers: list[ProducerModel]
    producer_stream: str

    def model(self, name: str) -> Model:
        return self.models[name]


class Load:
    """Concurrent writers against one server run, until the server goes away."""

    def __init__(self, server: StreamsProcess, ledger: Ledger, targets: list[str]) -> None:
        self.server = server
        self.ledger = ledger
        self.targets = targets
        self.acks = 0
        self.acked_event = asyncio.Event()
        self.client = httpx.AsyncClient(
            base_url=server.url,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            timeout=30,
        )

    @staticmethod
    def _tag(prefix: str) -> str:
        return f"{prefix}{next(_SERIAL)}"

    def _acked(self) -> None:
        self.acks += 1
        self.acked_event.set()

    async def until_acks(self, count: int) -> None:
        while self.acks < count:
            self.acked_event.clear()
            await self.acked_event.wait()

    async def writer(self, worker: int) -> None:
        while True:
            model = self.ledger.model(random.choice(self.targets))
            body, framed = model.body(self._tag(f"w{worker}-"))
            model.sent.add(framed)
            try:
                response = await self.client.post(
                    model.path, content=body, headers={"content-type": model.content_type}
                )
            except httpx.TransportError:
                return  # the server died: this append may or may not be durable
            if response.status_code == 204:
                model.acked.append((position(response.headers["stream-next-offset"]), framed))
                self._acked()
            elif response.status_code == 409 and response.headers.get("stream-closed") == "true":
                model.refused.add(framed)
            else:
                raise AssertionError(
                    f"append to {model.name}: {response.status_code} {response.text}"
                )

    async def producer(self, producer: ProducerModel) -> None:
        model = self.ledger.model(self.ledger.producer_stream)
        while True:
            if producer.bump_requested:
                producer.fenced_epochs.append(producer.epoch)
                producer.epoch += 1
                producer.last_acked = -1
                producer.bump_requested = False
            seq = producer.last_acked + 1
            body, framed = model.body(f"{producer.id}-e{producer.epoch}-s{seq}")
            model.sent.add(framed)
            producer.in_flight = (seq, framed)
            try:
                response = await self.client.post(
                    model.path,
                    content=body,
                    headers={
                        "content-type": model.content_type,
                        "producer-id": producer.id,
                        "producer-epoch": str(producer.epoch),
                        "producer-seq": str(seq),
                    },
                )
            except httpx.TransportError:
                return
            assert response.status_code == 200, (response.status_code, response.text)
            assert response.headers["producer-seq"] == str(seq)
            assert response.headers["producer-epoch"] == str(producer.epoch)
            model.acked.append((position(response.headers["stream-next-offset"]), framed))
            producer.last_acked = seq
            producer.in_flight = None
            self._acked()

    async def run(self, writers: int, kill_after: int, events: Callable[[Load], object]) -> None:
        """Run the load; `events(load)` runs alongside it; SIGKILL after `kill_after` acks."""
        tasks = [asyncio.create_task(self.writer(i)) for i in range(writers)]
        tasks += [asyncio.create_task(self.producer(p)) for p in self.ledger.producers]
        try:
            side = events(self)
            if asyncio.iscoroutine(side):
                await side
            await self.until_acks(kill_after)
            self.server.kill()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.client.aclose()


async def read_framed(client: httpx.AsyncClient, model: Model) -> bytes:
    """All of a stream's bytes as stored (JSON responses turned back into framed bytes)."""
    offset = "-1"
    parts = []
    while True:
        response = await client.get(model.path, params={"offset": offset})
        assert response.status_code == 200, (model.name, response.status_code, response.text)
        body = response.content
        if model.is_json:
            assert body[:1] == b"[" and body[-1:] == b"]", body[:100]
            inner = body[1:-1]
            parts.append(inner + b",\n" if inner else b"")
        else:
            parts.append(body)
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            return b"".join(parts)


async def verify(server: StreamsProcess, ledger: Ledger) -> None:
    """Check every stream against the ledger after a restart."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        # Parents before forks, so inherited bytes can be compared.
        for model in sorted(ledger.models.values(), key=lambda m: m.fork_of is not None):
            await verify_stream(client, ledger, model)
        await verify_producers(client, ledger)


async def verify_stream(client: httpx.AsyncClient, ledger: Ledger, model: Model) -> None:
    head = await client.head(model.path)
    if model.soft_deleted:
        assert head.status_code == 410, (model.name, head.status_code)
        assert (await client.get(model.path, params={"offset": "-1"})).status_code == 410
        return
    assert head.status_code == 200, (model.name, head.status_code)
    assert head.headers["content-type"] == model.content_type
    content = await read_framed(client, model)
    tail = position(head.headers["stream-next-offset"])
    assert tail == len(content), (model.name, tail, len(content))
    # Bytes at a position never change: what we saw before is still a prefix.
    assert content.startswith(model.content), f"{model.name}: earlier content changed"
    if model.fork_of is not None:
        source = ledger.model(model.fork_of[0])
        assert content[: model.base] == source.content[: model.base], f"{model.name} inherited"
    own = content[model.base :]
    tokens = model.tokens(own)
    assert b"".join(tokens) == own, f"{model.name}: bytes that are no append body"
    assert len(set(tokens)) == len(tokens), f"{model.name}: an append stored twice"
    unknown = set(tokens) - model.sent
    assert not unknown, f"{model.name}: bodies never sent: {sorted(unknown)[:3]}"
    assert not set(tokens) & model.refused, f"{model.name}: a refused append is stored"
    ends = [end for end, _ in model.acked]
    assert len(set(ends)) == len(ends), f"{model.name}: two appends acknowledged one offset"
    for end, framed in model.acked:
        assert content[end - len(framed) : end] == framed, f"{model.name}: ack at {end} moved"
    # Offsets are still valid read positions: reading from one returns the rest exactly.
    for end, _ in random.sample(model.acked, min(20, len(model.acked))):
        response = await client.get(model.path, params={"offset": offset_at(end)})
        assert response.status_code == 200
        rest = response.content
        if model.is_json:
            rest = rest[1:-1] + b",\n" if rest != b"[]" else b""
        assert rest == content[end : end + len(rest)], f"{model.name}: read from {end}"
        if response.headers.get("stream-up-to-date") == "true":
            assert end + len(rest) == len(content)
        else:
            assert rest, f"{model.name}: an empty chunk before the tail"
    if model.closed_at is not None:
        assert head.headers.get("stream-closed") == "true", f"{model.name} reopened"
        assert len(content) == model.closed_at
        refused = await client.post(
            model.path,
            content=model.body("after-restart")[0],
            headers={"content-type": model.content_type},
        )
        assert refused.status_code == 409
        assert refused.headers["stream-closed"] == "true"
        assert position(refused.headers["stream-next-offset"]) == model.closed_at
    else:
        assert "stream-closed" not in head.headers, f"{model.name} closed itself"
    model.content = content


async def verify_producers(client: httpx.AsyncClient, ledger: Ledger) -> None:
    """Producer state survived: duplicates are recognised and the next seq is accepted."""
    model = ledger.model(ledger.producer_stream)
    stored = set(model.tokens(model.content))

    async def send(producer: ProducerModel, epoch: int, seq: int, body: bytes) -> httpx.Response:
        return await client.post(
            model.path,
            content=body,
            headers={
                "content-type": model.content_type,
                "producer-id": producer.id,
                "producer-epoch": str(epoch),
                "producer-seq": str(seq),
            },
        )

    for producer in ledger.producers:
        for stale in producer.fenced_epochs:
            fenced = await send(producer, stale, 0, model.body("zombie")[0])
            assert fenced.status_code == 403, (producer.id, fenced.status_code)
            assert fenced.headers["producer-epoch"] == str(producer.epoch)
        if producer.last_acked >= 0:
            acked_body = next(
                framed
                for _, framed in model.acked
                if f"|{producer.id}-e{producer.epoch}-s{producer.last_acked}|".encode() in framed
            )
            retry = await send(producer, producer.epoch, producer.last_acked, acked_body)
            assert retry.status_code == 204, (producer.id, retry.status_code, retry.text)
            assert int(retry.headers["producer-seq"]) >= producer.last_acked
        if producer.in_flight is not None:
            seq, framed = producer.in_flight
            retry = await send(producer, producer.epoch, seq, framed)
            # Durable before the crash (a duplicate) or not (accepted now): both are right,
            # and which one must match what the stream holds.
            if framed in stored:
                assert retry.status_code == 204, (producer.id, "in-flight was stored")
            else:
                assert retry.status_code == 200, (producer.id, retry.status_code, retry.text)
                model.acked.append((position(retry.headers["stream-next-offset"]), framed))
            producer.last_acked = seq
            producer.in_flight = None
        seq = producer.last_acked + 1
        body, framed = model.body(f"{producer.id}-e{producer.epoch}-s{seq}")
        model.sent.add(framed)
        accepted = await send(producer, producer.epoch, seq, body)
        assert accepted.status_code == 200, (producer.id, accepted.status_code, accepted.text)
        model.acked.append((position(accepted.headers["stream-next-offset"]), framed))
        producer.last_acked = seq
        gap = await send(producer, producer.epoch, seq + 2, model.body("gap")[0])
        assert gap.status_code == 409
        assert gap.headers["producer-expected-seq"] == str(seq + 1)


async def create(
    client: httpx.AsyncClient, model: Model, headers: dict[str, str] | None = None
) -> httpx.Response:
    response = await client.put(
        model.path, headers={"content-type": model.content_type, **(headers or {})}
    )
    assert response.status_code == 201, (model.name, response.status_code, response.text)
    return response


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_kill_and_restart_under_concurrent_load(
    server_factory: Callable[..., StreamsProcess],
) -> None:
    random.seed(20261204)
    server: StreamsProcess = server_factory().start()
    names = ["b0", "b1", "b2", "t0", "j0"]
    models = {name: Model(name) for name in names}
    models["t0"].content_type = "text/plain"
    models["j0"].content_type = "application/json"
    models["closing"] = Model("closing")
    models["source"] = Model("source")
    models["prod"] = Model("prod", content_type="text/plain")
    producers = [ProducerModel(f"p{i}") for i in range(4)]
    ledger = Ledger(models, producers, "prod")

    async def setup() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for model in list(models.values()):
                await create(client, model)
            # A fork source with some history, forked in the middle.
            source = models["source"]
            for i in range(10):
                body, framed = source.body(f"setup{i}")
                source.sent.add(framed)
                response = await client.post(
                    source.path, content=body, headers={"content-type": source.content_type}
                )
                assert response.status_code == 204
                source.acked.append((position(response.headers["stream-next-offset"]), framed))
            fork_point = source.acked[4][0]
            fork = Model("fork-of-source", fork_of=("source", fork_point))
            models[fork.name] = fork
            await create(
                client,
                fork,
                {"stream-forked-from": source.path, "stream-fork-offset": offset_at(fork_point)},
            )

    run(setup())
    targets = [*names, "closing", "fork-of-source"]

    async def round_one_events(load: Load) -> None:
        # Fork a stream that is being written, at an acknowledged offset, mid-load.
        await load.until_acks(300)
        b0 = models["b0"]
        fork_point = max((end for end, _ in b0.acked), default=0)
        fork = Model("fork-of-b0", fork_of=("b0", fork_point))
        response = await load.client.put(
            fork.path,
            headers={
                "content-type": fork.content_type,
                "stream-forked-from": b0.path,
                "stream-fork-offset": offset_at(fork_point),
            },
        )
        assert response.status_code == 201, response.text
        models[fork.name] = fork
        load.targets.append(fork.name)
        # Close a stream that is being written, mid-load.
        await load.until_acks(600)
        closing = models["closing"]
        response = await load.client.post(closing.path, headers={"stream-closed": "true"})
        assert response.status_code == 204, response.text
        closing.closed_at = position(response.headers["stream-next-offset"])

    async def round_two_events(load: Load) -> None:
        await load.until_acks(200)
        # Soft-delete the fork source: its fork keeps reading the inherited bytes.
        response = await load.client.delete(models["source"].path)
        assert response.status_code == 204
        models["source"].soft_deleted = True
        # A producer restarts with a new epoch; its old epoch is fenced from now on.
        await load.until_acks(400)
        producers[0].bump_requested = True

    def no_events(load: Load) -> None:
        return None

    rounds = [round_one_events, round_two_events, no_events, no_events]
    for number, events in enumerate(rounds):
        run(Load(server, ledger, targets).run(writers=48, kill_after=800, events=events))
        server.start()
        run(verify(server, ledger))
        assert all(m.acked for m in models.values() if not m.soft_deleted), number
        if number == 1:
            assert producers[0].epoch == 1 and producers[0].fenced_epochs == [0]

    # Deleting the last fork of a soft-deleted source collects the source too, durably.
    async def delete_fork() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.delete(models["fork-of-source"].path)).status_code == 204

    run(delete_fork())
    server.kill()
    server.start()
    gone = httpx.head(server.url + models["source"].path)
    assert gone.status_code == 404
    assert httpx.head(server.url + models["fork-of-source"].path).status_code == 404
    del models["source"], models["fork-of-source"]
    run(verify(server, ledger))
    # And a clean stop after all that recovers the same state.
    server.stop()
    server.start()
    run(verify(server, ledger))


def snapshots(server: StreamsProcess) -> list[int]:
    return sorted(int(p.name.split(".")[0]) for p in (server.data_dir / "wal").glob("*.snapshot"))


def test_wal_checkpoint_under_load_then_clean_stop_and_kill(
    server_factory: Callable[..., StreamsProcess],
) -> None:
    """Write past a WAL segment (64 MiB) so the server checkpoints mid-run, then recover.

    The checkpoint size has no CLI flag, so this writes real volume: about 70 MiB through
    the WAL in appends just under 1 MiB, and every fourth append of 2 MiB, which goes to
    its data file directly (only its length is logged).
    """
    random.seed(7)
    server: StreamsProcess = server_factory().start()
    models = {name: Model(name) for name in ("big", "small0", "small1")}
    models["js"] = Model("js", content_type="application/json")
    models["prod"] = Model("prod", content_type="text/plain")
    producers = [ProducerModel("p0"), ProducerModel("p1")]
    ledger = Ledger(models, producers, "prod")
    first_snapshot = snapshots(server)[-1]

    async def setup() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for model in models.values():
                await create(client, model)

    run(setup())

    async def write_big(load: Load, first: int, count: int) -> None:
        big = models["big"]
        semaphore = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with semaphore:
                size = 2 * 1024 * 1024 if i % 4 == 3 else 1000 * 1024
                body, framed = big.body(f"big{i}", size=size)
                big.sent.add(framed)
                response = await load.client.post(
                    big.path, content=body, headers={"content-type": big.content_type}
                )
                assert response.status_code == 204, response.text
                big.acked.append((position(response.headers["stream-next-offset"]), framed))

        await asyncio.gather(*(one(i) for i in range(first, first + count)))

    async def checkpoint_mid_load(load: Load) -> None:
        await write_big(load, 0, 96)
        # The WAL rolled past 64 MiB: a checkpoint snapshot for a later segment appears.
        for _ in range(600):
            if snapshots(server)[-1] > first_snapshot:
                break
            await asyncio.sleep(0.05)
        assert snapshots(server)[-1] > first_snapshot, "no checkpoint after 72 MiB"
        load.acks = 0

    targets = ["small0", "small1", "js"]
    # Load with a big writer; after the checkpoint, 800 more acks, then SIGKILL.
    run(Load(server, ledger, targets).run(writers=16, kill_after=800, events=checkpoint_mid_load))
    wal_files = sorted(p.name for p in (server.data_dir / "wal").glob("*.wal"))
    assert all(int(name.split(".")[0]) > first_snapshot for name in wal_files), wal_files
    server.start()
    run(verify(server, ledger))
    assert len(models["big"].content) >= 72 * 1024 * 1024

    # A clean stop checkpoints; the restart recovers from that snapshot alone.
    async def more(load: Load) -> None:
        await write_big(load, 96, 3)

    load = Load(server, ledger, targets)

    async def load_then_stop() -> None:
        tasks = [asyncio.create_task(load.writer(i)) for i in range(8)]
        await more(load)
        await load.until_acks(300)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await load.client.aclose()

    run(load_then_stop())
    # Cancelled writers may have had appends in flight; they count as unacknowledged.
    server.stop()
    server.start()
    run(verify(server, ledger))
    server.kill()
    server.start()
    run(verify(server, ledger))
