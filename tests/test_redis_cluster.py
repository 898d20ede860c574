"""The whole store contract suite again, on a real 3-master Redis Cluster.

The contract tests are imported into this module, where ``backend_store`` is overridden to
open a ``RedisStore`` on the session's cluster (``tests/support/redis_cluster.py``). Every
script declares its keys and every key shares one hash tag, so a script that touched an
undeclared or cross-slot key would fail here with CROSSSLOT.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from conveyor.store.base import QueuedJob, Store
from conveyor.store.redis import RedisStore
from tests.support.server import MakeServer, RawConnect
from tests.test_store_contract import *  # noqa: F403  (re-collected here, on the Cluster)
from tests.test_store_endings import *  # noqa: F403
from tests.test_store_limits import *  # noqa: F403


@pytest.fixture
async def backend_store(redis_cluster_url: str) -> AsyncIterator[Store]:
    store = RedisStore.from_url(redis_cluster_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_cluster_keys_share_one_slot(redis_cluster_url: str) -> None:
    import redis

    store = RedisStore.from_url(redis_cluster_url + "?namespace=shard1&socket_timeout=3")
    await store.open()
    try:
        await store.enqueue([QueuedJob(f"q{i}", f"j{i}", b"{}", 60) for i in range(20)])
        assert len(await store.queue_sizes()) == 20
    finally:
        await store.close()
    nodes_with_keys = 0
    for host_port in redis_cluster_url.removeprefix("redis+cluster://").split(","):
        host, port = host_port.split(":")
        client = redis.Redis(host=host, port=int(port))
        keys = client.keys("*")
        client.close()
        if keys:
            nodes_with_keys += 1
            assert all(key.startswith(b"{shard1}:") for key in keys)
            # 20 queues, the queue-name set and the enqueue call's token: one slot for all
            assert len(keys) == 22
            assert sum(key.startswith(b"{shard1}:op:") for key in keys) == 1
    assert nodes_with_keys == 1


async def test_cluster_wakeups_cross_stores(redis_cluster_url: str) -> None:
    a, b = RedisStore.from_url(redis_cluster_url), RedisStore.from_url(redis_cluster_url)
    await a.open()
    await b.open()
    try:
        woken: list[str] = []
        b.set_ready_listener(woken.append)
        await b.wait_subscribed()
        start = time.monotonic()
        await a.enqueue([QueuedJob("mail", "jid-00000001", b"{}", 60)])
        while "mail" not in woken:
            assert time.monotonic() - start < 2, "no wake-up through the Cluster"
            await asyncio.sleep(0.001)
        assert time.monotonic() - start < 0.1
    finally:
        await a.close()
        await b.close()


async def test_two_servers_over_the_cluster_process_every_job_once(
    redis_cluster_url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    servers = [await make_server(redis_cluster_url) for _ in range(2)]
    total = 600
    producers = [await raw_client(s.port) for s in servers]
    for i in range(total):
        job = {"jid": f"load-{i:08d}", "jobtype": "Work", "args": [i], "queue": f"q{i % 3}"}
        assert await producers[i % 2].call(b"PUSH " + json.dumps(job).encode()) == b"+OK\r\n"
    seen: list[str] = []

    async def consume(port: int) -> None:
        client = await raw_client(port)
        while True:
            reply = await client.call(b"FETCH q0 q1 q2")
            if reply == b"$-1\r\n":
                return
            jid = json.loads(reply.split(b"\r\n")[1])["jid"]
            seen.append(jid)
            assert await client.call(b'ACK {"jid":"%s"}' % jid.encode()) == b"+OK\r\n"

    await asyncio.gather(*(consume(s.port) for s in servers for _ in range(3)))
    assert sorted(seen) == [f"load-{i:08d}" for i in range(total)]
    info = await servers[0].manager.info()
    assert info["faktory"]["total_processed"] == total
