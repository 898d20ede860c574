"""The dashboard while its store cannot serve: SQLite on a real tmpfs that is full, Redis a
private redis-server that is stopped. Actions and the JSON API answer 503 with the store's
message (in the page's alert for people), never a 500 with a traceback; ``/health`` answers
503 with the reason while it lasts and 200 once the store is back."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.errors import StoreError
from conveyor.manager import Manager
from conveyor.store import open_store
from conveyor.store.base import JobFilter, SortedSet
from conveyor.web import create_app
from tests.support.disks import SmallDisk
from tests.support.server import TEST_TIMINGS
from tests.support.services import RedisServer

BASE = "http://dash.test"


def job(jid: str, queue: str = "default") -> bytes:
    return json.dumps(
        {"jid": jid, "jobtype": "Work", "queue": queue, "args": ["x" * 2000]}
    ).encode()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def started(url: str) -> Manager:
    manager = Manager(open_store(url), TEST_TIMINGS)
    await manager.start()
    for n in range(5):
        await manager.push(job(f"queued-{n:04d}", queue="mail"))
    dead = {"jid": "dead-0001", "jobtype": "W", "args": [], "retry": -1, "queue": "doomed"}
    await manager.push(json.dumps(dead).encode())
    assert await manager.fetch(["doomed"], wait=0.01) is not None
    await manager.fail("dead-0001", "E", "boom", [])
    await manager.store.durable()  # a FAIL's commit may come later; it must not be lost
    return manager


@pytest.fixture
async def web_of() -> AsyncIterator[list[httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []
    yield clients
    for client in clients:
        await client.aclose()


def dashboard(manager: Manager, clients: list[httpx.AsyncClient]) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(manager)), base_url=BASE
    )
    clients.append(client)
    return client


async def push_until_refused(manager: Manager) -> None:
    for n in range(100):
        await manager.push(job(f"full-{n:04d}"))


async def csrf(web: httpx.AsyncClient) -> str:
    page = await web.get("/queues")
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert match, page.text[:300]
    return match.group(1)


async def assert_refused_clearly(web: httpx.AsyncClient, token: str, reason: str) -> None:
    """Every action, by form and by the JSON API, answers 503 with ``reason`` in it."""
    api = [
        ("/api/queues/mail/pause", {}),
        ("/api/queues/mail/delete_jobs", {"jids": ["queued-0001"]}),
        ("/api/sets/dead/actions/retry", {"all": True}),
        ("/api/cron", {"id": "c", "schedule": "@daily", "job": {"type": "C"}}),
    ]
    for path, body in api:
        response = await web.post(path, json=body)
        assert response.status_code == 503, (path, response.text[:300])
        error = response.json()["error"]
        assert error.startswith("storage error: "), error
        assert reason in error
    form = await web.post("/queues", data={"csrf_token": token, "queue": "mail", "action": "pause"})
    assert form.status_code == 503
    assert form.headers["content-type"].startswith("text/html")
    alert = re.search(r'<div class="alert" role="alert">([^<]*)</div>', form.text)
    assert alert, form.text[:500]
    assert alert.group(1).startswith("storage error: ")
    assert reason in alert.group(1)
    assert "Traceback" not in form.text


async def test_a_full_disk_answers_503_and_health_says_so(
    small_disk: SmallDisk, web_of: list[httpx.AsyncClient]
) -> None:
    manager = await started(f"sqlite:///{small_disk.path / 'conveyor.db'}")
    web = dashboard(manager, web_of)
    try:
        token = await csrf(web)
        assert (await web.get("/health")).json()["status"] == "ok"
        small_disk.fill()
        with pytest.raises(StoreError):  # the first commit that needs a block starts it
            await push_until_refused(manager)
        health = await web.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unavailable"
        assert body["store"].startswith("SQLite cannot commit since ")
        assert set(body["server"]) == {
            "description", "faktory_version", "connections", "command_count"
        }  # fmt: skip
        await assert_refused_clearly(web, token, "SQLite cannot commit since ")
        # nothing was changed: the queue is not paused, its jobs and the dead one are there
        mail = next(q for q in await manager.queues() if q.name == "mail")
        assert (mail.paused, mail.size) == (False, 5)
        assert (await manager.list_set(SortedSet.DEAD, JobFilter(), 0, 10)).total == 1
        # reads still work on SQLite: the pages show what is there
        assert (await web.get("/queues/mail")).status_code == 200
        small_disk.free()
        for _ in range(100):  # the store probes by itself, within a second
            if (await web.get("/health")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await web.get("/health")).json()["status"] == "ok"
        assert (await web.post("/api/queues/mail/pause", json={})).status_code == 200
    finally:
        small_disk.free()
        await manager.stop()


async def test_redis_down_answers_503_and_health_says_so(
    private_redis: RedisServer, web_of: list[httpx.AsyncClient]
) -> None:
    manager = await started(private_redis.url)
    web = dashboard(manager, web_of)
    try:
        token = await csrf(web)
        assert (await web.get("/health")).status_code == 200
        private_redis.stop()
        where = f"Redis at 127.0.0.1:{private_redis.port} is unreachable"
        health = await web.get("/health")
        assert health.status_code == 503
        assert where in health.json()["store"]
        await assert_refused_clearly(web, token, where)
        for path in ("/", "/queues/mail", "/morgue"):  # pages need Redis to read
            page = await web.get(path)
            assert page.status_code == 503, path
            assert where in page.text
        listing = await web.get("/api/sets/dead")
        assert listing.status_code == 503
        assert where in listing.json()["error"]
        private_redis.start()  # the same port; the data went with it (no persistence here)
        assert (await web.get("/health")).json()["status"] == "ok"
        assert (await web.get("/api/sets/dead")).status_code == 200
    finally:
        if private_redis.process is None:
            private_redis.start()
        await manager.stop()
