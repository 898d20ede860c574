"""Lost Redis replies: Redis ran a write, the connection died before its reply arrived.

A ``FaultProxy`` between the store and Redis relays a script call to Redis, then cuts the
connection instead of relaying the reply (a network drop, a proxy reset, a failover). The store
cannot know whether the write happened; whatever it does next, every write must have happened
exactly once: no job enqueued twice, no job reserved twice or reserved to nobody, no count
counted twice, and an error, when there is one, says the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from conveyor.errors import StoreError
from conveyor.store.base import FailOutcome, QueuedJob, SetEntry, SetMove, SortedSet, WorkerRecord
from conveyor.store.redis import RedisStore
from conveyor.store.redis.scripts import load_scripts
from conveyor.store.redis.store import Keys
from tests.support.fault_proxy import FaultProxy
from tests.support.services import RedisServer

NOW = 1_700_000_000.0
DAY = "2023-11-14"
K = Keys("conveyor")


def job(jid: str, queue: str = "default") -> QueuedJob:
    return QueuedJob(queue, jid, b'{"jid":"%s","jobtype":"Work","args":[]}' % jid.encode(), 1800)


def entry(jid: str, score: float = NOW) -> SetEntry:
    return SetEntry(score, jid, b'{"jid":"%s"}' % jid.encode(), "default", "Work")


def sha(name: str) -> bytes:
    return load_scripts()[name].sha.encode()


@pytest.fixture
async def direct(kv_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client straight to Redis (not through the proxy), with every script loaded, so the
    store calls them by SHA1 and the proxy can recognise them (and the function library, so
    the first FCALL of a batch script runs: a cut reply is then one of a run)."""
    client = aioredis.Redis(port=kv_server.port)
    for script in load_scripts().values():
        await client.script_load(script.source)
    for library in {s.library for s in load_scripts().values() if s.library is not None}:
        await client.function_load(library, replace=True)  # the batch scripts' FCALLs too
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


async def queue_jids(client: aioredis.Redis, queue: str = "default") -> list[str]:
    return [_entry_jid(raw) for raw in await client.lrange(K.queue(queue), 0, -1)]


def _entry_jid(raw: bytes) -> str:
    _, rest = raw.split(b":", 1)
    size, rest = rest.split(b":", 1)
    return rest[: int(size)].decode()


async def test_enqueue_whose_reply_is_lost_is_stored_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("enqueue"))
    await store.enqueue([job("j1")])
    assert fault_proxy.cuts == 1
    assert await queue_jids(direct) == ["j1"]


async def test_bulk_enqueue_whose_reply_is_lost_is_stored_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("enqueue"))
    await store.enqueue([job("a1"), job("b1", "other"), job("a2")])
    assert fault_proxy.cuts == 1
    assert await queue_jids(direct) == ["a1", "a2"]
    assert await queue_jids(direct, "other") == ["b1"]


async def test_enqueue_lost_on_its_way_is_stored_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_request(sha("enqueue"))
    await store.enqueue([job("j1")])
    assert fault_proxy.cuts == 1
    assert await queue_jids(direct) == ["j1"]


async def test_reserve_whose_reply_is_lost_hands_out_the_same_job(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fault_proxy.lose_reply(sha("reserve"))
    got = await store.reserve(["default"], "w1", NOW)
    assert fault_proxy.cuts == 1
    assert [r.jid for r in got] == ["j1"]
    # j1 is reserved once, to the caller; j2 is still queued, not reserved to nobody.
    assert (await store.list_reservations(0, 10)).total == 1
    assert await queue_jids(direct) == ["j2"]


async def test_ack_whose_reply_is_lost_counts_once(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    await store.enqueue([job("j1")])
    await store.reserve(["default"], "w1", NOW)
    fault_proxy.lose_reply(sha("ack"))
    assert await store.ack(["j1"], DAY) == 1
    assert fault_proxy.cuts == 1
    assert (await store.counters()).processed == 1
    assert (await store.daily_counters([DAY]))[DAY].processed == 1
    assert await store.get_reservation("j1") is None


async def test_fail_whose_reply_is_lost_counts_once(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    await store.enqueue([job("j1")])
    await store.reserve(["default"], "w1", NOW)
    fault_proxy.lose_reply(sha("fail"))
    outcome = FailOutcome(SortedSet.RETRIES, NOW + 30, b'{"jid":"j1"}', "default", "Work")
    assert await store.fail("j1", outcome, DAY) is True
    assert fault_proxy.cuts == 1
    counters = await store.counters()
    assert (counters.processed, counters.failures) == (1, 1)
    assert [e.jid for e in (await store.due_entries(SortedSet.RETRIES, NOW + 60, 10))] == ["j1"]


async def test_add_to_set_whose_reply_is_lost_does_not_undo_a_later_promotion(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    other = RedisStore.from_url(f"redis://127.0.0.1:{fault_proxy.target_port}/0")
    await other.open()

    async def promote() -> None:
        # Another server's scheduler promotes the job, due now, before our retry.
        due = await other.due_entries(SortedSet.SCHEDULED, NOW, 10)
        await other.move_to_queue(SortedSet.SCHEDULED, [SetMove(e, job(e.jid)) for e in due])

    try:
        fault_proxy.lose_reply(sha("set_add"), then=promote)
        await store.add_to_set(SortedSet.SCHEDULED, [entry("j1")])
    finally:
        await other.close()
    assert fault_proxy.cuts == 1
    assert await queue_jids(direct) == ["j1"]
    assert await store.set_size(SortedSet.SCHEDULED) == 0


async def test_set_moves_whose_replies_are_lost_happen_once_and_count_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.add_to_set(SortedSet.RETRIES, [entry("r1"), entry("r2"), entry("r3")])
    fault_proxy.lose_reply(sha("set_to_queue"))
    moved = await store.move_to_queue(SortedSet.RETRIES, [SetMove(entry("r1"), job("r1"))])
    assert moved == 1
    assert await queue_jids(direct) == ["r1"]
    fault_proxy.lose_reply(sha("set_move"))
    assert await store.move_to_set(SortedSet.RETRIES, [entry("r2")], SortedSet.DEAD, NOW) == 1
    fault_proxy.lose_reply(sha("set_remove"))
    assert await store.remove_from_set(SortedSet.RETRIES, [entry("r3")]) == 1
    assert fault_proxy.cuts == 3
    assert await store.set_size(SortedSet.RETRIES) == 0
    assert [e.jid for e in await store.due_entries(SortedSet.DEAD, NOW, 10)] == ["r2"]


async def test_clear_set_whose_reply_is_lost_keeps_an_entry_added_meanwhile(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.add_to_set(SortedSet.DEAD, [entry("d1"), entry("d2")])
    other = RedisStore.from_url(f"redis://127.0.0.1:{fault_proxy.target_port}/0")
    await other.open()

    async def add() -> None:
        await other.add_to_set(SortedSet.DEAD, [entry("d3")])

    try:
        fault_proxy.lose_reply(sha("set_remove"), then=add)
        assert await store.clear_set(SortedSet.DEAD) == 2
    finally:
        await other.close()
    assert [e.jid for e in await store.due_entries(SortedSet.DEAD, NOW, 10)] == ["d3"]


async def test_remove_queue_whose_reply_is_lost_keeps_a_job_pushed_meanwhile(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("old")])
    other = RedisStore.from_url(f"redis://127.0.0.1:{fault_proxy.target_port}/0")
    await other.open()

    async def push() -> None:
        await other.enqueue([job("new")])

    try:
        fault_proxy.lose_reply(sha("queues_admin"), then=push)
        await store.remove_queues(["default"])
    finally:
        await other.close()
    assert fault_proxy.cuts == 1
    assert await queue_jids(direct) == ["new"]


async def test_delete_queued_whose_reply_is_lost_counts_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fault_proxy.lose_reply(sha("queue_delete"))
    assert await store.delete_queued("default", ["j1"]) == 1
    assert await queue_jids(direct) == ["j2"]


async def test_worker_connection_counts_survive_lost_replies(
    store: RedisStore, fault_proxy: FaultProxy
) -> None:
    first = WorkerRecord(wid="w1", hostname="h", pid=1, started_at=NOW, last_beat=NOW)
    await store.update_worker("w1", connections_delta=1, create=first)
    fault_proxy.lose_reply(sha("worker_update"))
    record = await store.update_worker("w1", connections_delta=1, create=first)
    assert record is not None
    assert record.connections == 2
    fault_proxy.lose_reply(sha("worker_update"))
    record = await store.update_worker("w1", connections_delta=-1)
    assert record is not None
    assert record.connections == 1
    stored = await store.get_worker("w1")
    assert stored is not None
    assert stored.connections == 1
    assert fault_proxy.cuts == 2


async def test_enqueue_whose_every_reply_is_lost_says_the_outcome_is_unknown(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("enqueue"), times=1000)
    with pytest.raises(StoreError, match="outcome unknown"):
        await store.enqueue([job("j1")])
    assert fault_proxy.cuts >= 2  # it did retry
    assert await queue_jids(direct) == ["j1"]  # ... and stored the job once


async def test_reserve_whose_every_reply_is_lost_gives_the_job_back(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fault_proxy.lose_reply(sha("reserve"), times=1000)
    with pytest.raises(StoreError, match="outcome unknown"):
        await store.reserve(["default"], "w1", NOW)
    fault_proxy.clear()
    # The job reserved by a call whose caller never learned of it goes back to the head of
    # its queue (not reserved to nobody until its reservation expires).
    await until(lambda: queue_has(direct, ["j1", "j2"]))
    assert (await store.list_reservations(0, 10)).total == 0
    assert [r.jid for r in await store.reserve(["default"], "w1", NOW)] == ["j1"]


async def queue_has(client: aioredis.Redis, jids: list[str]) -> bool:
    return await queue_jids(client) == jids


async def until(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_enqueue_arriving_after_its_retry_is_not_run_twice(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_request(sha("enqueue"), late=0.3)
    await store.enqueue([job("j1")])  # the retry stored it
    assert await queue_jids(direct) == ["j1"]
    await asyncio.sleep(0.5)  # the first attempt reached Redis meanwhile
    assert await queue_jids(direct) == ["j1"]


async def test_reserve_arriving_after_its_retry_reserves_nothing_more(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    # The first attempt finds an empty queue at its retry, and a job arrives before it lands.
    fault_proxy.lose_request(sha("reserve"), late=0.3)
    assert await store.reserve(["default"], "w1", NOW) == []
    await store.enqueue([job("j1")])
    await asyncio.sleep(0.5)
    assert await queue_jids(direct) == ["j1"]
    assert (await store.list_reservations(0, 10)).total == 0


async def test_cancelled_reserve_gives_its_job_back(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    fetch: asyncio.Task[object] | None = None

    async def cancel() -> None:  # Redis reserved j1; the FETCH's client goes away now
        assert fetch is not None
        fetch.cancel()

    fault_proxy.lose_reply(sha("reserve"), then=cancel)
    fetch = asyncio.create_task(store.reserve(["default"], "w1", NOW))
    with pytest.raises(asyncio.CancelledError):
        await fetch
    await until(lambda: queue_has(direct, ["j1", "j2"]))
    assert (await store.list_reservations(0, 10)).total == 0


async def test_enqueue_retried_through_several_failures_is_stored_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("enqueue"))  # the first attempt runs, unheard
    fault_proxy.lose_request(sha("enqueue"), times=3)  # three retries never arrive
    await store.enqueue([job("j1")])  # the fifth attempt is answered: done before
    assert fault_proxy.cuts == 4
    assert await queue_jids(direct) == ["j1"]


async def test_admin_and_worker_writes_whose_replies_are_lost_happen_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await store.enqueue([job("j1"), job("j2")])
    await store.reserve(["default"], "w1", NOW)
    fault_proxy.lose_reply(sha("extend"))
    assert await store.extend_reservation("j1", NOW + 5000) is True
    assert (await store.get_reservation("j1")) is not None
    assert (await store.expired_reservations(NOW + 4999, 10)) == []
    fault_proxy.lose_reply(sha("queues_admin"))
    await store.set_paused(["default"], True)
    assert await store.paused_queues() == {"default"}
    await store.add_to_set(SortedSet.DEAD, [entry("d1", NOW - 10), entry("d2", NOW + 10)])
    fault_proxy.lose_reply(sha("set_remove"))
    assert await store.purge_set(SortedSet.DEAD, NOW, 10) == 1
    record = WorkerRecord(wid="w9", last_beat=NOW)
    fault_proxy.lose_reply(sha("workers"))
    await store.save_worker(record)
    fault_proxy.lose_reply(sha("workers"))
    assert await store.delete_worker("w9") is True
    assert await store.get_worker("w9") is None
    fault_proxy.lose_reply(sha("flush"))
    await store.flush()
    assert fault_proxy.cuts == 6
    assert await store.queue_sizes() == {}
    assert (await store.counters()).processed == 0
    assert await store.set_size(SortedSet.DEAD) == 0


@pytest.mark.parametrize(
    "refusal",
    [
        b"-LOADING Redis is loading the dataset in memory\r\n",  # restarting
        b"-READONLY You can't write against a read only replica.\r\n",  # failing over
    ],
)
async def test_enqueue_retries_refused_meanwhile_go_on_until_answered(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis, refusal: bytes
) -> None:
    fault_proxy.lose_reply(sha("enqueue"))
    fault_proxy.answer_instead(sha("enqueue"), refusal, times=2)
    await store.enqueue([job("j1")])  # the retries refused twice, then answered
    assert await queue_jids(direct) == ["j1"]


async def test_enqueue_refused_outright_is_an_error_that_stored_nothing(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    oom = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"
    fault_proxy.answer_instead(sha("enqueue"), oom)
    with pytest.raises(StoreError, match=r"failed \(enqueue\): command not allowed"):
        await store.enqueue([job("j1")])
    assert await queue_jids(direct) == []


async def test_records_and_queue_clear_whose_replies_are_lost_happen_once(
    store: RedisStore, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    from conveyor.store.records import Record

    fault_proxy.lose_reply(sha("records_claim"))
    assert await store.claim_record("cron", Record("tick-1", b"server-a"), NOW) is None
    assert await store.claim_record("cron", Record("tick-1", b"server-b"), NOW) == b"server-a"
    fault_proxy.lose_reply(sha("records_put"))
    await store.put_records("cron", [Record("tick-2", b"x")])
    fault_proxy.lose_reply(sha("records_delete"))
    assert await store.delete_records("cron", ["tick-1", "tick-2"]) == 2
    assert await store.get_records("cron", ["tick-1", "tick-2"], NOW) == {}
    await store.enqueue([job("j1"), job("j2")])
    other = RedisStore.from_url(f"redis://127.0.0.1:{fault_proxy.target_port}/0")
    await other.open()

    async def push() -> None:
        await other.enqueue([job("j3")])

    try:
        fault_proxy.lose_reply(sha("queue_clear"), then=push)
        assert await store.clear_queue("default") == 2
    finally:
        await other.close()
    assert fault_proxy.cuts == 4
    assert await queue_jids(direct) == ["j3"]
