"""The dashboard's side of admission and flow control: the Throttles page (and its JSON), a
queue's limits on its page, a job's unique lock and expiry on its page; one check in Chromium."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from conveyor.manager import Manager
from conveyor.manager.features.registry import build_features
from conveyor.store import open_store
from conveyor.timefmt import format_time
from conveyor.web import create_app
from tests.support.browser import WEB_CONFIG, LiveDashboard
from tests.support.manager import encode, job

TABLES = {
    "throttles": {"api": {"concurrency": 2, "timeout": 30}, "per": {"worker": 3}},
    "queues": {"backpressure": 1000, "paced": {"rate_limit": 5, "burst": 10}},
}


@pytest.fixture
async def manager() -> AsyncIterator[Manager]:
    running = Manager(open_store("memory://"), WEB_CONFIG, features=build_features(TABLES))
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def web(manager: Manager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as client:
        yield client


async def fill(manager: Manager) -> None:
    for queue in ("api", "api", "api", "paced"):
        await manager.push(encode(job(queue=queue)))
    for _ in range(2):
        assert await manager.fetch(["api"], "w1", wait=0) is not None
    await manager.push(encode(job(custom={"expires_at": format_time(1.0)})))  # expired


async def test_the_throttles_page_shows_each_limit_and_its_use(
    web: httpx.AsyncClient, manager: Manager
) -> None:
    await fill(manager)
    page = await web.get("/throttles")
    assert page.status_code == 200
    text = page.text
    assert 'data-throttle="api"' in text
    assert "2 / 2" in text  # in use of the limit
    assert "3 per worker" in text
    assert 'data-rate-limit="paced"' in text
    assert "5/s" in text
    assert "PUSH refused from <strong>1,000</strong> jobs" in text
    assert "Coming with its feature" not in text
    data = (await web.get("/api/throttles")).json()
    api = next(row for row in data["throttles"] if row["queue"] == "api")
    assert api == {
        "queue": "api",
        "concurrency": 2,
        "worker": 0,
        "timeout": 30.0,
        "in_use": 2,
        "queued": 1,
        "waiting_fetches": 0,
    }
    paced = data["rate_limits"][0]
    assert paced["rate"] == 5.0
    assert paced["tokens"] == pytest.approx(10, abs=0.1)
    assert data["expired"][-1]["expired"] == 1  # the job pushed expired already
    assert data["backpressure"]["default"] == 1000


async def test_a_queue_page_shows_its_limits(web: httpx.AsyncClient, manager: Manager) -> None:
    await fill(manager)
    api = (await web.get("/queues/api")).text
    assert "full at 1,000 jobs" in api
    assert "throttle 2 in use of 2" in api
    paced = (await web.get("/queues/paced")).text
    assert "5 jobs/s (burst 10)" in paced


async def test_a_job_page_shows_its_lock_and_expiry(
    web: httpx.AsyncClient, manager: Manager
) -> None:
    expires = format_time(time.time() + 3600)
    scheduled = job(
        queue="later",
        at=format_time(time.time() + 600),
        custom={"unique_for": 60, "expires_at": expires},
    )
    await manager.push(encode(scheduled))
    page = await web.get(f"/jobs/{scheduled['jid']}", follow_redirects=True)
    assert page.status_code == 200
    assert "Unique lock" in page.text
    assert "held by this job until" in page.text
    assert "until success" in page.text
    assert f'datetime="{expires}"' in page.text
    # a started job whose lock (until start) was taken by a newer one points to its holder
    first = job(queue="u", custom={"unique_for": 60, "unique_until": "start"})
    await manager.push(encode(first))
    assert await manager.fetch(["u"], "w", wait=0) is not None
    newer = {**first, "jid": "newer-job-0001"}
    await manager.push(encode(newer))
    busy = (await web.get(f"/jobs/{first['jid']}")).text
    assert "held by <a" in busy
    assert "newer-job-0001" in busy


@pytest.fixture
def live_limits() -> Iterator[LiveDashboard]:
    dashboard = LiveDashboard()
    dashboard.manager = Manager(
        open_store("memory://"), WEB_CONFIG, features=build_features(TABLES)
    )
    dashboard.start()
    try:
        yield dashboard
    finally:
        dashboard.stop()


def test_the_throttles_page_in_chromium(chromium_browser: Any, live_limits: LiveDashboard) -> None:
    live_limits.call(fill(live_limits.manager))
    context = chromium_browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    tab.goto(live_limits.url + "/throttles")
    assert tab.locator("h1").inner_text() == "Throttles"
    row = tab.locator('tr[data-throttle="api"]')
    assert "2 / 2" in row.inner_text()
    assert tab.locator("nav a.active").inner_text() == "Throttles"
    tab.locator('tr[data-rate-limit="paced"] a').click()
    tab.wait_for_url("**/queues/paced")
    assert "5 jobs/s" in tab.locator("[data-limits]").inner_text()
    assert problems == []
    context.close()
