"""Web dashboard test support: realistic data seeded through the manager, a dashboard served
by uvicorn on a loopback port, and one headless Debian Chromium per session (Playwright with
``executable_path``; Playwright never downloads a browser here)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.manager import ClientInfo, Manager, ManagerConfig
from conveyor.store import open_store
from conveyor.store.base import SortedSet
from conveyor.timefmt import format_time
from conveyor.web import WebHandle, start_web
from tests.support.services import require_binary

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
    for i in range(9):  # some successes, so the history shows processed beside failed
        await manager.push(job("Thumbnail", f"img-{i}.png", queue="media"))
        done = await manager.fetch(["media"], wait=0.01)
        assert done is not None
        await manager.ack(jid_of(done))
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


@dataclass
class WebConfig:
    """The attributes ``start_web`` reads from the server's config."""

    web_bind: str = "127.0.0.1:0"
    password: str | None = None
    web_read_only: bool = False
    web_root_path: str = ""
    web_poll_seconds: float = 0.3


class LiveDashboard:
    """A manager and the dashboard served by uvicorn on a loopback port, in a thread with its
    own event loop, so that sync Playwright can drive a browser from the test's thread."""

    def __init__(self, config: WebConfig | None = None) -> None:
        self.config = config or WebConfig()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.manager = Manager(open_store("memory://"), WEB_CONFIG)
        self.handle: WebHandle | None = None
        self.seeded: Seeded | None = None

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine in the dashboard's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        assert self.handle is not None
        return self.handle.url

    def start(self) -> None:
        self.thread.start()
        self.call(self.manager.start())
        self.seeded = self.call(seed(self.manager))
        self.handle = self.call(start_web(self.manager, self.config))

    def stop(self) -> None:
        if self.handle is not None:
            self.call(self.handle.stop())
        self.call(self.manager.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    """One headless Debian Chromium for the browser test module (the only one using it).

    Module scope, not session: sync Playwright keeps its own event loop marked as running
    in this thread while it is open, which would break every asyncio test after it."""
    executable = require_binary("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_dashboard() -> Iterator[LiveDashboard]:
    dashboard = LiveDashboard()
    dashboard.start()
    try:
        yield dashboard
    finally:
        dashboard.stop()


SCREENSHOT_DIR_ENV = "CONVEYOR_WEB_SCREENSHOTS"
"""Set to a directory (e.g. ``docs/screenshots``) to save a PNG of every page the browser
tests visit: ``CONVEYOR_WEB_SCREENSHOTS=docs/screenshots pytest tests/test_web_browser.py``."""


def screenshot(page: Any, name: str) -> None:
    directory = os.environ.get(SCREENSHOT_DIR_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)
