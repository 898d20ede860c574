"""The whole store contract suite again, on a real 3-master Redis Cluster.

The contract tests are imported into this module, where ``backend_store`` is overridden to
open a ``RedisStore`` on the session's cluster (``tests/support/redis_cluster.py``). Every
script declares its keys and every key shares one hash tag, so a script that touched an
undeclared or cross-slot key would fail here with CROSSSLOT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.store.base import QueuedJob, Store
from conveyor.store.redis import RedisStore
from tests.test_store_contract import *  # noqa: F403  (re-collected here, on the Cluster)


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

    store = RedisStore.from_url(redis_cluster_url + "?namespace=shard1")
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
            assert len(keys) == 21  # 20 queues + the queue-name set
    assert nodes_with_keys == 1
