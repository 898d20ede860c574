"""Lost Redis replies for the cancel and group scripts (see tests/test_redis_lost_replies.py):
Redis ran the write, the connection died before its reply. Each call still happens once: a
job cancelled and counted once and told as cancelled, a member added once, a group flushed
into one job."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from conveyor.store.base import QueuedJob
from conveyor.store.cancels import COUNTS_SPACE, CancelOutcome, CancelTarget
from conveyor.store.groups import GroupMember, GroupSpec
from conveyor.store.records import Record
from conveyor.store.redis import RedisStore
from conveyor.store.redis.scripts import load_scripts
from tests.support.fault_proxy import FaultProxy
from tests.support.services import RedisServer

NOW = 1_700_000_000.0
DAY = "2023-11-14"
SPEC = GroupSpec(max_size=10, max_delay=60.0, grace=30.0)


def sha(name: str) -> bytes:
    return load_scripts()[name].sha.encode()


@pytest.fixture
async def direct(kv_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """Every script loaded straight into Redis, so the store calls them by SHA1 and the proxy
    can recognise them."""
    client = aioredis.Redis(port=kv_server.port)
    for script in load_scripts().values():
        await client.script_load(script.source)
    yield client
    await client.aclose()


@pytest.fixture
async def store(fault_proxy: FaultProxy, direct: aioredis.Redis) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(fault_proxy.url + "?retry_for=0.5")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_cancel_whose_reply_is_lost_says_cancelled_and_counts_once(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    await store.enqueue([QueuedJob("default", "j1", b'{"jid":"j1"}', 60)])
    fault_proxy.lose_reply(sha("cancel"))
    target = CancelTarget("j1", "queued", queue="default")
    outcome = await store.cancel_job(target, Record("j1", b"{}", NOW + 60), None, DAY, NOW)
    assert fault_proxy.cuts == 1
    assert outcome is CancelOutcome.CANCELLED  # the first attempt's answer, not "already"
    counts = await store.get_records(COUNTS_SPACE, ["total", DAY], NOW)
    assert {key: int(record.value) for key, record in counts.items()} == {"total": 1, DAY: 1}
    assert (await store.queue_sizes())["default"] == 0


async def test_members_whose_add_reply_is_lost_are_added_once(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    await store.add_to_group("g", GroupMember("m0", b"{}", NOW), SPEC)
    fault_proxy.lose_reply(sha("groups_add"))
    state = await store.add_to_group("g", GroupMember("m1", b"{}", NOW + 1), SPEC)
    assert fault_proxy.cuts == 1
    assert (state.size, state.last_at) == (2, NOW + 1)
    assert [m.jid for m in await store.group_members("g", 0, 10)] == ["m0", "m1"]


async def test_a_flush_whose_reply_is_lost_enqueues_once_and_says_so(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    for n in range(3):
        await store.add_to_group("g", GroupMember(f"m{n}", b"{}", NOW + n), SPEC)
    fault_proxy.lose_reply(sha("groups_flush"))
    job = QueuedJob("default", "agg:m0", b'{"jid":"agg:m0"}', 60)
    assert await store.flush_group("g", ["m0", "m1", "m2"], job, NOW + 5) is True
    assert fault_proxy.cuts == 1
    assert [j.jid for j in (await store.list_queue("default", 0, 10)).items] == ["agg:m0"]
    assert await store.group_counts() == (0, 0)
