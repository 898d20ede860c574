"""The dashboard's Batches pages and JSON API, and what job pages show of tracking, batches
and dependencies, over a real manager driven through its ASGI app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from conveyor.manager import Manager
from conveyor.manager.features.batches import BatchFeature
from conveyor.web import create_app

BASE = "http://dash.test"


def job(**fields: Any) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "Resize", "args": [1], **fields}


async def push(manager: Manager, payload: dict[str, Any]) -> str:
    await manager.push(msgspec.json.encode(payload))
    return str(payload["jid"])


async def run(manager: Manager, fail: bool = False) -> str:
    fetched = await manager.fetch(["default"], wait=0.01)
    assert fetched is not None
    jid = str(msgspec.json.decode(fetched)["jid"])
    if fail:
        await manager.fail(jid, "IOError", "disk full")
    else:
        await manager.ack(jid)
    return jid


@pytest.fixture
async def web(web_manager: Manager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(web_manager))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def test_batches_list_search_progress_and_detail(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    batches = web_manager.feature(BatchFeature)
    spec = {"description": "Thumbnails of May", "complete": job(jobtype="Report", queue="cb")}
    bid = await batches.new_batch(msgspec.json.encode(spec))
    child = await batches.new_batch(
        msgspec.json.encode({"parent_bid": bid, "success": job(jobtype="ChildDone")})
    )
    other = await batches.new_batch(msgspec.json.encode({"success": job(jobtype="Other")}))
    jids = [await push(web_manager, job(custom={"bid": bid})) for _ in range(4)]
    await batches.commit(bid)
    await run(web_manager)
    await run(web_manager, fail=True)

    page = await web.get("/batches")
    assert page.status_code == 200
    for text in ("Thumbnails of May", bid, child, other, "committed", "open", "complete …"):
        assert text in page.text, text
    assert 'aria-label="1 of 4 succeeded, 1 failed"' in page.text
    searched = await web.get("/batches", params={"q": "may"})
    assert bid in searched.text
    assert other not in searched.text
    none = await web.get("/batches", params={"q": "nothing-like-it"})
    assert "No batch has" in none.text

    detail = await web.get(f"/batches/{bid}")
    assert detail.status_code == 200
    for text in ("Report", "Child batches", child, jids[0], ">success</span>", ">failed</span>"):
        assert text in detail.text, text
    assert "Expires" in detail.text
    assert (await web.get("/batches/b-nope")).status_code == 404

    listing = (await web.get("/api/batches", params={"per_page": 2})).json()
    assert (listing["total"], listing["pages"], len(listing["batches"])) == (3, 2, 2)
    shown = (await web.get(f"/api/batches/{bid}")).json()
    assert (shown["total"], shown["pending"], shown["failed"], shown["succeeded"]) == (4, 3, 1, 1)
    assert [j["jid"] for j in shown["jobs"]] == jids
    assert shown["complete"]["jobtype"] == "Report"
    missing = await web.get("/api/batches/b-nope")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "no such batch b-nope (it may have expired)"},
    )
    assert (await web.get("/api/batches", params={"page": "0"})).status_code == 400


async def test_job_pages_show_tracking_batch_and_dependencies(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    batches = web_manager.feature(BatchFeature)
    bid = await batches.new_batch(msgspec.json.encode({"success": job(jobtype="Done")}))
    member = await push(web_manager, job(custom={"bid": bid}))
    await batches.track_set(msgspec.json.encode({"jid": member, "percent": 64, "desc": "half"}))
    waiting = await push(web_manager, job(custom={"after": [member]}))

    queued = await web.get(f"/jobs/{member}")
    assert queued.status_code == 200
    for text in (f"/batches/{bid}", ">enqueued</span>", "64%", "half"):
        assert text in queued.text, text
    held = await web.get(f"/jobs/{waiting}")
    assert held.status_code == 200
    assert ">waiting</span>" in held.text
    assert "Waits for" in held.text
    assert f"/jobs/{member}" in held.text
