"""The dashboard in a real browser: Debian's Chromium driven by Playwright against uvicorn
serving the app on a loopback port. Set ``CONVEYOR_WEB_SCREENSHOTS=docs/screenshots`` to
refresh the screenshots in the docs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Error as PlaywrightError

from conveyor.store.base import JobFilter, SortedSet
from tests.support.browser import (
    SCREENSHOT_DIR_ENV,
    LiveDashboard,
    WebConfig,
    jid_of,
    job,
    screenshot,
)

PAGES = [
    ("dashboard", "/", "Dashboard"),
    ("queues", "/queues", "Queues"),
    ("queue", "/queues/default", "Queue default"),
    ("busy", "/busy", "Busy"),
    ("retries", "/retries", "Retries"),
    ("scheduled", "/scheduled", "Scheduled"),
    ("morgue", "/morgue", "Dead"),
    ("batches", "/batches", "Batches"),
    ("cron", "/cron", "Cron"),
    ("throttles", "/throttles", "Throttles"),
]


def wait_for_attribute(
    element: Any, name: str, check: Callable[[str], bool], within: float = 5.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        value = element.get_attribute(name)
        if value is not None and check(value):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{name} never satisfied the check (last value {value!r})")
        time.sleep(0.05)


@pytest.fixture
def page(chromium_browser: Any, live_dashboard: LiveDashboard) -> Any:
    context = chromium_browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(5000)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.problems = problems
    yield tab
    context.close()


def test_every_page_renders_without_errors(page: Any, live_dashboard: LiveDashboard) -> None:
    for name, path, heading in PAGES:
        response = page.goto(live_dashboard.url + path)
        assert response.status == 200, path
        assert page.locator("h1").first.inner_text().startswith(heading)
        screenshot(page, name)
    page.goto(live_dashboard.url + "/morgue")
    page.locator("tbody tr").first.locator("td").nth(1).locator("a").click()
    assert "ConnectionError" in page.locator("main").inner_text()
    screenshot(page, "job")
    assert page.problems == [], page.problems


def test_live_graph_moves_when_jobs_are_processed(page: Any, live_dashboard: LiveDashboard) -> None:
    page.goto(live_dashboard.url + "/")
    graph = page.locator("#live-graph")
    # Polled from here: the page's CSP (rightly) forbids the eval wait_for_function needs.
    wait_for_attribute(graph, "data-points", lambda v: int(v) >= 1)
    assert float(graph.get_attribute("data-last-processed") or 0) == 0
    before = graph.screenshot()
    manager = live_dashboard.manager

    async def work(count: int) -> None:
        for i in range(count):
            await manager.push(job("Tick", i, queue="live"))
        for _ in range(count):
            fetched = await manager.fetch(["live"], wait=0.01)
            assert fetched is not None
            await manager.ack(jid_of(fetched))

    live_dashboard.call(work(60))
    wait_for_attribute(graph, "data-last-processed", lambda v: float(v) > 0)
    assert graph.screenshot() != before
    processed = page.locator('[data-summary="processed"]').inner_text()
    assert int(processed.replace(",", "")) >= 76  # 16 seeded + 60 just now, no reload
    if os.environ.get(SCREENSHOT_DIR_ENV):  # a few more seconds of traffic for the docs
        for round_ in range(12):
            live_dashboard.call(work(20 + 15 * (round_ % 4)))
            time.sleep(0.3)
    screenshot(page, "dashboard")
    assert page.problems == [], page.problems


def test_history_chart_grows_live(page: Any, live_dashboard: LiveDashboard) -> None:
    page.goto(live_dashboard.url + "/")
    chart = page.locator(".history-chart")
    today = chart.locator("rect.bar-processed title").last
    before = today.text_content() or ""
    wait_for_attribute(page.locator("#live-graph"), "data-points", lambda v: int(v) >= 1)
    manager = live_dashboard.manager

    async def work(count: int) -> None:
        for i in range(count):
            await manager.push(job("Tick", i, queue="history"))
        for _ in range(count):
            fetched = await manager.fetch(["history"], wait=0.01)
            assert fetched is not None
            await manager.ack(jid_of(fetched))

    live_dashboard.call(work(25))
    wait_for_attribute(chart, "data-refreshed", lambda v: int(v) > 0)
    after = today.text_content() or ""
    processed = lambda text: int(text.split(": ")[1].split(" ")[0].replace(",", ""))  # noqa: E731
    assert processed(after) == processed(before) + 25, (before, after)  # no reload
    assert page.problems == [], page.problems


def test_pause_a_queue_and_retry_a_dead_job(page: Any, live_dashboard: LiveDashboard) -> None:
    manager = live_dashboard.manager
    page.goto(live_dashboard.url + "/queues")
    page.locator('tr[data-queue="critical"] button[value="pause"]').click()
    page.wait_for_url("**/queues?notice=*")
    assert "Queue critical paused." in page.locator(".notice").inner_text()
    assert page.locator('tr[data-queue="critical"] .tag').inner_text() == "paused"
    paused = {q.name for q in live_dashboard.call(manager.queues()) if q.paused}
    assert "critical" in paused

    page.goto(live_dashboard.url + "/morgue")
    first = page.locator("tbody tr").first
    jid = first.locator(".mono").inner_text()
    first.locator('input[name="key"]').check()
    page.locator('#set-form button[value="retry"]').click()
    page.wait_for_url("**/morgue?notice=*")
    assert "Enqueued 1 job." in page.locator(".notice").inner_text()
    assert jid not in page.locator("main").inner_text()
    queued = live_dashboard.call(manager.list_queue("imports", 0, 10))
    assert [item.jid for item in queued.items] == [jid]
    dead = live_dashboard.call(manager.list_set(SortedSet.DEAD, JobFilter(), 0, 10))
    assert dead.total == 2
    assert page.problems == [], page.problems


def test_quiet_a_worker_and_search(page: Any, live_dashboard: LiveDashboard) -> None:
    manager = live_dashboard.manager
    page.goto(live_dashboard.url + "/busy")
    page.locator('tr[data-wid="w-beta"] button[value="quiet"]').click()
    page.wait_for_url("**/busy?notice=*")
    assert page.locator('tr[data-wid="w-beta"] .tag.quiet').inner_text() == "quiet"
    assert live_dashboard.call(manager.beat("w-beta", 1)) == "quiet"
    assert live_dashboard.call(manager.beat("w-alpha", 1)) == "running"

    page.fill(".search input", "malformed row #2")
    page.press(".search input", "Enter")
    page.wait_for_url("**/morgue?q=*")
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    assert "malformed row #2" in rows.first.inner_text()
    started = time.monotonic()
    page.select_option('select[name="sort"]', "desc")
    page.locator('.filters button[type="submit"]').click()
    page.wait_for_url("**sort=desc*")
    assert time.monotonic() - started < 5
    assert page.problems == [], page.problems


def test_password_and_prefix_in_a_real_browser(chromium_browser: Any) -> None:
    dashboard = LiveDashboard(WebConfig(password="pw", web_root_path="/ops"))
    dashboard.start()
    context = chromium_browser.new_context(http_credentials={"username": "ops", "password": "pw"})
    try:
        tab = context.new_page()
        tab.set_default_timeout(5000)
        assert tab.goto(dashboard.url + "/ops/").status == 200
        # The live graph's fetch of /ops/stats works with the browser's Basic credentials.
        wait_for_attribute(tab.locator("#live-graph"), "data-points", lambda v: int(v) >= 1)
        tab.locator("nav a", has_text="Dead").click()
        tab.wait_for_url("**/ops/morgue")
        assert tab.locator("tbody tr").count() == 3
        tab.locator('#set-form input[data-select-all="key"]').check()
        tab.locator('#set-form button[value="delete"]').click()
        tab.wait_for_url("**/ops/morgue?*notice=*")
        assert "Deleted 3 jobs." in tab.locator(".notice").inner_text()
    finally:
        context.close()
        dashboard.stop()
    dashboard = LiveDashboard(WebConfig(password="pw"))
    dashboard.start()
    anonymous = chromium_browser.new_context()
    try:
        # Headless Chromium answers a Basic challenge it has no credentials for this way.
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            anonymous.new_page().goto(dashboard.url + "/")
    finally:
        anonymous.close()
        dashboard.stop()


async def _seed_batches(manager: Any) -> str:
    """Three batches: one half done with a failure and a child, one open, one finished."""
    from conveyor.manager.features.batches import BatchFeature

    batches = manager.feature(BatchFeature)

    def spec(**fields: Any) -> bytes:
        return msgspec.json.encode(fields)

    def callback(jobtype: str) -> dict[str, Any]:
        return {"jobtype": jobtype, "args": [], "queue": "callbacks"}

    main = await batches.new_batch(
        spec(description="Thumbnails for the May catalogue", complete=callback("Report"),
             success=callback("Publish"))
    )  # fmt: skip
    await batches.new_batch(spec(description="Alt texts", parent_bid=main, success=callback("X")))
    for i in range(8):
        await manager.push(job("Thumbnail", f"may-{i}.png", queue="thumbs", custom={"bid": main}))
    await batches.commit(main)
    for i in range(4):
        fetched = await manager.fetch(["thumbs"], wait=0.01)
        if i == 3:
            await manager.fail(jid_of(fetched), "IOError", "disk full")
        else:
            await manager.ack(jid_of(fetched))
    await batches.new_batch(spec(description="Nightly export", success=callback("Mail")))
    return main


def test_batches_pages_in_a_browser(page: Any, live_dashboard: LiveDashboard) -> None:
    bid = live_dashboard.call(_seed_batches(live_dashboard.manager))
    page.goto(live_dashboard.url + "/batches")
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    assert "Thumbnails for the May catalogue" in rows.nth(2).inner_text()
    bar = rows.nth(2).locator(".progress-ok")
    assert bar.get_attribute("width") == "37.5"
    assert rows.nth(2).locator(".progress-failed").get_attribute("width") == "12.5"
    screenshot(page, "batches")
    rows.nth(2).locator("a").first.click()
    assert page.locator("h1").inner_text().startswith("Thumbnails for the May catalogue")
    assert page.locator(".batch-jobs tbody tr").count() == 8
    assert "Alt texts" in page.locator("main").inner_text()
    screenshot(page, "batch")
    page.goto(live_dashboard.url + "/batches?q=nightly")
    assert page.locator("tbody tr").count() == 1
    assert bid not in page.locator("tbody").inner_text()
    assert page.problems == [], page.problems
