"""The PyPI client `durable-streams` (sync and async) against a real Fusebox server.

Each test drives the published client the way an application would: create, append,
catch-up reads, a long-poll that is woken by an append made while it waits, SSE (text and
JSON; the client refuses SSE for binary streams, so base64 SSE is covered by the Node
client suite), and JSON streams. Byte-exact results are checked against what was written.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from durable_streams import (
    AsyncDurableStream,
    DurableStream,
    SeqConflictError,
    StreamExistsError,
    StreamNotFoundError,
    astream,
    stream,
)

from conftest import StreamsProcess, streams_process

# Long enough that a long-poll reliably parks on the server before the append arrives.
LIVE_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsProcess]:
    """A server whose long-polls wait LIVE_TIMEOUT seconds before answering 204."""
    server = streams_process(
        tmp_path_factory.mktemp("live") / "data", long_poll_timeout=LIVE_TIMEOUT
    ).start()
    try:
        yield server
    finally:
        server.stop()


def new_url(server: StreamsProcess, prefix: str = "py") -> str:
    return f"{server.url}/v1/stream/{prefix}-{uuid.uuid4().hex[:12]}"


def raw_read(url: str, offset: str = "-1") -> httpx.Response:
    response = httpx.get(url, params={"offset": offset})
    assert response.status_code == 200, response.text
    return response


def position(offset: str) -> int:
    """Offsets are opaque, but ours end in the byte position; used only to compare order."""
    return int(offset.rsplit("_", 1)[1])


def close_stream(url: str) -> None:
    response = httpx.post(url, headers={"Stream-Closed": "true"})
    assert response.status_code == 204, response.text
    assert response.headers["stream-closed"] == "true"


def in_thread(target: Any) -> tuple[threading.Thread, queue.Queue[Any]]:
    """Run `target()` in a thread; its result (or exception) lands in the returned queue."""
    results: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            results.put(target())
        except BaseException as exc:  # handed to the test thread
            results.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def result_of(results: queue.Queue[Any], timeout: float = 30.0) -> Any:
    value = results.get(timeout=timeout)
    if isinstance(value, BaseException):
        raise value
    return value


# -- sync API --------------------------------------------------------------------------------


def test_create_append_and_catch_up_bytes(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    with DurableStream.create(url, content_type="application/octet-stream") as handle:
        head = handle.head()
        assert head.content_type == "application/octet-stream"
        assert position(head.offset or "") == 0
        parts = [b"\x00\x01\x02", bytes(range(256)), b"tail\xff"]
        offsets = [handle.append(part).next_offset for part in parts]
        # Each acknowledged offset is the byte length written so far.
        expected_positions = [3, 259, 264]
        assert [position(o) for o in offsets] == expected_positions
        with handle.stream(live=False) as res:
            assert res.read_bytes() == b"".join(parts)
            assert res.offset == offsets[-1]
            assert res.up_to_date
        # Resume from each acknowledged offset: the rest of the stream, exactly.
        for index, offset in enumerate(offsets):
            with handle.stream(offset=offset, live=False) as res:
                assert res.read_bytes() == b"".join(parts[index + 1 :])
        assert handle.head().offset == offsets[-1]


def test_create_is_idempotent_and_conflicts_are_reported(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    DurableStream.create(url, content_type="text/plain", body="first").close()
    # Same configuration: an idempotent success, and the initial body is not re-applied.
    DurableStream.create(url, content_type="text/plain").close()
    with pytest.raises(StreamExistsError):
        DurableStream.create(url, content_type="application/json")
    with DurableStream.connect(url) as handle:
        assert handle.content_type == "text/plain"
        with handle.stream(live=False) as res:
            assert res.read_text() == "first"


def test_connect_and_delete(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    with pytest.raises(StreamNotFoundError):
        DurableStream.connect(url)
    DurableStream.create(url, content_type="text/plain").close()
    head = DurableStream.head_static(url)
    assert head.exists and head.content_type == "text/plain"
    DurableStream.delete_static(url)
    with pytest.raises(StreamNotFoundError):
        DurableStream.head_static(url)
    with pytest.raises(StreamNotFoundError), stream(url, live=False) as res:
        res.read_bytes()


def test_stream_seq_conflict(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    with DurableStream.create(url, content_type="text/plain", batching=False) as handle:
        handle.append("a", seq="0001")
        handle.append("b", seq="0002")
        with pytest.raises(SeqConflictError):
            handle.append("c", seq="0002")
        with pytest.raises(SeqConflictError):
            handle.append("c", seq="0001")
        handle.append("c", seq="0010")
        with handle.stream(live=False) as res:
            assert res.read_text() == "abc"


def test_text_catch_up_with_events_and_offsets(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    with DurableStream.create(url, content_type="text/plain; charset=utf-8") as handle:
        first = handle.append("héllo ").next_offset
        handle.append("wörld ✓")
        with handle.stream(offset=first, live=False) as res:
            events = list(res.iter_events(mode="text"))
        assert "".join(e.data for e in events) == "wörld ✓"
        assert events[-1].up_to_date
        assert events[-1].next_offset == handle.head().offset


def test_long_poll_receives_an_append_made_while_waiting(live_server: StreamsProcess) -> None:
    url = new_url(live_server)
    with DurableStream.create(url, content_type="text/plain", body="before|") as handle:
        tail = handle.head().offset
        assert tail is not None

        def read_next() -> tuple[str, str]:
            with stream(url, offset=tail, live="long-poll", timeout=LIVE_TIMEOUT * 3) as res:
                for event in res.iter_events(mode="text"):
                    return event.data, event.next_offset
            raise AssertionError("the live read ended without data")

        thread, results = in_thread(read_next)
        # Give the request time to reach the server and park (not asserted: either order
        # must deliver the append).
        time.sleep(0.5)
        appended = handle.append("during").next_offset
        data, next_offset = result_of(results)
        thread.join()
        assert data == "during"
        assert next_offset == appended
        with handle.stream(live=False) as res:
            assert res.read_text() == "before|during"


def test_long_poll_iteration_follows_several_appends(
    core_server: StreamsProcess,
) -> None:
    """With a short server timeout the client sees 204s in between and keeps polling."""
    url = new_url(core_server)
    handle = DurableStream.create(url, content_type="application/octet-stream", batching=False)
    parts = [f"chunk-{i};".encode() for i in range(5)]

    def read_all() -> bytes:
        received = b""
        with stream(url, offset="-1", live="long-poll") as res:
            for chunk in res:
                received += chunk
                if len(received) == sum(map(len, parts)):
                    return received
        return received

    thread, results = in_thread(read_all)
    for part in parts:
        handle.append(part)
        time.sleep(0.2)
    assert result_of(results) == b"".join(parts)
    thread.join()
    handle.close()


def test_sse_text_stream_live_until_closed(live_server: StreamsProcess) -> None:
    url = new_url(live_server)
    handle = DurableStream.create(url, content_type="text/plain", batching=False)
    handle.append("line one\n  line two\n")
    handle.append("third")
    events: queue.Queue[str] = queue.Queue()

    def read_sse() -> tuple[str, str]:
        received = []
        with stream(url, offset="-1", live="sse", timeout=LIVE_TIMEOUT * 3) as res:
            for text in res.iter_text():
                received.append(text)
                events.put(text)
            # The server ends the SSE response after the final control event of a closed
            # stream; the client then stops.
            return "".join(received), res.offset

    thread, results = in_thread(read_sse)
    # Lines that start with spaces keep them (SSE parsers strip one space after `data:`).
    assert events.get(timeout=30) == "line one\n  line two\nthird"
    handle.append(" and a live one")
    assert events.get(timeout=30) == " and a live one"
    close_stream(url)
    text, offset = result_of(results)
    thread.join()
    assert text == "line one\n  line two\nthird and a live one"
    assert offset == handle.head().offset
    handle.close()


def test_json_stream_append_and_read(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    with DurableStream.create(url, content_type="application/json", batching=False) as handle:
        handle.append({"n": 1, "text": "one"})
        handle.append([1, 2, 3])  # an array is one message: the client wraps it
        handle.append("a string")
        handle.append(None)
        handle.append({"nested": {"deep": [True, False, {"x": 'ü\n"'}]}})
        expected = [
            {"n": 1, "text": "one"},
            [1, 2, 3],
            "a string",
            None,
            {"nested": {"deep": [True, False, {"x": 'ü\n"'}]}},
        ]
        with handle.stream(live=False) as res:
            assert res.read_json() == expected
        # The wire format is a JSON array of the messages.
        assert raw_read(url).json() == expected
        # Resuming mid-stream starts on a message boundary.
        with handle.stream(live=False) as res:
            events = list(res.iter_events(mode="json"))
        assert [item for event in events for item in event.data] == expected


def test_json_batching_from_many_threads_keeps_every_message(core_server: StreamsProcess) -> None:
    url = new_url(core_server)
    handle = DurableStream.create(url, content_type="application/json")  # batching on
    threads = [
        threading.Thread(target=lambda i=i: [handle.append({"t": i, "k": k}) for k in range(20)])
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with handle.stream(live=False) as res:
        items = res.read_json()
    assert sorted((m["t"], m["k"]) for m in items) == [(i, k) for i in range(8) for k in range(20)]
    # Per thread, appends were acknowledged in order, so they are stored in order.
    for i in range(8):
        assert [m["k"] for m in items if m["t"] == i] == list(range(20))
    handle.close()


def test_json_sse_live(live_server: StreamsProcess) -> None:
    url = new_url(live_server)
    handle = DurableStream.create(url, content_type="application/json", batching=False)
    handle.append({"id": 1})
    handle.append({"id": 2})
    batches: queue.Queue[list[Any]] = queue.Queue()

    def read_sse() -> list[Any]:
        items: list[Any] = []
        with stream(url, offset="-1", live="sse", timeout=LIVE_TIMEOUT * 3) as res:
            for batch in res.iter_json_batches():
                items.extend(batch)
                batches.put(batch)
        return items

    thread, results = in_thread(read_sse)
    assert batches.get(timeout=30) == [{"id": 1}, {"id": 2}]
    handle.append({"id": 3, "text": "multi\nline"})
    assert batches.get(timeout=30) == [{"id": 3, "text": "multi\nline"}]
    close_stream(url)
    assert result_of(results) == [{"id": 1}, {"id": 2}, {"id": 3, "text": "multi\nline"}]
    thread.join()
    handle.close()


# -- async API ------------------------------------------------------------------------------


def test_async_create_append_catch_up(core_server: StreamsProcess) -> None:
    async def scenario() -> None:
        url = new_url(core_server, "pyasync")
        handle = await AsyncDurableStream.create(url, content_type="text/plain", batching=False)
        try:
            offsets = [(await handle.append(f"{i},")).next_offset for i in range(10)]
            assert [position(o) for o in offsets] == [2 * (i + 1) for i in range(10)]
            async with handle.stream(live=False) as res:
                assert await res.read_text() == "".join(f"{i}," for i in range(10))
            async with astream(url, offset=offsets[4], live=False) as res:
                assert await res.read_bytes() == b"".join(f"{i},".encode() for i in range(5, 10))
            head = await handle.head()
            assert head.offset == offsets[-1]
            with pytest.raises(StreamExistsError):
                await AsyncDurableStream.create(url, content_type="application/json")
            await handle.delete()
            with pytest.raises(StreamNotFoundError):
                await handle.head()
        finally:
            await handle.aclose()

    asyncio.run(scenario())


def test_async_concurrent_appends_are_batched_and_complete(core_server: StreamsProcess) -> None:
    async def scenario() -> None:
        url = new_url(core_server, "pyasync")
        handle = await AsyncDurableStream.create(url, content_type="application/json")
        try:
            await asyncio.gather(*(handle.append({"i": i}) for i in range(200)))
            async with handle.stream(live=False) as res:
                items = await res.read_json()
            assert sorted(item["i"] for item in items) == list(range(200))
        finally:
            await handle.aclose()

    asyncio.run(scenario())


def test_async_long_poll_receives_an_append_made_while_waiting(
    live_server: StreamsProcess,
) -> None:
    async def scenario() -> None:
        url = new_url(live_server, "pyasync")
        handle = await AsyncDurableStream.create(url, content_type="application/json")
        try:
            await handle.append({"before": True})
            tail = (await handle.head()).offset

            async def read_next() -> list[Any]:
                async with astream(
                    url, offset=tail, live="long-poll", timeout=LIVE_TIMEOUT * 3
                ) as res:
                    async for batch in res.iter_json_batches():
                        return batch
                raise AssertionError("the live read ended without data")

            reader = asyncio.create_task(read_next())
            await asyncio.sleep(0.5)
            assert not reader.done()
            await handle.append({"during": True})
            assert await asyncio.wait_for(reader, 30) == [{"during": True}]
        finally:
            await handle.aclose()

    asyncio.run(scenario())


def test_async_sse_text_and_json(live_server: StreamsProcess) -> None:
    async def scenario() -> None:
        text_url = new_url(live_server, "pyasync-sse")
        json_url = new_url(live_server, "pyasync-sse")
        text = await AsyncDurableStream.create(text_url, content_type="text/markdown")
        data = await AsyncDurableStream.create(json_url, content_type="application/json")
        try:
            await text.append("# Title\n")
            await data.append({"k": "v"})
            seen: asyncio.Queue[Any] = asyncio.Queue()

            async def read_text() -> str:
                parts = []
                async with astream(text_url, offset="-1", live="sse", timeout=30) as res:
                    async for part in res.iter_text():
                        parts.append(part)
                        await seen.put(("text", part))
                return "".join(parts)

            async def read_json() -> list[Any]:
                items = []
                async with astream(json_url, offset="-1", live="sse", timeout=30) as res:
                    async for item in res.iter_json():
                        items.append(item)
                        await seen.put(("json", item))
                return items

            readers = asyncio.gather(read_text(), read_json())
            first = dict([await asyncio.wait_for(seen.get(), 30) for _ in range(2)])
            assert first == {"text": "# Title\n", "json": {"k": "v"}}
            await text.append("body text")
            await data.append([{"a": 1}, {"b": 2}])
            await asyncio.to_thread(close_stream, text_url)
            await asyncio.to_thread(close_stream, json_url)
            text_result, json_result = await asyncio.wait_for(readers, 30)
            assert text_result == "# Title\nbody text"
            assert json_result == [{"k": "v"}, [{"a": 1}, {"b": 2}]]
        finally:
            await text.aclose()
            await data.aclose()

    asyncio.run(scenario())
