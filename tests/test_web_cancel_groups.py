"""The dashboard's cancellation and aggregation parts (docs/web.md): Cancel on a job's page
and on the set pages, the cancelled job's page, the Groups pages, the summary numbers, and
their JSON API, over a real manager and its ASGI app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from conveyor.manager import Manager
from conveyor.store.base import JobFilter, SortedSet
from conveyor.web import create_app

BASE = "http://dash.test"
AGGREGATE = {"max_size": 10, "max_delay": 3600, "grace": 3600}


@pytest.fixture
async def web(web_manager: Manager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(web_manager))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def push(manager: Manager, jid: str, **fields: Any) -> None:
    job = {"jid": jid, "jobtype": "Digest", "args": [jid], **fields}
    await manager.push(msgspec.json.encode(job))


async def csrf(client: httpx.AsyncClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', (await client.get(path)).text)
    assert match, f"{path} has no form"
    return match.group(1)


async def test_a_running_job_is_cancelled_from_its_page(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    await push(web_manager, "running-01")
    await web_manager.fetch(["default"], "w-1", 0)
    page = await web.get("/jobs/running-01")
    assert "Stop and cancel" in page.text
    token = await csrf(web, "/jobs/running-01")
    done = await web.post("/jobs/running-01", data={"csrf_token": token, "action": "cancel"})
    assert done.status_code == 303
    shown = await web.get(done.headers["location"])
    assert "running-01: cancelled while worker w-1 ran it: it is told to stop." in shown.text
    assert "while it was <strong>working</strong>" in shown.text
    assert "Stop and cancel" not in shown.text  # nothing left to cancel
    assert await web_manager.store.get_reservation("running-01") is None
    bad = await web.post("/jobs/running-01", data={"csrf_token": token, "action": "nope"})
    assert bad.status_code == 400
    home = await web.get("/")
    assert re.search(r'data-summary="cancelled">1<', home.text)


async def test_set_pages_cancel_chosen_jobs(web: httpx.AsyncClient, web_manager: Manager) -> None:
    for n in range(3):
        await push(web_manager, f"later-{n:04d}", at="2099-01-01T00:00:00Z")
    page = await web.get("/scheduled")
    assert ">Cancel<" in page.text
    token = await csrf(web, "/scheduled")
    keys = re.findall(r'name="key" value="([^"]+later-000[01])"', page.text)
    assert len(keys) == 2
    done = await web.post("/scheduled", data={"csrf_token": token, "action": "cancel", "key": keys})
    assert "Cancelled 2 jobs." in (await web.get(done.headers["location"])).text
    assert (await web_manager.list_set(SortedSet.SCHEDULED, JobFilter(), 0, 9)).total == 1
    everything = await web.post(
        "/scheduled", data={"csrf_token": token, "action": "cancel", "key": "all"}
    )
    assert "Cancelled 1 job." in (await web.get(everything.headers["location"])).text
    located = await web.get("/jobs/later-0002")
    assert "cancelled" in located.text
    assert "scheduled" in located.text


async def test_groups_pages_and_api(web: httpx.AsyncClient, web_manager: Manager) -> None:
    assert "No jobs are waiting in aggregating groups." in (await web.get("/groups")).text
    for n in range(3):
        await push(
            web_manager, f"member-{n:04d}", custom={"group": "alice", "aggregate": AGGREGATE}
        )
    listing = await web.get("/groups")
    assert "alice" in listing.text
    assert "3 / 10" in listing.text
    api = (await web.get("/api/groups")).json()
    assert api["total"] == 1
    (group,) = api["groups"]
    assert (group["jobtype"], group["group"], group["size"]) == ("Digest", "alice", 3)
    detail = await web.get("/groups/detail", params={"key": group["key"]})
    assert "member-0001" in detail.text
    by_name = await web.get("/api/groups/detail", params={"jobtype": "Digest", "group": "alice"})
    assert [m["jid"] for m in by_name.json()["members"]] == [f"member-{n:04d}" for n in range(3)]
    assert (await web.get("/api/groups/detail", params={"group": "x"})).status_code == 400
    missing = await web.get("/api/groups/detail", params={"jobtype": "Digest", "group": "bob"})
    assert missing.status_code == 404
    token = await csrf(web, f"/groups/detail?key={group['key']}")
    done = await web.post(
        "/groups/detail",
        params={"key": group["key"]},
        data={"csrf_token": token, "action": "cancel", "jid": ["member-0000"]},
    )
    assert "Cancelled 1 job." in (await web.get(done.headers["location"])).text
    member_page = await web.get("/jobs/member-0001")
    assert "aggregating" in member_page.text
    assert "alice" in member_page.text
    home = await web.get("/")
    assert re.search(r'data-summary="aggregating">2<', home.text)


async def test_the_cancel_api(web: httpx.AsyncClient, web_manager: Manager) -> None:
    await push(web_manager, "queued-0001")
    headers = {"content-type": "application/json"}
    one = await web.post("/api/jobs/queued-0001/cancel", headers=headers, content=b"{}")
    assert one.json() == {
        "ok": True,
        "job": {
            "jid": "queued-0001",
            "outcome": "cancelled",
            "was": "queued",
            "message": "cancelled: it was queued",
        },
    }
    many = await web.post(
        "/api/jobs/cancel", headers=headers, json={"jids": ["queued-0001", "nope-0001"]}
    )
    assert [(j["outcome"], j["was"]) for j in many.json()["jobs"]] == [
        ("already", "queued"),
        ("unknown", ""),
    ]
    assert many.json()["cancelled"] == 0
    no_csrf = await web.post("/api/jobs/cancel", content=b'{"jids":["x"]}')
    assert no_csrf.status_code == 403
    empty = await web.post("/api/jobs/cancel", headers=headers, json={"jids": []})
    assert empty.status_code == 400
    located = (await web.get("/api/jobs/queued-0001")).json()
    assert (located["where"], located["details"]["was"]) == ("cancelled", "queued")
