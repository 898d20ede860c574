"""Lost Redis replies to a throttled FETCH answered from the reply's step (``manager/soon.py``,
``RedisLimits.reserve_limited_soon``): the job is handed out once, with one slot; a FETCH
whose every reply is lost gets an honest error and the job goes back to its queue."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from conveyor.manager.features.registry import build_features
from conveyor.store.limits import QueueLimit
from tests.support.fault_proxy import FaultProxy
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.test_redis_lost_replies_fwp import K, direct, push_line, queued, sha

__all__ = ["direct"]  # the fixture, used here by name

TABLES = {"throttles": {"default": {"concurrency": 2, "timeout": 600}}}
LIMIT = QueueLimit(concurrency=2, timeout=600)


@pytest.fixture
async def running(
    fault_proxy: FaultProxy, direct: aioredis.Redis, make_server: MakeServer
) -> RunningServer:
    url = fault_proxy.url + "?retry_for=0.5"
    return await make_server(url, features=build_features(TABLES))


@pytest.fixture
async def client(running: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(running.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')


async def in_use(running: RunningServer) -> int:
    usage = await running.manager.store.limit_usage({"default": LIMIT}, time.time())
    return usage["default"].in_use


async def test_a_throttled_fetch_whose_reply_is_lost_hands_out_the_job_once(
    running: RunningServer, client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    for jid in ("jid-00000001", "jid-00000002"):
        assert await client.call(push_line(jid)) == b"+OK\r\n"
    fault_proxy.lose_reply(sha("limits_reserve"))
    assert b'"jid-00000001"' in await client.call(b"FETCH default")
    assert fault_proxy.cuts == 1
    assert await direct.hkeys(K.res) == [b"jid-00000001"]
    assert await queued(direct) == ["jid-00000002"]
    assert await in_use(running) == 1  # one slot, not two


async def test_a_throttled_fetch_whose_every_reply_is_lost_gives_the_job_back(
    running: RunningServer, client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    assert await client.call(push_line("jid-00000001")) == b"+OK\r\n"
    fault_proxy.lose_reply(sha("limits_reserve"), times=1000)
    reply = await client.call(b"FETCH default")
    assert b"outcome unknown" in reply
    fault_proxy.clear()
    deadline = time.monotonic() + 5
    while await queued(direct) != ["jid-00000001"]:
        assert time.monotonic() < deadline, "the job was not given back"
        await asyncio.sleep(0.02)
    assert b'"jid-00000001"' in await client.call(b"FETCH default")
    assert await direct.hkeys(K.res) == [b"jid-00000001"]
    assert await in_use(running) == 1  # the slot of the lost reservation was found ended
