"""A unique PUSH on the fast path of in-process stores: the lock is claimed by the unique
feature's synchronous hook (``Feature.push_now`` over ``Records.claim_record_now``), not by
its coroutine, and every rule of the long way holds there: a duplicate is refused with
Faktory's bytes, the lock ends with the ACK (``unique_until: success``) or the FETCH
(``start``), a job refused after its claim (by a later feature) leaves no lock behind. On
memory and SQLite each test also checks that the coroutine hook never ran (else the rules
would be checked on the long way only); on Redis, that the synchronous one never did.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from conveyor.job import Job
from conveyor.manager.features.unique import SPACE, UniqueJobs
from conveyor.manager.middleware import Next, PushContext
from tests.support.features import FeatureServer, bulk_json, encode, job
from tests.support.server import RawClient, RawConnect, RunningServer

OK = b"+OK\r\n"
NOT_UNIQUE = b"-NOTUNIQUE Job not unique\r\n"


class Calls:
    """How often each of the unique feature's push hooks ran."""

    def __init__(self) -> None:
        self.coroutine = 0
        self.now = 0


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url)


@pytest.fixture
def calls(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Calls:
    counted = Calls()
    feature = server.manager.feature(UniqueJobs)
    push, push_now = feature.push, feature.push_now

    async def counted_push(ctx: PushContext, call_next: Next) -> None:
        counted.coroutine += 1
        await push(ctx, call_next)

    def counted_push_now(job: Job) -> bool:
        counted.now += 1
        return push_now(job)

    # the manager planned its hooks at start: plan them again around the counting ones
    monkeypatch.setattr(feature, "push", counted_push)
    monkeypatch.setattr(feature, "push_now", counted_push_now)
    server.manager._plan_pushes()
    return counted


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    hello = encode({"v": 2, "wid": "w1", "hostname": "h", "pid": 1})
    return await raw_client(server.port, hello=hello)


def unique(key: str, **custom: Any) -> bytes:
    return b"PUSH " + encode(job(args=[key], custom={"unique_for": 600, **custom}))


def took_the_fast_path(server: RunningServer, calls: Calls, pushes: int) -> None:
    if server.manager.store.in_process:
        assert (calls.coroutine, calls.now) == (0, pushes)
    else:
        assert (calls.coroutine, calls.now) == (pushes, 0)


async def locks(server: RunningServer) -> int:
    return await server.manager.store.count_records(SPACE, time.time())


async def test_a_duplicate_is_refused_on_the_fast_path(
    server: RunningServer, conn: RawClient, calls: Calls
) -> None:
    assert await conn.call(unique("a")) == OK
    assert await conn.call(unique("a")) == NOT_UNIQUE
    assert await conn.call(unique("b")) == OK
    took_the_fast_path(server, calls, 3)
    assert (await server.manager.store.queue_sizes())["default"] == 2
    assert await locks(server) == 2


async def test_the_ack_releases_a_lock_claimed_on_the_fast_path(
    server: RunningServer, conn: RawClient, calls: Calls
) -> None:
    assert await conn.call(unique("a")) == OK
    jid = bulk_json(await conn.call(b"FETCH default"))["jid"]
    assert await conn.call(unique("a")) == NOT_UNIQUE  # held while it runs (success)
    assert await conn.call(b"ACK " + encode({"jid": jid})) == OK
    assert await locks(server) == 0
    assert await conn.call(unique("a")) == OK
    took_the_fast_path(server, calls, 3)


async def test_the_fetch_releases_a_start_lock_claimed_on_the_fast_path(
    server: RunningServer, conn: RawClient, calls: Calls
) -> None:
    assert await conn.call(unique("a", unique_until="start")) == OK
    assert await conn.call(unique("a", unique_until="start")) == NOT_UNIQUE
    assert bulk_json(await conn.call(b"FETCH default"))["args"] == ["a"]
    assert await conn.call(unique("a", unique_until="start")) == OK
    took_the_fast_path(server, calls, 3)


async def test_a_job_refused_after_its_claim_leaves_no_lock(
    server: RunningServer, conn: RawClient, calls: Calls
) -> None:
    """The batch feature comes after unique: a unique job naming a batch that does not exist
    is refused once its lock is claimed; the lock goes with it."""
    refused = await conn.call(unique("a", bid="no-such-batch"))
    assert refused.startswith(b"-ERR")
    assert await locks(server) == 0
    assert await server.manager.store.queue_sizes() in ({}, {"default": 0})
    assert await conn.call(unique("a")) == OK
    assert calls.now + calls.coroutine >= 2


async def test_a_bad_unique_value_claims_nothing_on_the_fast_path(
    server: RunningServer, conn: RawClient, calls: Calls
) -> None:
    for bad in ({"unique_until": "never"}, {"unique_for": 0}, {"unique_for": True}):
        pushed = b"PUSH " + encode(job(args=["a"], custom={"unique_for": 600, **bad}))
        assert (await conn.call(pushed)).startswith(b"-ERR")
    assert await locks(server) == 0
    assert await server.manager.store.queue_sizes() in ({}, {"default": 0})
    assert await conn.call(unique("a")) == OK
    took_the_fast_path(server, calls, 4)
