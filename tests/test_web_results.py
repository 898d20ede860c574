"""The dashboard's completed jobs and job pages with states and results, through its ASGI app
over a real manager (docs/web.md)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor.manager import Manager
from conveyor.store.base import JobFilter, SortedSet
from conveyor.web import create_app

BASE = "http://dash.test"


async def finish(
    manager: Manager, jid: str, custom: dict[str, object], result: bytes | None
) -> None:
    job = b'{"jid":"%s","jobtype":"BuildReport","args":["q3"],"custom":%s}' % (
        jid.encode(),
        repr(custom).replace("'", '"').encode(),
    )
    await manager.push(job)
    fetched = await manager.fetch(["default"], "w-web", wait=0)
    assert fetched is not None
    await manager.ack(jid, result=result)


@pytest.fixture
async def web(web_manager: Manager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(web_manager))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def test_completed_page_lists_searches_shows_and_deletes(
    web_manager: Manager, web: httpx.AsyncClient
) -> None:
    await finish(web_manager, "jid-web-0001", {"retain": 3600}, b'{"rows":12}')
    await finish(web_manager, "jid-web-0002", {"retain": 3600}, b'"other"')
    page = await web.get("/completed")
    assert page.status_code == 200
    assert "Completed" in page.text
    assert "jid-web-0001" in page.text
    assert "{&#34;rows&#34;:12}" in page.text  # the result, short, in its column
    assert "Finished" in page.text
    assert 'href="/completed"' in (await web.get("/")).text  # in the navigation
    found = await web.get("/completed", params={"q": "other"})
    assert "jid-web-0002" in found.text
    assert "jid-web-0001" not in found.text

    api = (await web.get("/api/sets/completed")).json()
    assert {job["jid"] for job in api["jobs"]} == {"jid-web-0001", "jid-web-0002"}

    detail = await web.get("/jobs/jid-web-0001", follow_redirects=True)
    assert detail.status_code == 200
    assert str(detail.url).startswith(f"{BASE}/completed/")
    assert "Result" in detail.text
    assert "w-web" in detail.text
    assert "&#34;rows&#34;: 12" in detail.text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', detail.text)
    assert token is not None
    assert 'value="retry"' not in detail.text  # a completed job can only be deleted
    deleted = await web.post(
        str(detail.url), data={"action": "delete", "csrf_token": token.group(1)}
    )
    assert deleted.status_code == 303
    remaining = await web_manager.list_set(SortedSet.COMPLETED, JobFilter(), 0, 10)
    assert [entry.jid for entry in remaining.items] == ["jid-web-0002"]


async def test_a_finished_job_known_by_its_result_has_a_page(
    web_manager: Manager, web: httpx.AsyncClient
) -> None:
    await finish(web_manager, "jid-web-done", {"result_ttl": 600}, b"[1,2,3]")
    page = await web.get("/jobs/jid-web-done")
    assert page.status_code == 200
    assert "done" in page.text
    assert "succeeded" in page.text
    api = (await web.get("/api/jobs/jid-web-done")).json()
    assert (api["state"], api["result"]) == ("done", [1, 2, 3])
    found = await web.get("/search", params={"q": "jid-web-done"})
    assert found.headers["location"] == "/jobs/jid-web-done"
    missing = await web.get("/jobs/jid-web-none")
    assert missing.status_code == 404
    assert "no result of it is kept" in missing.text
