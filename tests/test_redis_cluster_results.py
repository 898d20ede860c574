"""The completions and signals contracts again, on a real 3-master Redis Cluster: the
completing ACK (endings_end.lua, with a batch's keys too) and the signal channel stay in the
namespace's slot (a cross-slot key would fail here with CROSSSLOT), and a signal reaches the
other store through the shard channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from conveyor.store.base import Store
from conveyor.store.redis import RedisStore
from tests.test_store_ack_all import (  # noqa: F401  (re-collected here, on the Cluster)
    test_an_ack_that_keeps_nothing_still_moves_the_batch,
    test_one_ack_keeps_counts_frees_its_slot_and_moves_its_batch,
)
from tests.test_store_completed import (  # noqa: F401  (re-collected here, on the Cluster)
    test_a_signal_reaches_the_listener_before_it_returns,
    test_complete_ends_the_reservation_counts_it_and_keeps_the_entry,
    test_complete_without_a_reservation_changes_nothing,
    test_completed_entries_list_filter_and_purge_like_any_set,
    test_flush_empties_the_completed_set,
    test_one_ack_keeps_some_jobs_and_ends_the_others,
    test_reservations_of_many_jids_in_order,
)


@pytest.fixture
async def backend_store(redis_cluster_url: str) -> AsyncIterator[Store]:
    store = RedisStore.from_url(redis_cluster_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_cluster_signals_cross_stores(redis_cluster_url: str) -> None:
    a, b = RedisStore.from_url(redis_cluster_url), RedisStore.from_url(redis_cluster_url)
    await a.open()
    await b.open()
    heard: list[tuple[str, Sequence[str] | None]] = []
    b.set_signal_listener(lambda topic, keys: heard.append((topic, keys)))
    try:
        await b.wait_subscribed()
        await asyncio.sleep(0.05)
        heard.clear()
        await a.signal("result", ["j1", "j2"])
        deadline = time.monotonic() + 5
        while ("result", ["j1", "j2"]) not in [(t, list(k) if k else k) for t, k in heard]:
            assert time.monotonic() < deadline, heard
            await asyncio.sleep(0.005)
    finally:
        await a.close()
        await b.close()
