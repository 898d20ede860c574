"""The groups and cancels contract suites again, on a real 3-master Redis Cluster: their
scripts declare every key they touch, all under one hash tag, so a cross-slot key would fail
here with CROSSSLOT (see tests/test_redis_cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor.store.base import Store
from conveyor.store.redis import RedisStore
from tests.test_store_cancels import *  # noqa: F403  (re-collected here, on the Cluster)
from tests.test_store_groups import *  # noqa: F403
from tests.test_store_groups import test_sqlite_moves_a_member_whose_payload_changed_on_disk_aside

del test_sqlite_moves_a_member_whose_payload_changed_on_disk_aside  # SQLite's own, run there


@pytest.fixture
async def backend_store(redis_cluster_url: str) -> AsyncIterator[Store]:
    store = RedisStore.from_url(redis_cluster_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
