"""Cancellation end to end (docs/cancellation.md): a job cancelled in each state on every
store, the worker that runs it stopped (an async job's task, a sync job that looks at its
flag), the late ACK and FAIL of a Faktory worker that never hears of it, the CANCELS channel,
and a cancel sent to one server reaching a worker connected to another over one Redis."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import conveyor
from conveyor.errors import CommandError, JobNotFound
from conveyor.manager import Manager, ManagerConfig
from conveyor.manager.features.cancellation import CancelFeature
from conveyor.store import open_store
from conveyor.store.base import SortedSet
from conveyor.testing import TestServer
from tests.support.manager import eventually
from tests.support.server import MakeServer, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url

MakeManager = Callable[..., Any]


def job(jid: str, **fields: Any) -> bytes:
    return msgspec.json.encode({"jid": jid, "jobtype": "Work", "args": [1], **fields})


@pytest.fixture(params=STORE_BACKENDS)
async def manager(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Manager]:
    """A manager over each backend, its loops not started (nothing moves by itself)."""
    store = open_store(store_url(request.param, tmp_path, request))
    await store.open()
    manager = Manager(store, ManagerConfig())
    try:
        yield manager
    finally:
        await store.close()


async def cancel(manager: Manager, *jids: str) -> list[tuple[str, str]]:
    reports = await manager.feature(CancelFeature).cancel(jids)
    return [(report.outcome, report.was) for report in reports]


async def test_a_job_is_cancelled_in_each_state_it_can_be_in(manager: Manager) -> None:
    store = manager.store
    await manager.push(job("queued-1"))
    await manager.push(job("scheduled-1", at="2099-01-01T00:00:00Z"))
    await manager.push(job("running-1", queue="work"))
    await manager.push(job("retrying-1", queue="work"))
    group = {"group": "g", "aggregate": {"max_size": 10, "max_delay": 60, "grace": 30}}
    await manager.push(job("grouped-1", custom=group))
    (running,) = [msgspec.json.decode(await manager.fetch(["work"], "wid-1", 0) or b"")]
    assert running["jid"] == "running-1"
    await manager.fetch(["work"], "wid-1", 0)
    await manager.fail("retrying-1", "Boom", "once")
    assert await store.set_size(SortedSet.RETRIES) == 1
    await manager.kill(SortedSet.SCHEDULED, None)  # scheduled-1 goes to the morgue ...
    await manager.push(job("scheduled-2", at="2099-01-01T00:00:00Z"))  # ... this one stays

    outcomes = await cancel(
        manager, "queued-1", "scheduled-2", "retrying-1", "running-1", "grouped-1",
        "scheduled-1", "never-seen-1",
    )  # fmt: skip
    assert outcomes == [
        ("cancelled", "queued"),
        ("cancelled", "scheduled"),
        ("cancelled", "retries"),
        ("cancelled", "working"),
        ("cancelled", "aggregating"),
        ("finished", "dead"),
        ("unknown", ""),
    ]
    # gone from everywhere, never retried, never dead
    assert (await store.queue_sizes()).get("default", 0) == 0
    assert await store.set_size(SortedSet.SCHEDULED) == 0
    assert await store.set_size(SortedSet.RETRIES) == 0
    assert await store.set_size(SortedSet.DEAD) == 1  # scheduled-1, killed before
    assert await store.get_reservation("running-1") is None
    assert await store.group_counts() == (0, 0)
    # counted apart: not processed, not failed
    info = await manager.info()
    assert info["features"]["cancellation"] == {"cancelled": 5, "cancelled_today": 5}
    assert info["faktory"]["total_failures"] == 1  # the FAIL above, nothing more
    # each one's page says where it was when it was cancelled
    located = await manager.locate_many(["running-1", "grouped-1", "queued-1"])
    assert {jid: (loc.where, loc.details["was"]) for jid, loc in located.items()} == {
        "running-1": ("cancelled", "working"),
        "grouped-1": ("cancelled", "aggregating"),
        "queued-1": ("cancelled", "queued"),
    }
    assert located["running-1"].wid == "wid-1"
    assert msgspec.json.decode(located["grouped-1"].payload)["custom"]["group"] == "g"
    # again: it says so, and counts nothing more
    assert await cancel(manager, "queued-1", "running-1") == [
        ("already", "queued"),
        ("already", "working"),
    ]
    assert (await manager.info())["features"]["cancellation"]["cancelled"] == 5


async def test_the_late_fail_and_ack_of_a_cancelled_job_change_nothing(manager: Manager) -> None:
    await manager.push(job("running-1"))
    await manager.push(job("running-2"))
    await manager.fetch_many(["default"], "wid-1", 2, 0)
    assert await cancel(manager, "running-1", "running-2") == [("cancelled", "working")] * 2
    notices = await manager.store.list_records("cancel-notices", time.time())
    assert {(r.key, r.value) for r in notices} == {("running-1", b"wid-1"), ("running-2", b"wid-1")}
    await manager.fail("running-1", "conveyor.JobCancelled", "cancelled")  # +OK, not retried
    await manager.ack("running-2")
    assert await manager.store.set_size(SortedSet.RETRIES) == 0
    counters = await manager.store.counters()
    assert (counters.processed, counters.failures) == (0, 0)
    # the FAIL tells the server the worker stopped it: its notice is done with
    notices = await manager.store.list_records("cancel-notices", time.time())
    assert [r.key for r in notices] == ["running-2"]
    with pytest.raises(JobNotFound):  # a FAIL of a job that was never cancelled: as before
        await manager.fail("never-ran-1", "Boom", "x")


async def test_a_job_that_moves_while_it_is_cancelled_is_cancelled_where_it_went(
    manager: Manager,
) -> None:
    feature = manager.feature(CancelFeature)
    await manager.push(job("moving-1"))
    stale = (await manager.locate_many(["moving-1"]))["moving-1"]
    assert stale.where == "queued"
    await manager.fetch(["default"], "wid-9", 0)  # fetched in between
    assert await feature._cancel_one("moving-1", stale) is None  # moved: nothing changed
    assert (await manager.info())["features"]["cancellation"]["cancelled"] == 0
    assert await cancel(manager, "moving-1") == [("cancelled", "working")]


async def test_cancelled_records_expire_after_the_retention(tmp_path: Path) -> None:
    with pytest.raises(conveyor.ConveyorError, match="retention"):
        CancelFeature.from_config({"cancellation": {"retention": "soon"}})
    with pytest.raises(conveyor.ConveyorError, match="unknown key 'keep'"):
        CancelFeature.from_config({"cancellation": {"keep": "1h"}})
    feature = CancelFeature.from_config({"cancellation": {"retention": "2s"}})
    store = open_store("memory://")
    await store.open()
    manager = Manager(store, ManagerConfig(), features=[feature])
    await manager.push(job("queued-1"))
    assert await cancel(manager, "queued-1") == [("cancelled", "queued")]
    (record,) = await store.list_records("cancelled", time.time())
    assert record.expires_at is not None
    assert 1.5 < record.expires_at - time.time() <= 2
    assert await manager.locate("queued-1") is not None
    assert await store.get_records("cancelled", ["queued-1"], time.time() + 3) == {}


# ---------------------------------------------------------------------------------- workers


@pytest.fixture(params=STORE_BACKENDS)
async def store_server(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: MakeServer
) -> RunningServer:
    return await make_server(store_url(request.param, tmp_path, request))


def running_app(url: str) -> tuple[conveyor.App, dict[str, Any]]:
    """An app with an async and a sync job that run until they are cancelled."""
    app = conveyor.App(url)
    seen: dict[str, Any] = {"started": asyncio.Event(), "stopped": {}}
    loop = asyncio.get_running_loop()

    @app.job
    async def wait_forever(tag: str) -> None:
        seen["started"].set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen["stopped"][tag] = time.monotonic()
            raise

    @app.job
    def spin(tag: str) -> None:
        context = conveyor.current_job()
        loop.call_soon_threadsafe(seen["started"].set)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if context.cancelled:
                seen["stopped"][tag] = time.monotonic()
                context.raise_if_cancelled()
            time.sleep(0.005)

    seen["jobs"] = (wait_forever, spin)
    return app, seen


async def test_running_jobs_are_stopped_and_end_cancelled(store_server: RunningServer) -> None:
    app, seen = running_app(store_server.url)
    wait_forever, spin = seen["jobs"]
    async with app.worker(concurrency=4) as worker:
        for handler, tag in ((wait_forever, "async"), (spin, "sync")):
            seen["started"].clear()
            jid = await handler.push(tag)
            await asyncio.wait_for(seen["started"].wait(), 10)
            asked = time.monotonic()
            result = await app.cancel(jid)
            assert (result.outcome, result.was) == ("cancelled", "working")
            assert result.cancelled
            await eventually(lambda tag=tag: _true(tag in seen["stopped"]), within=5)
            assert seen["stopped"][tag] - asked < 1.0  # within a second, as promised
        await eventually(lambda: _true(worker.cancelled == 2), within=5)
        assert (worker.processed, worker.failed) == (0, 0)
        assert (await app.cancel(jid)).outcome == "already"
    info = await store_server.manager.info()
    assert info["faktory"]["sets"] == {"scheduled": 0, "retries": 0, "dead": 0, "working": 0}
    assert (info["faktory"]["total_processed"], info["faktory"]["total_failures"]) == (0, 0)
    assert info["features"]["cancellation"]["cancelled"] == 2
    # the worker's FAILs came and retired the notices
    assert await store_server.manager.store.list_records("cancel-notices", time.time()) == []
    await app.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_a_cancel_sent_to_another_server_reaches_the_worker(
    redis_url: str, make_server: MakeServer
) -> None:
    """Two servers over one Redis: the worker is connected to A, the cancels go to B."""
    a = await make_server(redis_url)
    b = await make_server(redis_url)
    app, seen = running_app(a.url)
    canceller = conveyor.App(b.url)
    wait_forever, spin = seen["jobs"]
    delays = []
    async with app.worker(concurrency=4) as worker:
        for attempt in range(3):
            for handler in (wait_forever, spin):
                tag = f"{handler.name}-{attempt}"
                seen["started"].clear()
                jid = await handler.push(tag)
                await asyncio.wait_for(seen["started"].wait(), 10)
                asked = time.monotonic()
                assert (await canceller.cancel(jid)).outcome == "cancelled"
                await eventually(lambda tag=tag: _true(tag in seen["stopped"]), within=5)
                delays.append(seen["stopped"][tag] - asked)
        await eventually(lambda: _true(worker.cancelled == 6), within=5)
    # B wrote the notice; A reads notices every 0.5 s while a worker waits there
    assert statistics.median(delays) < 1.0, delays
    info = await b.manager.info()
    assert info["faktory"]["sets"]["retries"] == 0
    assert info["features"]["cancellation"]["cancelled"] == 6
    await app.aclose()
    await canceller.aclose()


# ---------------------------------------------------------------------------------- the wire


async def test_a_faktory_worker_that_never_hears_of_it_acks_or_fails_late_harmlessly(
    server: RunningServer, raw_client: RawConnect
) -> None:
    worker = await raw_client(server.port, hello=b'{"v":2,"wid":"faktory-1"}')
    admin = await raw_client(server.port)
    for jid in ("jid-00000001", "jid-00000002"):
        assert await admin.call(b"PUSH " + job(jid)) == b"+OK\r\n"
        assert jid.encode() in await worker.call(b"FETCH default")
    reply = await admin.call(b'ADMIN job.cancel {"jids":["jid-00000001","jid-00000002"]}')
    body = json.loads(reply.split(b"\r\n")[1])
    assert body["cancelled"] == 2
    assert [(j["jid"], j["outcome"], j["was"]) for j in body["jobs"]] == [
        ("jid-00000001", "cancelled", "working"),
        ("jid-00000002", "cancelled", "working"),
    ]
    # the job ran on and ended: its FAIL and ACK are answered +OK and change nothing
    fail = b'FAIL {"jid":"jid-00000001","errtype":"Boom","message":"late"}'
    assert await worker.call(fail) == b"+OK\r\n"
    assert await worker.call(b'ACK {"jid":"jid-00000002"}') == b"+OK\r\n"
    unknown = b'FAIL {"jid":"jid-99999999","errtype":"Boom","message":"x"}'
    assert await worker.call(unknown) == b"-ERR Job not found jid-99999999\r\n"
    info = json.loads((await admin.call(b"INFO")).split(b"\r\n")[1])
    assert info["faktory"]["sets"] == {"scheduled": 0, "retries": 0, "dead": 0, "working": 0}
    assert (info["faktory"]["total_processed"], info["faktory"]["total_failures"]) == (0, 0)
    assert info["features"]["cancellation"]["cancelled"] == 2


async def test_cancels_tells_each_connection_once_and_checks_its_input(
    server: RunningServer, raw_client: RawConnect
) -> None:
    hello = b'{"v":2,"wid":"w-1"}'
    worker, watcher = (
        await raw_client(server.port, hello=hello),
        await raw_client(server.port, hello=hello),
    )
    plain = await raw_client(server.port)
    assert await plain.call(b"CANCELS") == (
        b"-ERR CANCELS is for worker connections: say HELLO with a wid\r\n"
    )
    assert await watcher.call(b"CANCELS {") == (
        b'-ERR invalid CANCELS: expected {"wait": <seconds>} (Input data was truncated)\r\n'
    )
    assert await watcher.call(b'CANCELS {"wait":11}') == (
        b"-ERR CANCELS wait must be from 0 to 10 seconds\r\n"
    )
    assert await watcher.call(b'CANCELS {"wait":0,"x":1}') == (
        b'-ERR invalid CANCELS: expected {"wait": <seconds>} (Object contains unknown field '
        b"`x`)\r\n"
    )
    assert await watcher.call(b'CANCELS {"wait":0}') == b"$2\r\n[]\r\n"
    assert await plain.call(b"PUSH " + job("jid-00000001")) == b"+OK\r\n"
    assert b"jid-00000001" in await worker.call(b"FETCH default")
    await watcher.send(b'CANCELS {"wait":5}')  # waits ...
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await server.manager.feature(CancelFeature).cancel(["jid-00000001"])
    assert await watcher.reply() == b'$16\r\n["jid-00000001"]\r\n'  # ... and is woken at once
    assert time.monotonic() - started < 1
    assert await watcher.call(b'CANCELS {"wait":0.1}') == b"$2\r\n[]\r\n"  # told once
    again = await raw_client(server.port, hello=hello)  # a new connection (a reconnect)
    assert await again.call(b'CANCELS {"wait":0}') == b'$16\r\n["jid-00000001"]\r\n'
    fail = b'FAIL {"jid":"jid-00000001","errtype":"conveyor.JobCancelled","message":"c"}'
    assert await worker.call(fail) == b"+OK\r\n"
    third = await raw_client(server.port, hello=hello)
    assert await third.call(b'CANCELS {"wait":0}') == b"$2\r\n[]\r\n"  # reported: forgotten


async def test_a_waiting_cancels_does_not_hold_a_stopping_server(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await make_server()
    watcher = await raw_client(running.port, hello=b'{"v":2,"wid":"w-1"}')
    await watcher.send(b'CANCELS {"wait":10}')
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await running.server.stop()
    assert await watcher.closed_by_server(within=2)  # cut short, not answered after 10 s
    assert time.monotonic() - started < 5


async def test_admin_job_cancel_checks_its_input(server: RunningServer) -> None:
    client = await conveyor.App(server.url).connect()
    try:
        with pytest.raises(CommandError, match=r"job\.cancel takes from 1 to 1000 jids"):
            await client.admin("job.cancel", {"jids": []})
        with pytest.raises(CommandError, match=r"invalid ADMIN job\.cancel arguments"):
            await client.admin("job.cancel", {"jid": "x"})
        reports = await client.cancel(["nope-0001", "nope-0001"])
        assert [(r["jid"], r["outcome"]) for r in reports] == [("nope-0001", "unknown")]
    finally:
        await client.close()


def test_cancel_sync_works_from_plain_code(conveyor_server: TestServer) -> None:
    app = conveyor.App(conveyor_server.url)

    @app.job
    def later() -> None: ...

    jid = later.options(in_=3600).push_sync()
    result = app.cancel_sync(jid)
    assert (result.outcome, result.was, result.cancelled) == ("cancelled", "scheduled", True)
    app.close()


def test_the_retention_comes_from_the_config_file_and_a_bad_one_stops_the_server(
    tmp_path: Path,
) -> None:
    from conveyor.config import ConfigError, load_config

    config_file = tmp_path / "conveyor.toml"
    config_file.write_text('[cancellation]\nretention = "36h"\n')
    features = load_config({"config": str(config_file)}, environ={}).build_features()
    (feature,) = [f for f in features if isinstance(f, CancelFeature)]
    assert feature.retention == 36 * 3600
    running = CancelFeature()
    running.reconfigure(feature)  # SIGHUP
    assert running.retention == 36 * 3600
    config_file.write_text("[cancellation]\nretention = 5\n")
    with pytest.raises(ConfigError, match="retention must be a duration like 168h, not 5"):
        load_config({"config": str(config_file)}, environ={}).build_features()
