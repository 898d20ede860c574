"""A real Manager over a real store, with short timings, for lifecycle tests."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from conveyor.manager import Manager, ManagerConfig
from conveyor.store import open_store

FAST = ManagerConfig(
    fetch_wait_seconds=0.2,
    scheduler_interval_seconds=0.01,
    reaper_interval_seconds=0.05,
    worker_reaper_interval_seconds=0.05,
    worker_timeout_seconds=0.3,
    dead_purge_interval_seconds=0.05,
)


def job(jobtype: str = "Thing", *args: Any, **fields: Any) -> dict[str, Any]:
    """A job dict with a fresh jid."""
    return {"jid": uuid.uuid4().hex, "jobtype": jobtype, "args": list(args), **fields}


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def decode(data: bytes | None) -> dict[str, Any]:
    assert data is not None
    result: dict[str, Any] = msgspec.json.decode(data)
    return result


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 3.0, interval: float = 0.005
) -> float:
    """Wait until ``check()`` is true; returns the seconds it took. Fails after ``within`` s."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within}s")
        await _sleep(interval)
    return time.monotonic() - started


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


MakeManager = Callable[..., Awaitable[Manager]]


@pytest.fixture
async def make_manager(tmp_path: Any) -> AsyncIterator[MakeManager]:
    managers: list[Manager] = []

    async def make(storage: str = "memory://", **overrides: Any) -> Manager:
        if storage == "sqlite":
            storage = f"sqlite:///{tmp_path}/manager-{len(managers)}.db"
        config = dataclasses.replace(FAST, **overrides)
        manager = Manager(open_store(storage), config)
        await manager.start()
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        await manager.stop()


@pytest.fixture(params=["memory", "sqlite"])
async def manager(request: pytest.FixtureRequest, make_manager: MakeManager) -> Manager:
    """A started manager over each local backend."""
    storage = "memory://" if request.param == "memory" else "sqlite"
    return await make_manager(storage)
