"""Lost Redis replies to the admission scripts (``limits_*``, ``endings_*``, ``counts_add``,
``deadlines_delete``): each write happens exactly once, however its reply is lost, as the
lifecycle scripts do (``tests/test_redis_lost_replies.py``, ``calls.py``)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from conveyor.errors import StoreError
from conveyor.store.base import SetEntry, SortedSet
from conveyor.store.batches import EndContext
from conveyor.store.deadlines import Deadline
from conveyor.store.limits import QueueLimit
from conveyor.store.redis import RedisStore
from tests.support.fault_proxy import FaultProxy
from tests.test_redis_lost_replies import DAY, direct, job, queue_jids, sha, store, until

__all__ = ["direct", "store"]  # the fixtures, used here by name

LIMIT = {"default": QueueLimit(concurrency=5, rate=0.01, burst=100)}  # refills slowly


async def test_limited_reserve_whose_reply_is_lost_hands_out_the_same_job(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fault_proxy.lose_reply(sha("limits_reserve"))
    got = await store.reserve_limited(["default"], "w1", time.time(), 1, LIMIT)
    assert fault_proxy.cuts == 1
    assert [r.jid for r in got.reservations] == ["j1"]
    assert (await store.list_reservations(0, 10)).total == 1
    assert await queue_jids(direct) == ["j2"]
    usage = await store.limit_usage(LIMIT, time.time())
    assert usage["default"].in_use == 1  # one slot, not two
    tokens = usage["default"].tokens
    assert tokens is not None
    assert 98.5 < tokens < 99.5  # one token, not two


async def test_limited_reserve_whose_every_reply_is_lost_gives_the_job_back(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fault_proxy.lose_reply(sha("limits_reserve"), times=1000)
    with pytest.raises(StoreError, match="outcome unknown"):
        await store.reserve_limited(["default"], "w1", time.time(), 1, LIMIT)
    fault_proxy.clear()

    async def back() -> bool:
        return await queue_jids(direct) == ["j1", "j2"]

    await until(back)
    assert (await store.list_reservations(0, 10)).total == 0


async def test_bounded_enqueue_whose_reply_is_lost_is_stored_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("limits_enqueue"))
    refused = await store.enqueue_bounded([job("j1"), job("j2"), job("j3")], {"default": 2})
    assert fault_proxy.cuts == 1
    assert [j.jid for j in refused] == ["j3"]  # the retry reports what the first run did
    assert await queue_jids(direct) == ["j1", "j2"]


@pytest.mark.parametrize("ends", [False, True], ids=["bare", "with-ends"])
async def test_ack_returning_whose_reply_is_lost_counts_once_and_returns_what_ended(
    store: RedisStore, fault_proxy: FaultProxy, ends: bool
) -> None:
    """Both forms of the ACK script (without ``ends``: ``endings_end/bare``), keeping the job
    too: the retry replays the first run's reply, and the job is counted and kept once."""
    await store.enqueue([job("j1")])
    await store.reserve_limited(["default"], "w1", time.time(), 1, LIMIT)
    fault_proxy.lose_reply(sha("endings_end" if ends else "endings_end/bare"))
    context = EndContext(DAY, time.time(), 60.0, time.time() + 600) if ends else None
    entry = SetEntry(time.time() + 600, "j1", job("j1").payload, "default", "Work")
    acked = await store.ack_returning(["j1"], DAY, {"default"}, None, context, [entry])
    assert fault_proxy.cuts == 1
    assert [r.jid for r in acked.ended] == ["j1"]  # a retry returns what the first run ended
    assert (await store.counters()).processed == 1
    assert (await store.limit_usage(LIMIT, time.time()))["default"].in_use == 0
    assert await store.get_set_entries(SortedSet.COMPLETED, ["j1"]) == [entry]


async def test_take_queued_whose_reply_is_lost_returns_what_it_took(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fault_proxy.lose_reply(sha("endings_take"))
    taken = await store.take_queued("default", ["j2"])
    assert fault_proxy.cuts == 1
    assert [j.jid for j in taken] == ["j2"]
    assert await queue_jids(direct) == ["j1"]


async def test_counts_and_deadlines_whose_replies_are_lost_change_once(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    fault_proxy.lose_reply(sha("counts_add"))
    await store.add_counts("expired", {"total": 2})
    assert await store.get_counts("expired", ["total"]) == {"total": 2}
    await store.set_deadlines("x", [Deadline("a", 1.0), Deadline("b", 2.0)])
    fault_proxy.lose_reply(sha("deadlines_delete"))
    assert await store.delete_deadlines("x", ["a", "b"]) == 2
    assert fault_proxy.cuts == 2
