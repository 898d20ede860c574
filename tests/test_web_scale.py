"""The Dead page with 100,000 dead jobs on the SQLite store: the store pages and filters, so
a page view costs milliseconds, not a scan through Python (measured numbers in docs/web.md)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import msgspec

from conveyor.manager import Manager, ManagerConfig
from conveyor.store import open_store
from conveyor.store.base import SetEntry, SortedSet
from conveyor.timefmt import format_time
from conveyor.web import create_app

DEAD_JOBS = 100_000
PAGE_BUDGET_SECONDS = 1.0
"""Generous for a loaded 2-core CI box; measured locally: ~2 ms unfiltered, ~85 ms text search."""


async def fill_dead(manager: Manager, count: int) -> None:
    """Test setup straight into the store (pushing and failing 100k jobs would take minutes)."""
    now = time.time()
    batch: list[SetEntry] = []
    for i in range(count):
        queue, jobtype = (("imports", "ImportCsv"), ("mailers", "SendEmail"))[i % 2]
        job = {
            "jid": f"jid{i:08d}",
            "jobtype": jobtype,
            "queue": queue,
            "args": [i, f"row-{i}"],
            "retry": 25,
            "failure": {
                "errtype": "ValueError",
                "message": f"malformed row {i}",
                "retry_count": 25,
                "failed_at": format_time(now - i),
            },
        }
        score = now + 180 * 86_400 - i
        batch.append(SetEntry(score, job["jid"], msgspec.json.encode(job), queue, jobtype))
        if len(batch) == 10_000:
            await manager.store.add_to_set(SortedSet.DEAD, batch)
            batch = []


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = await client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, path
    return elapsed, response.text


async def test_dead_page_with_100k_jobs_on_sqlite(tmp_path: Path) -> None:
    manager = Manager(open_store(f"sqlite:///{tmp_path}/dead.db"), ManagerConfig())
    await manager.start()
    try:
        await fill_dead(manager, DEAD_JOBS)
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://scale.test") as client:
            await client.get("/morgue")  # warm the page cache and templates
            elapsed, first = await timed_get(client, "/morgue")
            assert "100,000" in first
            assert first.count('type="checkbox" name="key"') == 25
            assert "malformed row 0 <span" in first  # latest death first
            assert elapsed < PAGE_BUDGET_SECONDS
            elapsed, deep = await timed_get(client, "/morgue?page=4000")
            assert "malformed row 99999 <span" in deep  # the very last entry
            assert elapsed < PAGE_BUDGET_SECONDS
            elapsed, found = await timed_get(client, "/morgue?q=row-12345%22")
            assert found.count('type="checkbox" name="key"') == 1
            assert elapsed < PAGE_BUDGET_SECONDS
            elapsed, typed = await timed_get(client, "/morgue?jobtype=SendEmail&sort=desc")
            assert "50,000" in typed
            assert elapsed < PAGE_BUDGET_SECONDS
    finally:
        await manager.stop()
