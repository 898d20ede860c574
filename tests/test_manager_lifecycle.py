"""Reservations, ACK, FAIL, retries and the dead set, expiry, workers, FETCH wake-ups."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.errors import JobNotFound, UnknownWorker
from conveyor.manager import ClientInfo, Manager, WorkerState
from conveyor.manager.retry import faktory_backoff
from conveyor.store.base import JobFilter, SortedSet
from conveyor.timefmt import parse_time
from tests.support.manager import MakeManager, decode, encode, eventually, job


async def test_ack_counts_processed_and_unknown_ack_is_harmless(manager: Manager) -> None:
    await manager.push(encode(job()))
    fetched = decode(await manager.fetch(["default"], wait=0))
    await manager.ack(fetched["jid"])
    await manager.ack(fetched["jid"])  # already acked: fine, counts nothing
    await manager.ack("never-fetched-jid")
    info = await manager.info()
    assert info["faktory"]["total_processed"] == 1
    assert info["faktory"]["total_failures"] == 0
    assert info["faktory"]["sets"]["working"] == 0


async def test_fail_unknown_jid_is_job_not_found(manager: Manager) -> None:
    with pytest.raises(JobNotFound, match="Job not found nope-nope"):
        await manager.fail("nope-nope", "E", "m")


async def test_retry_progression_to_the_dead_set(manager: Manager) -> None:
    await manager.push(encode(job("Flaky", retry=2)))
    seen = []
    for attempt in range(3):
        fetched = decode(await manager.fetch(["default"], wait=0))
        await manager.fail(fetched["jid"], "RuntimeError", f"boom {attempt}", ["l1", "l2"])
        retries = await manager.list_set(SortedSet.RETRIES, JobFilter(), 0, 10)
        if attempt < 2:
            [entry] = retries.items
            failure = decode(entry.payload)["failure"]
            seen.append((failure["retry_count"], failure["remaining"]))
            delay = entry.score - time.time()
            assert 15 - 1 <= delay <= attempt**4 + 15 + 29 * (attempt + 1) + 1
            assert parse_time(failure["next_at"]) == pytest.approx(entry.score, abs=1e-3)
            assert failure["backtrace"] == ["l1", "l2"]
            await manager.requeue(SortedSet.RETRIES, None)  # "Retry now"
        else:
            assert retries.items == []
    assert seen == [(0, 2), (1, 1)]
    [dead] = (await manager.list_set(SortedSet.DEAD, JobFilter(), 0, 10)).items
    failure = decode(dead.payload)["failure"]
    assert failure["retry_count"] == 2
    assert failure["remaining"] == 0
    assert "next_at" not in failure
    assert failure["message"] == "boom 2"
    assert dead.score == pytest.approx(time.time() + manager.config.dead_ttl_seconds, abs=5)
    info = await manager.info()
    assert info["faktory"]["total_failures"] == 3
    assert info["faktory"]["total_processed"] == 3


@pytest.mark.parametrize(("retry", "where"), [(0, None), (-1, SortedSet.DEAD)])
async def test_retry_zero_discards_and_minus_one_kills(
    manager: Manager, retry: int, where: SortedSet | None
) -> None:
    await manager.push(encode(job(retry=retry)))
    fetched = decode(await manager.fetch(["default"], wait=0))
    await manager.fail(fetched["jid"], "", "", [])
    sizes = {name: await manager.store.set_size(name) for name in SortedSet}
    assert sizes == {name: int(name == where) for name in SortedSet}
    if where is not None:
        [entry] = (await manager.list_set(where, JobFilter(), 0, 1)).items
        failure = decode(entry.payload)["failure"]
        assert (failure["errtype"], failure["message"]) == ("unknown", "unknown")


def test_faktory_backoff_formula_bounds() -> None:
    for count in (0, 1, 5, 10):
        delays = {faktory_backoff(count) for _ in range(300)}
        assert min(delays) >= count**4 + 15
        assert max(delays) <= count**4 + 15 + 29 * (count + 1)
        assert len(delays) > 5  # random part present


async def test_fail_truncates_fields(manager: Manager) -> None:
    await manager.push(encode(job()))
    fetched = decode(await manager.fetch(["default"], wait=0))
    await manager.fail(fetched["jid"], "E" * 500, "m" * 5000, [f"line {n}" for n in range(80)])
    [entry] = (await manager.list_set(SortedSet.RETRIES, JobFilter(), 0, 1)).items
    failure = decode(entry.payload)["failure"]
    assert len(failure["errtype"]) == 100
    assert len(failure["message"]) == 1000
    assert len(failure["backtrace"]) == 50


async def test_expired_reservation_goes_down_the_failure_path(
    make_manager: MakeManager,
) -> None:
    manager = await make_manager(min_reserve_for_seconds=0)
    pushed = job("Slow", reserve_for=1)
    await manager.push(encode(pushed))
    await manager.fetch(["default"], wid="w1", wait=0)
    assert (await manager.busy(0, 10)).total == 1

    async def expired() -> bool:
        return await manager.store.set_size(SortedSet.RETRIES) == 1

    waited = await eventually(expired, within=3)
    assert 0.8 < waited < 1.5
    [entry] = (await manager.list_set(SortedSet.RETRIES, JobFilter(), 0, 1)).items
    assert decode(entry.payload)["failure"]["errtype"] == "ReservationExpired"
    assert (await manager.busy(0, 10)).total == 0
    with pytest.raises(JobNotFound):  # a late FAIL finds no reservation
        await manager.fail(pushed["jid"], "E", "late")
    assert manager.tasks.stats["Busy"]["reaped"] == 1


async def test_reserve_for_is_clamped_to_the_minimum(manager: Manager) -> None:
    await manager.push(encode(job(reserve_for=1)))
    await manager.fetch(["default"], wait=0)
    [reservation] = (await manager.busy(0, 1)).items
    assert reservation.expires_at - reservation.reserved_at == pytest.approx(60, abs=0.5)


async def test_fetch_takes_queues_in_the_order_given(manager: Manager) -> None:
    await manager.push(encode(job("Low", queue="low")))
    await manager.push(encode(job("High", queue="high")))
    first = decode(await manager.fetch(["high", "low"], wait=0))
    second = decode(await manager.fetch(["high", "low"], wait=0))
    assert (first["jobtype"], second["jobtype"]) == ("High", "Low")
    assert await manager.fetch(["high", "low"], wait=0) is None


async def test_push_wakes_a_waiting_fetch_at_once(manager: Manager) -> None:
    waiting = asyncio.create_task(manager.fetch(["other", "default"], wait=5))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await manager.push(encode(job()))
    fetched = await waiting
    woke = time.perf_counter() - started
    assert fetched is not None
    assert woke < 0.05, f"woken after {woke * 1000:.1f} ms"


async def test_empty_fetch_waits_then_returns_nothing(manager: Manager) -> None:
    started = time.perf_counter()
    assert await manager.fetch(["default"], wait=0.2) is None
    assert 0.19 <= time.perf_counter() - started < 0.5


async def test_many_waiters_each_get_one_job_none_twice(manager: Manager) -> None:
    waiters = [asyncio.create_task(manager.fetch(["default"], wait=2)) for _ in range(20)]
    await asyncio.sleep(0.05)
    await manager.push_bulk(encode([job("J", n) for n in range(20)]))
    results = [decode(r)["args"][0] for r in await asyncio.gather(*waiters)]
    assert sorted(results) == list(range(20))


async def test_paused_queue_is_skipped_and_resume_wakes(manager: Manager) -> None:
    await manager.push(encode(job(queue="q1")))
    await manager.pause_queues(["*"])
    assert await manager.fetch(["q1"], wait=0) is None
    waiting = asyncio.create_task(manager.fetch(["q1"], wait=2))
    await asyncio.sleep(0.05)
    await manager.resume_queues(["q1"])
    assert await waiting is not None
    assert [q.paused for q in await manager.queues()] == [False]


async def test_queue_latency_and_remove(manager: Manager) -> None:
    await manager.push(encode(job(queue="slow")))
    await asyncio.sleep(0.1)
    latency = await manager.queue_latency(["slow", "unknown"])
    assert latency["unknown"] == 0
    assert 0.09 < latency["slow"] < 1
    await manager.remove_queues(["slow"])
    assert await manager.store.queue_sizes() == {}


async def test_workers_beat_quiet_and_terminate(manager: Manager) -> None:
    closed: list[str] = []
    client = ClientInfo(wid="w-1", hostname="h", pid=7, labels=["py"], close=lambda: None)
    await manager.connect(client)
    assert await manager.beat("w-1", 1234, None) == WorkerState.RUNNING
    await manager.signal_workers(["w-1"], WorkerState.QUIET)
    assert await manager.beat("w-1", 1234, None) == WorkerState.QUIET
    assert await manager.beat("w-1", 1, "running") == WorkerState.QUIET  # never backwards
    await manager.push(encode(job()))
    assert await manager.fetch(["default"], wid="w-1", wait=0.05) is None  # quiet: no work
    assert await manager.beat("w-1", 1, "terminate") == WorkerState.TERMINATE
    [view] = await manager.workers()
    assert (view.record.pid, view.record.rss_kb, view.record.labels) == (7, 1, ["py"])
    await manager.disconnect(client)
    assert await manager.workers() == []
    with pytest.raises(UnknownWorker, match="unknown worker w-1"):
        await manager.beat("w-1", 0, None)
    assert closed == []


async def test_silent_workers_are_reaped_and_disconnected(manager: Manager) -> None:
    closed: list[str] = []
    await manager.connect(ClientInfo(wid="w-2", close=lambda: closed.append("w-2")))

    async def reaped() -> bool:
        return closed == ["w-2"]

    await eventually(reaped, within=3)
    assert await manager.workers() == []
    assert manager.tasks.stats["Workers"]["reaped"] == 1
