"""The limits capability (``conveyor.store.limits``), run against every backend.

Times are real (``time.time()``): the Redis store runs leases and buckets on Redis's own clock,
so every backend is given the same wall clock and real sleeps.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conveyor.store.base import QueuedJob, Store
from conveyor.store.limits import QueueLimit, room_for


def job(jid: str, queue: str = "q", reserve_for: int = 60) -> QueuedJob:
    return QueuedJob(queue, jid, json.dumps({"jid": jid, "queue": queue}).encode(), reserve_for)


async def fill(store: Store, queue: str, count: int) -> list[str]:
    jids = [f"{queue}-{i:04d}" for i in range(count)]
    await store.enqueue([job(jid, queue) for jid in jids])
    return jids


async def sizes(store: Store) -> dict[str, int]:
    return await store.queue_sizes()


# ------------------------------------------------------------------ backpressure


async def test_enqueue_bounded_refuses_what_does_not_fit_and_stores_nothing_of_it(
    backend_store: Store,
) -> None:
    await fill(backend_store, "q", 2)
    jobs = [job(f"new-{i}") for i in range(3)] + [job("other-1", "free")]
    refused = await backend_store.enqueue_bounded(jobs, {"q": 3})
    assert [j.jid for j in refused] == ["new-1", "new-2"]
    assert await sizes(backend_store) == {"q": 3, "free": 1}
    page = await backend_store.list_queue("q", 0, 10)
    assert [j.jid for j in page.items] == ["q-0000", "q-0001", "new-0"]
    # full: everything refused, nothing stored; an unbounded queue takes anything
    assert len(await backend_store.enqueue_bounded([job("x1"), job("x2")], {"q": 3})) == 2
    assert await backend_store.enqueue_bounded([job("y", "free")], {"q": 3}) == []
    assert await sizes(backend_store) == {"q": 3, "free": 2}


async def test_enqueue_bounded_takes_jobs_again_once_the_queue_drains(
    backend_store: Store,
) -> None:
    await fill(backend_store, "q", 2)
    assert len(await backend_store.enqueue_bounded([job("late")], {"q": 2})) == 1
    await backend_store.reserve(["q"], "w", time.time())
    assert await backend_store.enqueue_bounded([job("late")], {"q": 2}) == []
    assert (await sizes(backend_store))["q"] == 2


async def test_enqueue_bounded_wakes_the_queues_it_stored_into(backend_store: Store) -> None:
    woken: list[str] = []
    backend_store.set_ready_listener(woken.append)
    await backend_store.enqueue_bounded([job("a", "q"), job("b", "full")], {"full": 0})
    assert "q" in woken


# ------------------------------------------------------------------ throttles


async def test_a_throttle_gives_no_more_than_its_concurrency_and_says_when_it_may_lift(
    backend_store: Store,
) -> None:
    await fill(backend_store, "q", 5)
    limits = {"q": QueueLimit(concurrency=2, timeout=30)}
    got = await backend_store.reserve_limited(["q"], "w1", time.time(), 5, limits)
    assert [r.jid for r in got.reservations] == ["q-0000", "q-0001"]
    again = await backend_store.reserve_limited(["q"], "w2", time.time(), 5, limits)
    assert again.reservations == []
    wait = again.blocked["q"]
    assert wait is not None
    assert 28 < wait <= 30
    assert (await sizes(backend_store))["q"] == 3


async def test_a_full_throttled_queue_is_skipped_for_the_next_one(backend_store: Store) -> None:
    await fill(backend_store, "slow", 3)
    await fill(backend_store, "fast", 3)
    limits = {"slow": QueueLimit(concurrency=1)}
    first = await backend_store.reserve_limited(["slow", "fast"], "w", time.time(), 2, limits)
    assert [r.jid for r in first.reservations] == ["slow-0000", "fast-0000"]
    second = await backend_store.reserve_limited(["slow", "fast"], "w", time.time(), 1, limits)
    assert [r.jid for r in second.reservations] == ["fast-0001"]
    assert list(second.blocked) == ["slow"]


async def test_a_slot_is_free_again_once_its_reservation_ends(backend_store: Store) -> None:
    await fill(backend_store, "q", 4)
    limits = {"q": QueueLimit(concurrency=2)}
    got = await backend_store.reserve_limited(["q"], "w", time.time(), 4, limits)
    assert len(got.reservations) == 2
    await backend_store.ack([got.reservations[0].jid], "2024-01-01")
    more = await backend_store.reserve_limited(["q"], "w", time.time(), 4, limits)
    assert [r.jid for r in more.reservations] == ["q-0002"]
    assert more.blocked == {}  # it stopped at the limit: nothing was skipped


async def test_released_slots_are_free_and_their_queues_woken(backend_store: Store) -> None:
    woken: list[str] = []
    backend_store.set_ready_listener(woken.append)
    await fill(backend_store, "q", 4)
    limits = {"q": QueueLimit(concurrency=2, per_worker=1)}
    a = await backend_store.reserve_limited(["q"], "wa", time.time(), 4, limits)
    b = await backend_store.reserve_limited(["q"], "wb", time.time(), 4, limits)
    assert len(a.reservations) == 1
    assert len(b.reservations) == 1
    woken.clear()
    await backend_store.release_slots(a.reservations)  # its reservation still stands
    assert woken == ["q"]
    again = await backend_store.reserve_limited(["q"], "wa", time.time(), 4, limits)
    assert [r.jid for r in again.reservations] == ["q-0002"]
    usage = await backend_store.limit_usage(limits, time.time())
    assert usage["q"].in_use == 2


async def test_an_ack_of_a_throttled_job_frees_its_slot_in_the_same_step(
    backend_store: Store,
) -> None:
    await fill(backend_store, "q", 3)
    limits = {"q": QueueLimit(concurrency=1)}
    got = await backend_store.reserve_limited(["q"], "w", time.time(), 3, limits)
    woken: list[str] = []
    backend_store.set_ready_listener(woken.append)
    acked = await backend_store.ack_returning([got.reservations[0].jid], "2024-01-01", {"q"})
    ended = acked.ended
    assert [r.jid for r in ended] == ["q-0000"]
    assert woken == ["q"]
    assert (await backend_store.limit_usage(limits, time.time()))["q"].in_use == 0
    again = await backend_store.reserve_limited(["q"], "w", time.time(), 3, limits)
    assert [r.jid for r in again.reservations] == ["q-0001"]


async def test_per_worker_throttles_count_each_worker_alone(backend_store: Store) -> None:
    await fill(backend_store, "q", 5)
    limits = {"q": QueueLimit(per_worker=2)}
    now = time.time()
    a = await backend_store.reserve_limited(["q"], "wa", now, 5, limits)
    b = await backend_store.reserve_limited(["q"], "wb", now, 5, limits)
    a2 = await backend_store.reserve_limited(["q"], "wa", now, 5, limits)
    assert (len(a.reservations), len(b.reservations), len(a2.reservations)) == (2, 2, 0)
    assert "q" in a2.blocked


async def test_a_lease_ends_after_the_throttle_timeout(backend_store: Store) -> None:
    await fill(backend_store, "q", 3)
    limits = {"q": QueueLimit(concurrency=1, timeout=0.3)}
    first = await backend_store.reserve_limited(["q"], "w", time.time(), 1, limits)
    blocked = await backend_store.reserve_limited(["q"], "w", time.time(), 1, limits)
    assert len(first.reservations) == 1
    assert blocked.reservations == []
    wait = blocked.blocked["q"]
    assert wait is not None
    assert wait <= 0.3
    await asyncio.sleep(wait + 0.05)
    later = await backend_store.reserve_limited(["q"], "w", time.time(), 1, limits)
    assert [r.jid for r in later.reservations] == ["q-0001"]


async def test_releasing_a_workers_slots_makes_room(backend_store: Store) -> None:
    await fill(backend_store, "q", 4)
    limits = {"q": QueueLimit(concurrency=2)}
    await backend_store.reserve_limited(["q"], "gone", time.time(), 2, limits)
    assert (await backend_store.reserve_limited(["q"], "w", time.time(), 1, limits)).blocked
    assert await backend_store.release_worker_slots("gone", ["q", "other"]) == ["q"]
    assert await backend_store.release_worker_slots("gone", ["q"]) == []
    got = await backend_store.reserve_limited(["q"], "w", time.time(), 2, limits)
    assert len(got.reservations) == 2


async def test_concurrent_limited_reserves_never_exceed_the_throttle(
    backend_store: Store,
) -> None:
    await fill(backend_store, "q", 50)
    limits = {"q": QueueLimit(concurrency=3)}
    results = await asyncio.gather(
        *(backend_store.reserve_limited(["q"], f"w{i}", time.time(), 2, limits) for i in range(20))
    )
    assert sum(len(r.reservations) for r in results) == 3


# ------------------------------------------------------------------ rate limits


async def test_a_rate_limit_gives_its_burst_then_a_token_per_period(backend_store: Store) -> None:
    await fill(backend_store, "q", 10)
    limits = {"q": QueueLimit(rate=10, burst=2)}
    first = await backend_store.reserve_limited(["q"], "w", time.time(), 10, limits)
    assert len(first.reservations) == 2
    empty = await backend_store.reserve_limited(["q"], "w", time.time(), 10, limits)
    assert empty.reservations == []
    wait = empty.blocked["q"]
    assert wait is not None
    assert 0 < wait <= 0.1
    await asyncio.sleep(0.25)  # 2.5 tokens refilled; the bucket holds 2
    later = await backend_store.reserve_limited(["q"], "w", time.time(), 10, limits)
    assert len(later.reservations) == 2


async def test_limit_usage_reports_live_slots_and_tokens(backend_store: Store) -> None:
    await fill(backend_store, "t", 3)
    await fill(backend_store, "r", 3)
    limits = {"t": QueueLimit(concurrency=5), "r": QueueLimit(rate=1, burst=3)}
    got = await backend_store.reserve_limited(["t", "r"], "w", time.time(), 4, limits)
    assert len(got.reservations) == 4
    await backend_store.ack(["t-0000"], "2024-01-01")
    usage = await backend_store.limit_usage(limits, time.time())
    assert usage["t"].in_use == 2
    assert usage["t"].tokens is None
    tokens = usage["r"].tokens
    assert tokens is not None
    assert 2 <= tokens < 2.5


async def test_paused_and_empty_limited_queues_are_not_reported_blocked(
    backend_store: Store,
) -> None:
    await fill(backend_store, "p", 2)
    await backend_store.set_paused(["p"], True)
    limits = {"p": QueueLimit(concurrency=1), "e": QueueLimit(concurrency=1)}
    got = await backend_store.reserve_limited(["p", "e"], "w", time.time(), 1, limits)
    assert got.reservations == []
    assert got.blocked == {}


async def test_announce_wakes_the_listener(backend_store: Store) -> None:
    woken: list[str] = []
    backend_store.set_ready_listener(woken.append)
    await backend_store.announce(["q1", "q2"])
    assert woken[-2:] == ["q1", "q2"]


async def test_flush_forgets_slots_and_buckets(backend_store: Store) -> None:
    await fill(backend_store, "q", 3)
    limits = {"q": QueueLimit(concurrency=1, rate=1, burst=1)}
    await backend_store.reserve_limited(["q"], "w", time.time(), 1, limits)
    await backend_store.flush()
    await fill(backend_store, "q", 1)
    got = await backend_store.reserve_limited(["q"], "w", time.time(), 1, limits)
    assert len(got.reservations) == 1  # a fresh slot and a full bucket


# ------------------------------------------------------------------ the shared arithmetic


@pytest.mark.parametrize(
    ("limit", "state", "expected"),
    [
        (QueueLimit(concurrency=3), {"in_use": 1}, (2, None)),
        (QueueLimit(concurrency=3), {"in_use": 3, "soonest_lease": 105.0}, (0, 5.0)),
        (QueueLimit(concurrency=3), {"in_use": 3}, (0, None)),
        (QueueLimit(per_worker=2), {"mine": 2, "soonest_mine": 101.0}, (0, 1.0)),
        (QueueLimit(rate=4, burst=4), {"tokens": 2.5}, (2, None)),
        (QueueLimit(rate=4, burst=4), {"tokens": 0.5}, (0, 0.125)),
        (QueueLimit(concurrency=1, rate=4, burst=4), {"in_use": 1, "tokens": 0.0}, (0, None)),
        (
            QueueLimit(concurrency=1, rate=1, burst=1),
            {"in_use": 1, "soonest_lease": 100.5, "tokens": 0.0},
            (0, 1.0),  # both must lift: the later of the two
        ),
    ],
)
def test_room_for(limit: QueueLimit, state: dict[str, float], expected: tuple[int, object]) -> None:
    assert room_for(limit, 100.0, **state) == expected  # type: ignore[arg-type]
