"""The features' rules on the commands answered without a task (``manager/soon.py``).

PUSH, FETCH and ACK on an idle connection take the short way on every store (Redis: from the
step that reads its reply). These tests send exactly one command at a time, so each goes that
way, and check that what the long way does still happens: a job expired by the time it is
fetched is dropped and the FETCH goes on, a unique job's ACK releases its lock, the job
metrics count every step.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import msgspec
import pytest

from conveyor.manager.features import Feature
from conveyor.manager.features.expiring import ExpiringJobs
from conveyor.manager.features.registry import build_features
from conveyor.metrics.jobs import JobMetrics
from tests.support.features import bulk_json
from tests.support.server import MakeServer, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url

OK = b"+OK\r\n"


@pytest.fixture(params=STORE_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path, request)


def _features() -> list[Feature]:
    """Every feature, the expiry sweep slowed down: a FETCH is what finds expired jobs."""
    features = build_features({})
    return [ExpiringJobs(3600) if isinstance(f, ExpiringJobs) else f for f in features]


async def _start(make_server: MakeServer, url: str) -> RunningServer:
    return await make_server(url, features=_features())


def _push(queue: str, jobtype: str = "T", **custom: object) -> tuple[str, bytes]:
    jid = uuid.uuid4().hex
    job: dict[str, object] = {"jid": jid, "jobtype": jobtype, "args": [1], "queue": queue}
    if custom:
        job["custom"] = custom
    return jid, b"PUSH " + msgspec.json.encode(job)


async def test_a_job_expired_at_fetch_is_dropped_and_the_fetch_takes_the_next(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await _start(make_server, url)
    conn = await raw_client(running.port)
    expired, push_expiring = _push("exp", expires_in=0.05)
    plain, push_plain = _push("exp")
    assert await conn.call(push_expiring) == OK
    assert await conn.call(push_plain) == OK
    await asyncio.sleep(0.1)
    assert bulk_json(await conn.call(b"FETCH exp"))["jid"] == plain
    store = running.manager.store
    assert await store.queue_sizes() == {"exp": 0}
    assert [r.jid for r in (await store.list_reservations(0, 10)).items] == [plain]
    assert expired not in {r.jid for r in (await store.list_reservations(0, 10)).items}


async def test_a_fetch_that_finds_only_expired_jobs_waits_and_finds_nothing(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await _start(make_server, url)
    conn = await raw_client(running.port)
    _, push_expiring = _push("gone", expires_in=0.05)
    assert await conn.call(push_expiring) == OK
    await asyncio.sleep(0.1)
    assert await conn.call(b"FETCH gone") == b"$-1\r\n"
    store = running.manager.store
    assert await store.queue_sizes() == {"gone": 0}
    assert (await store.list_reservations(0, 10)).total == 0
    assert (await store.counters()).processed == 0  # dropped, neither processed nor failed


async def test_acking_a_unique_job_releases_its_lock(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await _start(make_server, url)
    conn = await raw_client(running.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')
    job = {"jobtype": "Sync", "args": ["a"], "queue": "uq", "custom": {"unique_for": 60}}
    first = msgspec.json.encode({"jid": "unique-0001", **job})
    second = msgspec.json.encode({"jid": "unique-0002", **job})
    assert await conn.call(b"PUSH " + first) == OK
    assert await conn.call(b"PUSH " + second) == b"-NOTUNIQUE Job not unique\r\n"
    assert bulk_json(await conn.call(b"FETCH uq"))["jid"] == "unique-0001"
    assert await conn.call(b'ACK {"jid":"unique-0001"}') == OK
    assert await conn.call(b"PUSH " + second) == OK  # the ACK released the lock
    assert await running.manager.store.queue_sizes() == {"uq": 1}


async def test_job_metrics_count_each_step(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await _start(make_server, url)
    metrics = running.manager.metrics = JobMetrics()
    conn = await raw_client(running.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')
    jid, push = _push("counted", jobtype="Counted")
    assert await conn.call(push) == OK
    assert bulk_json(await conn.call(b"FETCH counted"))["jid"] == jid
    assert await conn.call(b'ACK {"jid":"%s","duration":"0.25"}' % jid.encode()) == OK
    metrics.settle()
    labels = ("counted", "Counted")
    assert metrics.pushed.get(labels) == 1
    assert metrics.fetched.get(("counted",)) == 1
    assert metrics.processed.get(labels) == 1
    assert metrics.durations.count(labels) == 1
    assert metrics.running == 0
