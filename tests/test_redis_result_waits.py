"""A result's signal on Redis goes only where a ``RESULT`` waits for it: the waiting server
registers the jid in ``{ns}:sw:result`` (``Signals.expect``, ``lua/signal_expect.lua``) before
its last look, and the ACK's script publishes only the jids it finds registered, using each
registration up. Checked with real servers over one real redis-server, a store of its own
listening on the signal channel: no waiter, no message; waiters on two servers both woken,
through a lost subscription too; a registration (a server that died while it waited) ends with
its wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from conveyor.manager.features import results
from conveyor.store.redis import RedisStore
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.test_server_results import WORKER_HELLO, body, fetched

WAITS = "{conveyor}:sw:result"
Heard = list[tuple[str, list[str] | None]]


@pytest.fixture
async def heard(redis_url: str) -> AsyncIterator[Heard]:
    """Every signal another store publishes, as a third server would hear it."""
    store = RedisStore.from_url(redis_url)
    await store.open()
    got: Heard = []
    store.set_signal_listener(lambda t, k: got.append((t, None if k is None else list(k))))
    try:
        await store.wait_subscribed()
        got.clear()  # the "look at everything" of its own subscription
        yield got
    finally:
        await store.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    raw = aioredis.Redis.from_url(redis_url)
    try:
        yield raw
    finally:
        await raw.aclose()


async def _until(condition: Callable[[], Any], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def _registered(
    client: aioredis.Redis, jid: str, within: float = 5.0, present: bool = True
) -> None:
    deadline = time.monotonic() + within
    while (await client.zscore(WAITS, jid) is not None) != present:
        assert time.monotonic() < deadline, f"{jid} registered: {not present}"
        await asyncio.sleep(0.005)


async def _servers(make_server: MakeServer, redis_url: str, n: int) -> list[RunningServer]:
    made = [await make_server(redis_url) for _ in range(n)]
    for server in made:
        await server.manager.store.wait_subscribed()  # type: ignore[attr-defined]
    return made


async def test_a_result_nobody_waits_for_is_not_published(
    redis_url: str,
    make_server: MakeServer,
    raw_client: RawConnect,
    heard: Heard,
    client: aioredis.Redis,
) -> None:
    (b,) = await _servers(make_server, redis_url, 1)
    worker = await raw_client(b.port, hello=WORKER_HELLO)
    for i, custom in enumerate(({"result_ttl": 60}, {"retain": 60}, {"result_ttl": 60})):
        jid = f"jid-alone{i:03d}"
        await fetched(worker, jid, custom=custom)
        assert await worker.call(b'ACK {"jid":"%s","result":"%d"}' % (jid.encode(), i)) == (
            b"+OK\r\n"
        )
    # stored all the same (the ACK's one script run), and read back on the same server
    assert body(await worker.call(b'RESULT {"jid":"jid-alone000"}'))["result"] == 0
    assert body(await worker.call(b'RESULT {"jid":"jid-alone002","wait":1}'))["result"] == 2
    await asyncio.sleep(0.1)
    assert heard == []  # before: one message a result, which every server read and dropped
    assert await client.exists(WAITS) == 0


async def test_an_ackb_publishes_only_the_jids_waited_for_and_uses_them_up(
    redis_url: str,
    make_server: MakeServer,
    raw_client: RawConnect,
    heard: Heard,
    client: aioredis.Redis,
) -> None:
    a, b = await _servers(make_server, redis_url, 2)
    waiter = await raw_client(a.port)
    worker = await raw_client(b.port, hello=WORKER_HELLO)
    jids = [f"jid-ackb{i:04d}" for i in range(3)]
    for jid in jids:
        assert await worker.call(
            b'PUSH {"jid":"%s","jobtype":"Work","args":[],"custom":{"result_ttl":60}}'
            % jid.encode()
        ) == (b"+OK\r\n")
    assert len(body(await worker.call(b"FETCHB 3 default"))) == 3
    await waiter.send(b'RESULT {"jid":"jid-ackb0001","wait":10}')
    await _registered(client, "jid-ackb0001")
    items = b",".join(
        b'{"jid":"%s","result":"%d"}' % (jid.encode(), i) for i, jid in enumerate(jids)
    )
    assert await worker.call(b"ACKB [" + items + b"]") == b"+OK\r\n"
    assert body(await waiter.reply(within=5))["result"] == 1
    await _until(lambda: heard)
    await asyncio.sleep(0.05)
    assert heard == [("result", ["jid-ackb0001"])]
    assert await client.zscore(WAITS, "jid-ackb0001") is None  # used up by the ACK


async def test_waiters_on_two_servers_are_woken_after_a_lost_subscription(
    redis_url: str, make_server: MakeServer, raw_client: RawConnect, client: aioredis.Redis
) -> None:
    """The subscriptions are dropped while both wait: each server, back, looks again and
    registers again (a registration the store lost would otherwise go unnoticed); the ACK on a
    third server then wakes both."""
    a, b, c = await _servers(make_server, redis_url, 3)
    waiters = [await raw_client(server.port) for server in (a, c)]
    worker = await raw_client(b.port, hello=WORKER_HELLO)
    await fetched(worker, "jid-twowaiters", custom={"result_ttl": 60})
    for waiter in waiters:
        await waiter.send(b'RESULT {"jid":"jid-twowaiters","wait":10}')
    await _registered(client, "jid-twowaiters")
    await client.delete(WAITS)  # as a failover to a replica that missed the registrations
    assert await client.client_kill_filter(_type="pubsub") >= 3
    await _registered(client, "jid-twowaiters")  # registered again by their next look
    for server in (a, b, c):
        await server.manager.store.wait_subscribed()  # type: ignore[attr-defined]
    assert await worker.call(b'ACK {"jid":"jid-twowaiters","result":"42"}') == b"+OK\r\n"
    for waiter in waiters:
        assert body(await waiter.reply(within=5))["result"] == 42


async def test_a_registration_ends_with_its_wait_when_its_server_is_gone(
    redis_url: str,
    make_server: MakeServer,
    raw_client: RawConnect,
    heard: Heard,
    client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(results, "EXPECT_MARGIN_SECONDS", 0.1)
    a, b = await _servers(make_server, redis_url, 2)
    waiter: RawClient = await raw_client(a.port)
    await waiter.send(b'RESULT {"jid":"jid-orphan","wait":0.4}')
    await _registered(client, "jid-orphan")
    ttl = await client.pttl(WAITS)
    assert 0 < ttl <= 500  # the wait and its margin, by Redis's clock
    await a.stop()  # the waiting server goes away: nothing unregisters it
    worker = await raw_client(b.port, hello=WORKER_HELLO)
    await fetched(worker, "jid-orphan", custom={"result_ttl": 60})
    await _registered(client, "jid-orphan", within=2, present=False)  # expired with its wait
    assert await client.exists(WAITS) == 0
    assert await worker.call(b'ACK {"jid":"jid-orphan","result":"1"}') == b"+OK\r\n"
    await asyncio.sleep(0.1)
    assert heard == []


async def test_expired_registrations_are_dropped_by_the_next_one(
    redis_url: str, client: aioredis.Redis
) -> None:
    store = RedisStore.from_url(redis_url)
    await store.open()
    try:
        await store.expect("result", "short", 0.05)
        await store.expect("result", "long", 30)
        await store.expect("result", "long", 1)  # a shorter wait never shortens one
        assert await client.zcard(WAITS) == 2
        assert await client.pttl(WAITS) > 29_000  # the set lives as long as its last one
        await asyncio.sleep(0.1)
        await store.expect("result", "other", 30)
        members = sorted(m.decode() for m in await client.zrange(WAITS, 0, -1))
        assert members == ["long", "other"]  # "short" expired, and was dropped
    finally:
        await store.close()
