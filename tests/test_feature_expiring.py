"""Expiring jobs (``custom.expires_at`` / ``expires_in``) over the wire, on every backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conveyor.manager.features.expiring import DEADLINES, ExpiringJobs
from conveyor.manager.features.registry import build_features
from conveyor.store.base import SortedSet
from conveyor.timefmt import day_key, format_time, parse_time
from tests.support.features import FeatureServer, bulk_json, encode, job
from tests.support.server import TEST_TIMINGS, MakeServer, RawClient, RawConnect, RunningServer

OK = b"+OK\r\n"


@pytest.fixture
async def server(backend_url: str, make_server: MakeServer) -> RunningServer:
    features = build_features({})
    for feature in features:  # a sweep much more often than the default 1 s
        if isinstance(feature, ExpiringJobs):
            feature.sweep_interval_seconds = 0.05
    return await make_server(backend_url, config=TEST_TIMINGS, features=features)


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')


def expiring(seconds: float, **fields: Any) -> dict[str, Any]:
    custom = {"expires_at": format_time(time.time() + seconds), **fields.pop("custom", {})}
    return job(**{"queue": "xq", **fields}, custom=custom)


async def expired_counts(conn: RawClient) -> dict[str, Any]:
    return bulk_json(await conn.call(b"INFO"))["features"]["expiring"]


async def test_an_expired_job_is_dropped_at_fetch_and_the_fetch_goes_on(
    conn: RawClient, server: RunningServer
) -> None:
    stale, fresh = expiring(0.2), expiring(60)
    for pushed in (stale, expiring(0.2), fresh):
        assert await conn.call(b"PUSH " + encode(pushed)) == OK
    await asyncio.sleep(0.25)
    # the sweep may take them first; either way the FETCH gets the fresh job, never a stale one
    assert bulk_json(await conn.call(b"FETCH xq"))["jid"] == fresh["jid"]
    assert await conn.call(b"FETCH xq") == b"$-1\r\n"
    counts = await expired_counts(conn)
    assert counts == {"expired": 2, "expired_today": 2}
    info = bulk_json(await conn.call(b"INFO"))
    assert info["faktory"]["total_processed"] == 0  # dropped, not processed
    assert info["faktory"]["sets"]["working"] == 1


async def test_fetch_drops_expired_jobs_the_sweep_has_not_seen(
    feature_server: FeatureServer, backend_url: str, raw_client: RawConnect
) -> None:
    server = await feature_server(backend_url)  # the default 1 s sweep, not yet run
    conn = await raw_client(server.port, hello=b'{"v":2,"wid":"w1"}')
    stale, fresh = expiring(0.05), expiring(60)
    assert await conn.call(b"PUSH " + encode(stale)) == OK
    assert await conn.call(b"PUSH " + encode(fresh)) == OK
    await asyncio.sleep(0.1)
    assert bulk_json(await conn.call(b"FETCH xq"))["jid"] == fresh["jid"]
    assert (await expired_counts(conn))["expired"] == 1


async def test_expires_in_becomes_expires_at_at_push(conn: RawClient) -> None:
    before = time.time()
    pushed = job(queue="xq", custom={"expires_in": 60, "other": 1})
    assert await conn.call(b"PUSH " + encode(pushed)) == OK
    fetched = bulk_json(await conn.call(b"FETCH xq"))
    assert set(fetched["custom"]) == {"expires_at", "other"}
    expires = parse_time(fetched["custom"]["expires_at"])
    assert before + 60 <= expires <= time.time() + 60


async def test_a_job_expired_before_its_push_is_accepted_and_never_stored(
    conn: RawClient, server: RunningServer
) -> None:
    past = expiring(-5)
    assert await conn.call(b"PUSH " + encode(past)) == OK
    assert bulk_json(await conn.call(b"PUSHB " + encode([expiring(-5)]))) == {}
    assert await server.manager.store.queue_sizes() == {}
    assert (await expired_counts(conn))["expired"] == 2


async def test_the_sweep_empties_queues_and_sets_of_expired_jobs(
    conn: RawClient, server: RunningServer
) -> None:
    store = server.manager.store
    queued, kept = expiring(0.1), expiring(60)
    scheduled = expiring(0.1, at=format_time(time.time() + 30))
    for pushed in (queued, kept, scheduled):
        assert await conn.call(b"PUSH " + encode(pushed)) == OK
    retrying = expiring(0.3, queue="xr")
    assert await conn.call(b"PUSH " + encode(retrying)) == OK
    assert bulk_json(await conn.call(b"FETCH xr"))["jid"] == retrying["jid"]
    failed = encode({"jid": retrying["jid"], "errtype": "E", "message": "x"})
    assert await conn.call(b"FAIL " + failed) == OK
    assert await store.set_size(SortedSet.RETRIES) == 1
    await asyncio.sleep(0.6)  # expired, and swept every 50 ms: nobody fetched anything
    assert (await store.queue_sizes())["xq"] == 1
    assert [j.jid for j in (await store.list_queue("xq", 0, 10)).items] == [kept["jid"]]
    assert await store.set_size(SortedSet.SCHEDULED) == 0
    assert await store.set_size(SortedSet.RETRIES) == 0
    assert (await expired_counts(conn))["expired"] == 3
    assert await store.count_deadlines(DEADLINES) == 1  # the kept job's


async def test_a_job_being_worked_on_when_it_expires_runs_on(
    conn: RawClient, server: RunningServer
) -> None:
    running = expiring(0.1)
    assert await conn.call(b"PUSH " + encode(running)) == OK
    assert bulk_json(await conn.call(b"FETCH xq"))["jid"] == running["jid"]
    await asyncio.sleep(0.3)
    assert await conn.call(b"ACK " + encode({"jid": running["jid"]})) == OK
    info = bulk_json(await conn.call(b"INFO"))
    assert info["faktory"]["total_processed"] == 1
    assert info["features"]["expiring"]["expired"] == 0
    assert await server.manager.store.count_deadlines(DEADLINES) == 0  # the ACK dropped it


async def test_an_expired_unique_job_releases_its_lock(conn: RawClient) -> None:
    first = expiring(0.1, custom={"unique_for": 600})
    assert await conn.call(b"PUSH " + encode(first)) == OK
    twin = {**first, "jid": "twin-000001"}
    assert await conn.call(b"PUSH " + encode(twin)) == b"-NOTUNIQUE Job not unique\r\n"
    await asyncio.sleep(0.3)
    again = expiring(60, custom={"unique_for": 600})
    again["args"] = first["args"]
    assert await conn.call(b"PUSH " + encode(again)) == OK


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"expires_at": "tomorrow"}, b"invalid expires_at \"tomorrow\": 'tomorrow' is not an RFC"),
        ({"expires_at": 1700000000}, b"invalid expires_at 1700000000: must be an RFC 3339 time"),
        ({"expires_in": "1h"}, b'invalid expires_in "1h": must be a number of seconds'),
        ({"expires_in": 0}, b"invalid expires_in 0: must be a number of seconds, above 0"),
        ({"expires_in": -1}, b"invalid expires_in -1: must be a number of seconds"),
        (
            {"expires_in": 60, "expires_at": "2030-01-01T00:00:00Z"},
            b"custom.expires_at and custom.expires_in cannot both be set",
        ),
    ],
)
async def test_bad_expiry_values_get_a_clear_error_and_store_nothing(
    conn: RawClient, server: RunningServer, custom: dict[str, Any], error: bytes
) -> None:
    reply = await conn.call(b"PUSH " + encode(job(queue="xq", custom=custom)))
    assert reply.startswith(b"-ERR " + error), reply
    assert await server.manager.store.queue_sizes() == {}
    assert (await expired_counts(conn))["expired"] == 0


async def test_expired_jobs_are_counted_per_day(conn: RawClient, server: RunningServer) -> None:
    feature = next(f for f in server.manager.features if isinstance(f, ExpiringJobs))
    await conn.call(b"PUSH " + encode(expiring(-1)))
    today = day_key(time.time())
    assert await feature.expired_per_day([today, "2000-01-01"]) == {today: 1, "2000-01-01": 0}
