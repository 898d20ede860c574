"""Admission and flow control with two conveyor servers over one Redis: every check-and-act is
one script, so the limits hold for the servers together, and a slot freed on one server wakes
the FETCH waiting on the other."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from conveyor.manager import ManagerConfig
from tests.support.features import FeatureServer, bulk_json, encode, job
from tests.support.server import RawClient, RawConnect, RunningServer

OK = b"+OK\r\n"
WAIT = 2.0
CONFIG = ManagerConfig(fetch_wait_seconds=WAIT, scheduler_interval_seconds=0.02)
TABLES = {
    "throttles": {"api": {"concurrency": 3, "timeout": 60}},
    "queues": {"paced": {"rate_limit": 50}, "bounded": {"backpressure": 4}},
}


@pytest.fixture
async def servers(redis_url: str, feature_server: FeatureServer) -> list[RunningServer]:
    return [await feature_server(redis_url, TABLES, CONFIG) for _ in range(2)]


async def connect(raw_client: RawConnect, server: RunningServer, wid: str) -> RawClient:
    hello = encode({"v": 2, "wid": wid, "hostname": "h", "pid": 1})
    return await raw_client(server.port, hello=hello)


async def test_a_duplicate_pushed_to_the_other_server_is_refused(
    servers: list[RunningServer], raw_client: RawConnect
) -> None:
    a, b = [await connect(raw_client, s, f"p{i}") for i, s in enumerate(servers)]
    first = job(queue="u", custom={"unique_for": 60})
    assert await a.call(b"PUSH " + encode(first)) == OK
    assert await b.call(b"PUSH " + encode({**first, "jid": "second-01"})) == (
        b"-NOTUNIQUE Job not unique\r\n"
    )
    assert bulk_json(await b.call(b"FETCH u"))["jid"] == first["jid"]
    assert await b.call(b"ACK " + encode({"jid": first["jid"]})) == OK  # acked on B ...
    assert await a.call(b"PUSH " + encode({**first, "jid": "third-001"})) == OK  # ... free on A


async def test_backpressure_holds_for_the_servers_together(
    servers: list[RunningServer], raw_client: RawConnect
) -> None:
    clients = [await connect(raw_client, s, f"p{i}") for i, s in enumerate(servers * 6)]
    replies = await asyncio.gather(
        *(c.call(b"PUSH " + encode(job(queue="bounded"))) for c in clients)
    )
    assert Counter(replies) == {OK: 4, b"-ERR queue bounded is full (4 jobs)\r\n": 8}
    assert (await servers[0].manager.store.queue_sizes())["bounded"] == 4


async def test_a_throttle_of_3_is_never_exceeded_by_6_workers_on_2_servers(
    servers: list[RunningServer], raw_client: RawConnect
) -> None:
    producer = await connect(raw_client, servers[0], "producer")
    jids = [job(queue="api") for _ in range(30)]
    assert bulk_json(await producer.call(b"PUSHB " + encode(jids))) == {}
    running = peak = 0
    seen: list[str] = []

    async def work(client: RawClient) -> None:
        nonlocal running, peak
        while len(seen) < len(jids):
            reply = await client.call(b"FETCH api", within=WAIT + 2)
            if reply == b"$-1\r\n":
                continue
            jid = bulk_json(reply)["jid"]
            running += 1
            peak = max(peak, running)
            seen.append(jid)
            await asyncio.sleep(0.03)  # the work
            running -= 1
            assert await client.call(b"ACK " + encode({"jid": jid})) == OK

    workers = [await connect(raw_client, servers[i % 2], f"w{i}") for i in range(6)]
    await asyncio.wait_for(asyncio.gather(*(work(w) for w in workers)), 30)
    assert peak == 3  # reached, never exceeded
    assert sorted(seen) == sorted(j["jid"] for j in jids)  # each job once: none lost or doubled


async def test_an_ack_on_one_server_wakes_the_fetch_held_back_on_the_other(
    servers: list[RunningServer], raw_client: RawConnect
) -> None:
    on_a = [await connect(raw_client, servers[0], f"a{i}") for i in range(3)]
    on_b = await connect(raw_client, servers[1], "b0")
    await on_a[0].call(b"PUSHB " + encode([job(queue="api") for _ in range(4)]))
    held = [bulk_json(await c.call(b"FETCH api"))["jid"] for c in on_a]

    async def timed() -> tuple[Any, float]:
        started = time.monotonic()
        reply = await on_b.call(b"FETCH api", within=WAIT + 2)
        return reply, time.monotonic() - started

    waiting = asyncio.create_task(timed())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert await on_a[0].call(b"ACK " + encode({"jid": held[0]})) == OK
    reply, seconds = await waiting
    assert reply.startswith(b"$")
    assert reply != b"$-1\r\n"
    assert seconds < WAIT - 0.4  # woken through Redis, not at the end of its wait


@pytest.mark.slow
async def test_a_rate_limit_of_50_per_second_holds_over_10_seconds_on_2_servers(
    servers: list[RunningServer], raw_client: RawConnect
) -> None:
    producer = await connect(raw_client, servers[0], "producer")
    for _ in range(7):
        batch = [job(queue="paced") for _ in range(100)]
        assert bulk_json(await producer.call(b"PUSHB " + encode(batch))) == {}
    fetched: list[float] = []
    jids: list[str] = []
    started = time.monotonic()
    stop = started + 11.0

    async def work(client: RawClient) -> None:
        while time.monotonic() < stop:
            reply = await client.call(b"FETCH paced", within=WAIT + 2)
            if reply == b"$-1\r\n":
                continue
            fetched.append(time.monotonic() - started)
            jid = bulk_json(reply)["jid"]
            jids.append(jid)
            await client.call(b"ACK " + encode({"jid": jid}))

    workers = [await connect(raw_client, servers[i % 2], f"w{i}") for i in range(8)]
    await asyncio.gather(*(work(w) for w in workers))
    assert len(set(jids)) == len(jids)
    first_second = sum(1 for t in fetched if t < 1.0)
    assert first_second <= 50 + 50 + 5  # the full bucket, plus a second of tokens
    window = sum(1 for t in fetched if 1.0 <= t < 11.0)  # 10 s once the burst is spent
    assert 450 <= window <= 550, window
