"""A batch or tracked job's PUSH is one script on Redis (batches_mark.lua marks the job and
queues it, ``RedisBatches.mark_enqueue_soon``). A retry after a lost reply finds the job's
mark, which says ``ready``: without the call's write token it would queue the job a second
time. Here the proxy cuts the script's reply; the job must be queued once, counted in its
batch once, and its one ACK must complete the batch with one callback."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from conveyor.store.base import SortedSet
from tests.support.fault_proxy import FaultProxy
from tests.support.server import RawClient
from tests.test_redis_lost_replies_fwp import K, client, direct, queued, running, sha, stats

__all__ = ["client", "direct", "running"]  # the fixtures, used here by name

CALLBACK = {"complete": {"jobtype": "Done", "args": [], "queue": "callbacks"}}


async def new_batch(client: RawClient) -> str:
    reply = await client.call(b"BATCH NEW " + json.dumps(CALLBACK).encode())
    return reply.split(b"\r\n")[1].decode()


def push(jid: str, custom: dict[str, object]) -> bytes:
    job = {"jid": jid, "jobtype": "Work", "args": [1], "custom": custom}
    return b"PUSH " + json.dumps(job).encode()


async def status(client: RawClient, bid: str) -> dict[str, object]:
    reply = await client.call(b"BATCH STATUS " + bid.encode())
    return json.loads(reply.split(b"\r\n")[1])  # type: ignore[no-any-return]


async def callbacks_queued(direct: aioredis.Redis) -> int:
    """How many callbacks reached their queue, once the first did (the promoter's way)."""
    deadline = time.monotonic() + 5
    while await direct.llen(K.queue("callbacks")) == 0:
        assert time.monotonic() < deadline, "the callback never came"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    return int(await direct.llen(K.queue("callbacks")))


async def test_a_batch_push_whose_reply_is_lost_is_queued_and_counted_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    bid = await new_batch(client)
    fault_proxy.lose_reply(sha("batches_mark"))
    assert await client.call(push("jid-00000001", {"bid": bid})) == b"+OK\r\n"
    assert fault_proxy.cuts == 1
    assert await queued(direct) == ["jid-00000001"]
    assert await client.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert (await status(client, bid))["total"] == 1
    assert b"jid-00000001" in await client.call(b"FETCH default")
    assert await client.call(b'ACK {"jid":"jid-00000001"}') == b"+OK\r\n"
    done = await status(client, bid)
    assert (done["total"], done["pending"], done["complete_st"]) == (1, 0, "1")
    assert await callbacks_queued(direct) == 1
    assert await queued(direct) == []  # the job was handed out once, nothing left over
    assert await stats(direct) == (1, 0)


async def test_a_tracked_push_whose_reply_is_lost_is_queued_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("batches_mark"))
    assert await client.call(push("jid-00000002", {"track": 1})) == b"+OK\r\n"
    assert fault_proxy.cuts == 1
    assert await queued(direct) == ["jid-00000002"]
    assert b'"enqueued"' in await client.call(b"TRACK GET jid-00000002")
    assert b"jid-00000002" in await client.call(b"FETCH default")
    assert await client.call(b'ACK {"jid":"jid-00000002"}') == b"+OK\r\n"
    assert b'"success"' in await client.call(b"TRACK GET jid-00000002")
    assert await stats(direct) == (1, 0)


async def test_a_batch_push_whose_reply_is_lost_twice_is_queued_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    """Two retries: the second finds the token the first attempt wrote, as the first did."""
    bid = await new_batch(client)
    fault_proxy.lose_reply(sha("batches_mark"), times=2)
    assert await client.call(push("jid-00000003", {"bid": bid})) == b"+OK\r\n"
    assert fault_proxy.cuts == 2
    assert await queued(direct) == ["jid-00000003"]
    assert await direct.zcard(K.key(f"bj:{bid}")) == 1
    assert (await status(client, bid))["total"] == 1


async def test_a_refused_batch_push_whose_reply_is_lost_queues_nothing(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    """A committed batch refuses the job in the same script: nothing is queued, first run or
    retry, and the client hears why."""
    bid = await new_batch(client)
    assert await client.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    fault_proxy.lose_reply(sha("batches_mark"))
    reply = await client.call(push("jid-00000004", {"bid": bid}))
    assert reply.startswith(b"-ERR")
    assert b"committed" in reply
    assert await queued(direct) == []
    assert (await status(client, bid))["total"] == 0
    assert await direct.zcard(K.zset(SortedSet.SCHEDULED)) == 0


@pytest.mark.parametrize("custom", [{"track": 1}, {"bid": ""}])
async def test_a_push_whose_every_reply_is_lost_answers_an_honest_error(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis, custom: dict[str, object]
) -> None:
    if "bid" in custom:
        custom = {"bid": await new_batch(client)}
    fault_proxy.lose_reply(sha("batches_mark"), times=1000)
    reply = await client.call(push("jid-00000005", custom))
    assert reply.startswith(b"-ERR")
    assert b"outcome unknown" in reply
    fault_proxy.clear()
    # the first attempt ran: the job is there once (the retries found its token)
    assert await queued(direct) == ["jid-00000005"]
