"""Where subscriptions persist: one JSON file in the data directory, replaced atomically.

It changes with subscription requests, wakes and newly linked streams, never with
every append, so it is rewritten whole: a temp file, fsync, rename and directory fsync,
so that a crash leaves the old state or the new one, never a torn one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from fusebox.streams.subscription_model import Subscription

log = logging.getLogger("fusebox.streams.subscriptions")

VERSION = 1


def load_state(path: Path) -> dict[str, Subscription]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    state = orjson.loads(raw)
    if state.get("version") != VERSION:
        raise RuntimeError(f"{path}: unknown subscriptions file version {state.get('version')!r}")
    return {entry["id"]: Subscription.from_json(entry) for entry in state["subscriptions"]}


def encode_state(subscriptions: dict[str, Subscription]) -> bytes:
    entries = [sub.to_json() for sub in subscriptions.values()]
    return orjson.dumps({"version": VERSION, "subscriptions": entries})


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, whole."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateWriter:
    """Writes the state file off the loop; `saved()` waits for a write covering its change.

    One task owns the file, so writes never overlap and a request cancelled mid-wait (its
    client left) cannot cut a write short. Changes made while a write is out ride on the
    next one, so a burst of changes costs two writes, not one each.
    """

    def __init__(self, path: Path, encode: Callable[[], bytes]) -> None:
        self._path = path
        self._encode = encode
        self._changes = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wanted = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def changed(self) -> None:
        self._changes += 1
        self._wanted.set()

    async def saved(self) -> None:
        self.changed()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((self._changes, waiter))
        await waiter

    async def close(self) -> None:
        if self._task is not None:
            self._closing = True
            self._wanted.set()
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while self._written < self._changes:
                target = self._changes
                data = self._encode()
                try:
                    await asyncio.to_thread(write_atomically, self._path, data)
                except OSError as exc:
                    log.exception("cannot write %s", self._path)
                    self._settle(target, exc)
                    break
                self._written = target
                self._settle(target, None)
            if self._closing:
                return

    def _settle(self, target: int, exc: OSError | None) -> None:
        remaining = []
        for change, waiter in self._waiters:
            if change > target:
                remaining.append((change, waiter))
            elif not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self._waiters = remaining
