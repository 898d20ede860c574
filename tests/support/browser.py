"""Web dashboard test support: realistic data seeded through the manager, a dashboard served
by uvicorn on a loopback port, and one headless Debian Chromium per session (Playwright with
``executable_path``; Playwright never downloads a browser here)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from conveyor.manager import ClientInfo, Manager, ManagerConfig
from conveyor.store import open_store
from conveyor.store.base import SortedSet
from conveyor.timefmt import format_time

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

WEB_CONFIG = ManagerConfig(
    fetch_wait_seconds=0.05,
    scheduler_interval_seconds=0.05,
    reaper_interval_seconds=0.5,
)


@dataclass
class Seeded:
    """What ``seed`` created, for assertions."""

    queued: list[str]
    scheduled: list[str]
    retries: list[str]
    dead: list[str]
    busy: list[str]
    workers: list[str]
    clients: list[ClientInfo]


def job(jobtype: str, *args: Any, **fields: Any) -> bytes:
    return msgspec.json.encode(
        {"jid": uuid.uuid4().hex[:20], "jobtype": jobtype, "args": list(args), **fields}
    )


def jid_of(payload: bytes) -> str:
    return str(msgspec.json.decode(payload)["jid"])


async def _failed(manager: Manager, queue: str, jobtype: str, message: str, n: int) -> list[str]:
    """Push, fetch and fail ``n`` jobs: they land in retries with a failure and backtrace."""
    jids = []
    for i in range(n):
        payload = job(jobtype, i, {"user": f"user-{i}@example.com"}, queue=queue, retry=5)
        await manager.push(payload)
        fetched = await manager.fetch([queue], wait=0.01)
        assert fetched is not None
        jid = jid_of(fetched)
        backtrace = [f"app/jobs.py:{40 + i}:in `perform'", "lib/worker.py:118:in `run'"]
        await manager.fail(jid, "ConnectionError", f"{message} #{i}", backtrace)
        jids.append(jid)
    return jids


async def seed(manager: Manager) -> Seeded:
    """A small but realistic system: three queues (one paused), scheduled jobs, retries, dead
    jobs, two workers, one of them busy."""
    queued = []
    for queue, jobtype, count in (("default", "SendEmail", 12), ("critical", "ChargeCard", 4)):
        for i in range(count):
            payload = job(jobtype, f"order-{i}", i * 10, queue=queue)
            await manager.push(payload)
            queued.append(jid_of(payload))
    await manager.push(job("Rebuild", "search-index", queue="reports"))
    await manager.pause_queues(["reports"])
    scheduled = []
    for i in range(3):
        payload = job("Reminder", f"invoice-{i}", at=format_time(time.time() + 3600 * (i + 1)))
        await manager.push(payload)
        scheduled.append(jid_of(payload))
    retries = await _failed(manager, "mailers", "DeliverNewsletter", "SMTP timeout", 4)
    dead = await _failed(manager, "imports", "ImportCsv", "malformed row", 3)
    await manager.kill(SortedSet.RETRIES, dead)
    clients = [
        ClientInfo(wid="w-alpha", hostname="worker-1.internal", pid=4242, labels=["python", "io"]),
        ClientInfo(wid="w-beta", hostname="worker-2.internal", pid=5151, labels=["python"]),
    ]
    for client in clients:
        await manager.connect(client)
        await manager.beat(client.wid, 48_000, None)
    busy_payload = job("GenerateReport", "2026-Q3", queue="busy")
    await manager.push(busy_payload)
    assert await manager.fetch(["busy"], wid="w-alpha", wait=0.01) is not None
    return Seeded(
        queued, scheduled, retries, dead, [jid_of(busy_payload)], ["w-alpha", "w-beta"], clients
    )


@pytest.fixture
async def web_manager() -> AsyncIterator[Manager]:
    """A started manager over a MemoryStore, stopped afterwards."""
    manager = Manager(open_store("memory://"), WEB_CONFIG)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def wait_until(check: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.02)
