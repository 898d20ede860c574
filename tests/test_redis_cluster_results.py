"""The completions and signals contracts again, on a real 3-master Redis Cluster: the
completing ACK (endings_end.lua, with a batch's keys too), the signal channel and the
registrations of waited-for results stay in the namespace's slot (a cross-slot key would fail
here with CROSSSLOT), and a signal reaches the other store through the shard channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from conveyor.store.base import Reservation, SetEntry, Store
from conveyor.store.records import Record
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
from tests.test_store_settle import DAY, Settle, reserve


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


class _Telling(Settle):
    """A ``settle`` that names its signal, as the results feature's does."""

    topic = "result"

    def __init__(self) -> None:
        super().__init__()
        self.told: list[str] = []

    def __call__(self, reservation: Reservation) -> tuple[Record | None, SetEntry | None]:
        self.told.append(reservation.jid)
        return super().__call__(reservation)


async def test_cluster_results_ack_signals_only_the_registered_jids(
    redis_cluster_url: str,
) -> None:
    """A registration (``expect``: TIME and its key in the namespace's slot) and the ACK that
    finds it, on the Cluster: only the jid another store waits for is published (the
    script's JSON of a jid with a quote, a slash, a backslash and a non-ASCII letter is the
    one every server decodes)."""
    a, b = RedisStore.from_url(redis_cluster_url), RedisStore.from_url(redis_cluster_url)
    await a.open()
    await b.open()
    heard: list[tuple[str, list[str] | None]] = []
    b.set_signal_listener(lambda t, k: heard.append((t, None if k is None else list(k))))
    try:
        await b.wait_subscribed()
        await asyncio.sleep(0.05)
        heard.clear()
        odd = 'j/"\u00fc\\2'
        await reserve(a, "j1", odd)
        await b.expect("result", odd, 30)
        acked = await a.ack_returning(["j1", odd], DAY, settle=_Telling())
        assert [r.jid for r in acked.ended] == ["j1", odd]
        deadline = time.monotonic() + 5
        while not heard:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert heard == [("result", [odd])]
    finally:
        await a.close()
        await b.close()
