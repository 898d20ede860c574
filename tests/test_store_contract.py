"""The Store contract (``conveyor.store.base``), run against every backend.

Each test states one promise of base.py and checks it through the public Store methods only,
so memory, SQLite and Redis must agree exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable

import pytest

from conveyor.store.base import (
    Counters,
    FailOutcome,
    JobFilter,
    QueuedJob,
    SetEntry,
    SetMove,
    SortedSet,
    Store,
    WorkerRecord,
)

NOW = 1_700_000_000.0
DAY = "2023-11-14"
RETRIES, DEAD, SCHEDULED = SortedSet.RETRIES, SortedSet.DEAD, SortedSet.SCHEDULED


def payload(jid: str, queue: str = "default", jobtype: str = "Work", **extra: object) -> bytes:
    return json.dumps({"jid": jid, "queue": queue, "jobtype": jobtype, **extra}).encode()


def job(jid: str, queue: str = "default", reserve_for: int = 60, **extra: object) -> QueuedJob:
    return QueuedJob(queue, jid, payload(jid, queue, **extra), reserve_for)  # type: ignore[arg-type]


def entry(
    jid: str, score: float, queue: str = "default", jobtype: str = "Work", **extra: object
) -> SetEntry:
    return SetEntry(score, jid, payload(jid, queue, jobtype, **extra), queue, jobtype)


async def jids_in_queue(store: Store, name: str) -> list[str]:
    page = await store.list_queue(name, 0, 1000)
    return [item.jid for item in page.items]


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> bool:
    """Backends sharing a server may deliver listener calls a moment later."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --------------------------------------------------------------------------- queues


async def test_enqueue_keeps_fifo_order_per_queue(backend_store: Store) -> None:
    await backend_store.enqueue([job("a1", "a"), job("b1", "b"), job("a2", "a")])
    await backend_store.enqueue([job("a3", "a")])
    assert await jids_in_queue(backend_store, "a") == ["a1", "a2", "a3"]
    assert await jids_in_queue(backend_store, "b") == ["b1"]
    assert await backend_store.queue_sizes() == {"a": 3, "b": 1}
    heads = await backend_store.queue_heads(["a", "b", "nope"])
    assert heads == {"a": payload("a1", "a"), "b": payload("b1", "b"), "nope": None}


async def test_list_queue_pages_in_fetch_order(backend_store: Store) -> None:
    await backend_store.enqueue([job(f"j{i}") for i in range(10)])
    page = await backend_store.list_queue("default", 3, 4)
    assert [item.jid for item in page.items] == ["j3", "j4", "j5", "j6"]
    assert page.total == 10
    assert page.items[0] == job("j3")
    empty = await backend_store.list_queue("unknown", 0, 10)
    assert (empty.items, empty.total) == ([], 0)


async def test_reserve_takes_queues_in_strict_order(backend_store: Store) -> None:
    await backend_store.enqueue([job("b1", "b"), job("b2", "b"), job("a1", "a")])
    first = await backend_store.reserve(["a", "b"], "w1", NOW)
    assert [r.jid for r in first] == ["a1"]
    rest = await backend_store.reserve(["missing", "a", "b"], "w1", NOW, count=5)
    assert [r.jid for r in rest] == ["b1", "b2"]
    assert await backend_store.reserve(["a", "b"], "w1", NOW) == []
    assert await backend_store.queue_sizes() == {"a": 0, "b": 0}


async def test_reserve_count_fills_from_several_queues(backend_store: Store) -> None:
    await backend_store.enqueue([job("a1", "a"), job("a2", "a"), job("b1", "b"), job("b2", "b")])
    taken = await backend_store.reserve(["a", "b"], "w1", NOW, count=3)
    assert [r.jid for r in taken] == ["a1", "a2", "b1"]
    assert await jids_in_queue(backend_store, "b") == ["b2"]


async def test_reservation_records_worker_and_expiry(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1", reserve_for=30), job("j2", reserve_for=600)])
    taken = await backend_store.reserve(["default"], "wid-1", NOW, count=2)
    assert [(r.jid, r.queue, r.wid) for r in taken] == [
        ("j1", "default", "wid-1"),
        ("j2", "default", "wid-1"),
    ]
    assert taken[0].payload == payload("j1")
    assert (taken[0].reserved_at, taken[0].expires_at) == (NOW, NOW + 30)
    assert taken[1].expires_at == NOW + 600
    assert await backend_store.get_reservation("j2") == taken[1]
    assert await backend_store.get_reservation("nope") is None


async def test_paused_queues_are_skipped_until_resumed(backend_store: Store) -> None:
    await backend_store.enqueue([job("a1", "a"), job("b1", "b")])
    await backend_store.set_paused(["a", "never-seen"], True)
    assert await backend_store.paused_queues() == {"a"}
    taken = await backend_store.reserve(["a", "b"], "w", NOW, count=2)
    assert [r.jid for r in taken] == ["b1"]
    assert await backend_store.reserve(["a"], "w", NOW) == []
    await backend_store.set_paused(["a"], False)
    assert await backend_store.paused_queues() == set()
    assert [r.jid for r in await backend_store.reserve(["a"], "w", NOW)] == ["a1"]


async def test_delete_queued_removes_only_named_jobs(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1"), job("j2"), job("j3"), job("x1", "other")])
    assert await backend_store.delete_queued("default", ["j2", "x1", "missing"]) == 1
    assert await jids_in_queue(backend_store, "default") == ["j1", "j3"]
    assert await jids_in_queue(backend_store, "other") == ["x1"]
    assert await backend_store.queue_sizes() == {"default": 2, "other": 1}


async def test_remove_queues_forgets_jobs_and_pause_flag(backend_store: Store) -> None:
    await backend_store.enqueue([job("a1", "a"), job("b1", "b")])
    await backend_store.set_paused(["a"], True)
    await backend_store.remove_queues(["a", "unknown"])
    assert await backend_store.queue_sizes() == {"b": 1}
    assert await backend_store.paused_queues() == set()
    await backend_store.enqueue([job("a2", "a")])
    assert [r.jid for r in await backend_store.reserve(["a"], "w", NOW)] == ["a2"]


async def test_find_queued_finds_waiting_jobs_by_jid(backend_store: Store) -> None:
    async def find(jids: list[str], queues: list[str] | None = None) -> list[QueuedJob]:
        return sorted(await backend_store.find_queued(jids, queues), key=lambda j: j.jid)

    await backend_store.enqueue([job(f"a{i}", "a") for i in range(5)] + [job("b0", "b")])
    assert await find(["a3"]) == [job("a3", "a")]
    assert await find(["b0", "a1", "nope"]) == [job("a1", "a"), job("b0", "b")]
    assert await find(["b0"], ["a"]) == []  # only the queues named
    assert await find(["b0"], ["a", "b"]) == [job("b0", "b")]
    assert await find(["a3"], ["unknown"]) == []
    assert await find([]) == []
    await backend_store.reserve(["a"], "w1", NOW, count=4)  # a0..a3 leave the queue
    assert await find(["a3", "a4"]) == [job("a4", "a")]
    await backend_store.delete_queued("a", ["a4"])
    assert await find(["a4"]) == []


async def test_find_queued_walks_long_queues(backend_store: Store) -> None:
    """Longer than one slice of the Redis walk."""
    await backend_store.enqueue([job(f"j{i}") for i in range(4500)] + [job("k0", "k")])
    wanted = ["j0", "j1999", "j2000", "j2500", "j4499", "k0"]
    found = await backend_store.find_queued(wanted)
    assert sorted(j.jid for j in found) == sorted(wanted)


async def test_clear_queue_deletes_jobs_and_keeps_the_queue(backend_store: Store) -> None:
    await backend_store.enqueue([job("a1", "a"), job("a2", "a"), job("b1", "b")])
    await backend_store.set_paused(["a"], True)
    assert await backend_store.clear_queue("a") == 2
    assert await backend_store.queue_sizes() == {"a": 0, "b": 1}
    assert await backend_store.paused_queues() == {"a"}
    assert await backend_store.clear_queue("a") == 0
    assert await backend_store.clear_queue("unknown") == 0
    await backend_store.set_paused(["a"], False)
    await backend_store.enqueue([job("a3", "a")])
    assert await jids_in_queue(backend_store, "a") == ["a3"]


async def test_listener_hears_enqueues_moves_and_resumes(backend_store: Store) -> None:
    heard: list[str] = []
    backend_store.set_ready_listener(heard.append)
    await backend_store.enqueue([job("a1", "a"), job("b1", "b")])
    assert await eventually(lambda: {"a", "b"} <= set(heard))
    heard.clear()
    scheduled = entry("s1", NOW - 1, queue="c")
    await backend_store.add_to_set(SCHEDULED, [scheduled])
    assert await backend_store.move_to_queue(SCHEDULED, [SetMove(scheduled, job("s1", "c"))]) == 1
    assert await eventually(lambda: "c" in heard)
    heard.clear()
    await backend_store.set_paused(["a"], True)
    await backend_store.set_paused(["a"], False)
    assert await eventually(lambda: "a" in heard)


# --------------------------------------------------------------------------- ack / fail


async def test_ack_counts_only_existing_reservations(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1"), job("j2")])
    await backend_store.reserve(["default"], "w", NOW, count=2)
    assert await backend_store.ack(["j1", "unknown"], DAY) == 1
    assert await backend_store.ack(["j1"], DAY) == 0
    assert await backend_store.get_reservation("j1") is None
    assert await backend_store.get_reservation("j2") is not None
    assert await backend_store.counters() == Counters(1, 0)
    assert await backend_store.daily_counters([DAY]) == {DAY: Counters(1, 0)}


async def test_fail_to_retries_counts_and_stores_payload(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1")])
    await backend_store.reserve(["default"], "w", NOW)
    failed = payload("j1", retry_count=1)
    outcome = FailOutcome(RETRIES, NOW + 30, failed, "default", "Work")
    assert await backend_store.fail("j1", outcome, DAY) is True
    assert await backend_store.get_reservation("j1") is None
    assert await backend_store.get_set_entries(RETRIES, ["j1"]) == [
        SetEntry(NOW + 30, "j1", failed, "default", "Work")
    ]
    assert await backend_store.counters() == Counters(1, 1)
    assert await backend_store.daily_counters([DAY]) == {DAY: Counters(1, 1)}


async def test_fail_to_dead_and_discard(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1"), job("j2")])
    await backend_store.reserve(["default"], "w", NOW, count=2)
    assert await backend_store.fail("j1", FailOutcome(DEAD, NOW + 99, payload("j1")), DAY)
    assert await backend_store.fail("j2", FailOutcome(None), DAY)
    assert [e.jid for e in (await backend_store.list_set(DEAD, JobFilter(), 0, 10)).items] == ["j1"]
    assert await backend_store.set_size(RETRIES) == 0
    assert await backend_store.set_size(DEAD) == 1
    assert await backend_store.counters() == Counters(2, 2)


async def test_fail_without_reservation_changes_nothing(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1")])
    outcome = FailOutcome(RETRIES, NOW, payload("j1"), "default", "Work")
    assert await backend_store.fail("j1", outcome, DAY) is False
    await backend_store.reserve(["default"], "w", NOW)
    assert await backend_store.ack(["j1"], DAY) == 1
    assert await backend_store.fail("j1", outcome, DAY) is False
    assert await backend_store.set_size(RETRIES) == 0
    assert await backend_store.counters() == Counters(1, 0)
    assert await backend_store.daily_counters([DAY]) == {DAY: Counters(1, 0)}


async def test_expired_reservations_oldest_first_and_unchanged(backend_store: Store) -> None:
    await backend_store.enqueue([job("long", reserve_for=100), job("short", reserve_for=10)])
    await backend_store.enqueue([job("mid", reserve_for=50)])
    await backend_store.reserve(["default"], "w", NOW, count=3)
    assert await backend_store.expired_reservations(NOW + 5, 10) == []
    expired = await backend_store.expired_reservations(NOW + 60, 10)
    assert [r.jid for r in expired] == ["short", "mid"]
    assert [r.jid for r in await backend_store.expired_reservations(NOW + 1000, 2)] == [
        "short",
        "mid",
    ]
    assert await backend_store.get_reservation("short") == expired[0]


async def test_extend_reservation_moves_expiry(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1", reserve_for=10)])
    await backend_store.reserve(["default"], "w", NOW)
    assert await backend_store.extend_reservation("j1", NOW + 500) is True
    assert await backend_store.extend_reservation("nope", NOW + 500) is False
    assert await backend_store.expired_reservations(NOW + 100, 10) == []
    reservation = await backend_store.get_reservation("j1")
    assert reservation is not None
    assert reservation.expires_at == NOW + 500


async def test_list_reservations_pages_by_reserved_at(backend_store: Store) -> None:
    await backend_store.enqueue([job(f"j{i}") for i in range(5)])
    for i in range(5):
        await backend_store.reserve(["default"], f"w{i}", NOW + i)
    page = await backend_store.list_reservations(1, 3)
    assert [r.jid for r in page.items] == ["j1", "j2", "j3"]
    assert [r.wid for r in page.items] == ["w1", "w2", "w3"]
    assert page.total == 5


# --------------------------------------------------------------------------- sorted sets


async def test_add_to_set_replaces_same_jid(backend_store: Store) -> None:
    await backend_store.add_to_set(SCHEDULED, [entry("j1", NOW + 10), entry("j2", NOW + 20)])
    await backend_store.add_to_set(SCHEDULED, [entry("j1", NOW + 30, jobtype="Other")])
    assert await backend_store.set_size(SCHEDULED) == 2
    page = await backend_store.list_set(SCHEDULED, JobFilter(), 0, 10)
    assert [(e.jid, e.score, e.jobtype) for e in page.items] == [
        ("j2", NOW + 20, "Work"),
        ("j1", NOW + 30, "Other"),
    ]
    assert await backend_store.set_size(RETRIES) == 0


async def test_due_entries_lowest_score_first(backend_store: Store) -> None:
    await backend_store.add_to_set(
        RETRIES, [entry("late", NOW + 100), entry("b", NOW - 1), entry("a", NOW - 5)]
    )
    await backend_store.add_to_set(RETRIES, [entry("now", NOW)])
    due = await backend_store.due_entries(RETRIES, NOW, 10)
    assert [e.jid for e in due] == ["a", "b", "now"]
    assert [e.jid for e in await backend_store.due_entries(RETRIES, NOW, 1)] == ["a"]
    assert await backend_store.set_size(RETRIES) == 4


async def test_move_to_queue_is_conditional(backend_store: Store) -> None:
    due = entry("j1", NOW - 1, queue="q")
    await backend_store.add_to_set(SCHEDULED, [due])
    stale = SetMove(entry("j1", NOW - 2, queue="q"), job("j1", "q"))
    assert await backend_store.move_to_queue(SCHEDULED, [stale]) == 0
    move = SetMove(due, job("j1", "q", enqueued_at="now"))
    assert await backend_store.move_to_queue(SCHEDULED, [move]) == 1
    assert await backend_store.move_to_queue(SCHEDULED, [move]) == 0
    assert await backend_store.set_size(SCHEDULED) == 0
    page = await backend_store.list_queue("q", 0, 10)
    assert page.items == [job("j1", "q", enqueued_at="now")]


async def test_move_to_set_is_conditional(backend_store: Store) -> None:
    first, second = entry("j1", NOW), entry("j2", NOW + 1)
    await backend_store.add_to_set(RETRIES, [first, second])
    moved = await backend_store.move_to_set(
        RETRIES, [first, entry("j2", NOW + 5)], DEAD, NOW + 1000
    )
    assert moved == 1
    assert await backend_store.move_to_set(RETRIES, [first], DEAD, NOW + 1000) == 0
    dead = await backend_store.get_set_entries(DEAD, ["j1"])
    assert dead == [SetEntry(NOW + 1000, "j1", first.payload, "default", "Work")]
    assert [e.jid for e in (await backend_store.list_set(RETRIES, JobFilter(), 0, 9)).items] == [
        "j2"
    ]


async def test_remove_from_set_is_conditional(backend_store: Store) -> None:
    await backend_store.add_to_set(DEAD, [entry("j1", NOW), entry("j2", NOW)])
    assert await backend_store.remove_from_set(DEAD, [entry("j1", NOW), entry("j2", 1.0)]) == 1
    assert await backend_store.remove_from_set(DEAD, [entry("j1", NOW)]) == 0
    assert [e.jid for e in await backend_store.get_set_entries(DEAD, ["j1", "j2"])] == ["j2"]


async def test_purge_and_clear_set(backend_store: Store) -> None:
    await backend_store.add_to_set(DEAD, [entry(f"j{i}", NOW + i) for i in range(6)])
    assert await backend_store.purge_set(DEAD, NOW + 3, 2) == 2
    assert await backend_store.purge_set(DEAD, NOW + 3, 10) == 2
    remaining = await backend_store.list_set(DEAD, JobFilter(), 0, 10)
    assert [e.jid for e in remaining.items] == ["j4", "j5"]
    assert await backend_store.clear_set(DEAD) == 2
    assert await backend_store.clear_set(DEAD) == 0
    assert await backend_store.set_size(DEAD) == 0


async def test_list_set_pages_in_score_then_jid_order(backend_store: Store) -> None:
    entries = [entry(f"j{i}", NOW + i // 2) for i in range(10)]
    await backend_store.add_to_set(DEAD, list(reversed(entries)))
    page = await backend_store.list_set(DEAD, JobFilter(), 2, 3)
    assert [e.jid for e in page.items] == ["j2", "j3", "j4"]
    assert page.total == 10
    backwards = await backend_store.list_set(DEAD, JobFilter(), 0, 3, descending=True)
    assert [e.jid for e in backwards.items] == ["j9", "j8", "j7"]
    beyond = await backend_store.list_set(DEAD, JobFilter(), 20, 5)
    assert (beyond.items, beyond.total) == ([], 10)


async def test_list_set_filters(backend_store: Store) -> None:
    await backend_store.add_to_set(
        DEAD,
        [
            entry("j1", NOW + 1, "mail", "SendEmail", args=["alice@example.com"]),
            entry("j2", NOW + 2, "mail", "SendSms", args=["Bob"]),
            entry("j3", NOW + 3, "default", "SendEmail", error="Timeout ERROR"),
            entry("j4", NOW + 4, "default", "Resize", args=[42]),
        ],
    )

    async def jids(flt: JobFilter) -> tuple[list[str], int]:
        page = await backend_store.list_set(DEAD, flt, 0, 100)
        return [e.jid for e in page.items], page.total

    assert await jids(JobFilter(jobtype="SendEmail")) == (["j1", "j3"], 2)
    assert await jids(JobFilter(queue="mail")) == (["j1", "j2"], 2)
    assert await jids(JobFilter(queue="mail", jobtype="SendSms")) == (["j2"], 1)
    assert await jids(JobFilter(pattern="*alice*")) == (["j1"], 1)
    assert await jids(JobFilter(pattern='*"jobtype": "Send???"*')) == (["j2"], 1)
    assert await jids(JobFilter(pattern="*ALICE*")) == ([], 0)
    assert await jids(JobFilter(pattern='*"jobtype": "[^S]e*')) == (["j4"], 1)
    assert await jids(JobFilter(text="timeout error")) == (["j3"], 1)
    assert await jids(JobFilter(text="BOB")) == (["j2"], 1)
    # jids win over jobtype and pattern, as in Faktory's MUTATE
    assert await jids(JobFilter(jids=("j4", "j2", "zz"), jobtype="SendEmail")) == (
        ["j2", "j4"],
        2,
    )
    page = await backend_store.list_set(DEAD, JobFilter(jobtype="SendEmail"), 1, 1)
    assert ([e.jid for e in page.items], page.total) == (["j3"], 2)
    desc = await backend_store.list_set(DEAD, JobFilter(queue="default"), 0, 1, descending=True)
    assert [e.jid for e in desc.items] == ["j4"]


async def test_paging_through_a_set_sees_every_entry_once(backend_store: Store) -> None:
    entries = [entry(f"j{i:02}", NOW + i % 5, jobtype="A" if i % 3 else "B") for i in range(30)]
    await backend_store.add_to_set(DEAD, entries)
    for flt in (JobFilter(), JobFilter(jobtype="A")):
        for descending in (False, True):
            whole = await backend_store.list_set(DEAD, flt, 0, 100, descending=descending)
            paged: list[str] = []
            while len(paged) < whole.total:
                page = await backend_store.list_set(DEAD, flt, len(paged), 4, descending=descending)
                assert page.total == whole.total
                paged.extend(e.jid for e in page.items)
            assert paged == [e.jid for e in whole.items]


async def test_pages_follow_changes_between_calls(backend_store: Store) -> None:
    await backend_store.add_to_set(DEAD, [entry(f"j{i}", NOW + i, jobtype="A") for i in range(6)])
    flt = JobFilter(jobtype="A")
    first = await backend_store.list_set(DEAD, flt, 0, 2)
    assert [e.jid for e in first.items] == ["j0", "j1"]
    await backend_store.add_to_set(DEAD, [entry("early", NOW - 1, jobtype="A")])
    second = await backend_store.list_set(DEAD, flt, 2, 2)
    assert ([e.jid for e in second.items], second.total) == (["j1", "j2"], 7)
    await backend_store.remove_from_set(DEAD, [entry("j3", NOW + 3)])
    third = await backend_store.list_set(DEAD, flt, 4, 2)
    assert ([e.jid for e in third.items], third.total) == (["j4", "j5"], 6)
    unfiltered = await backend_store.list_set(DEAD, JobFilter(), 0, 3)
    await backend_store.clear_set(DEAD)
    after_clear = await backend_store.list_set(DEAD, JobFilter(), 3, 3)
    assert len(unfiltered.items) == 3
    assert (after_clear.items, after_clear.total) == ([], 0)


async def test_text_filter_takes_wildcard_characters_literally(backend_store: Store) -> None:
    await backend_store.add_to_set(
        RETRIES,
        [entry("j1", NOW, args=["50%_OFF"]), entry("j2", NOW, args=["50abOFF"])],
    )
    page = await backend_store.list_set(RETRIES, JobFilter(text="50%_off"), 0, 10)
    assert ([e.jid for e in page.items], page.total) == (["j1"], 1)


async def test_glob_filters_never_backtrack(backend_store: Store) -> None:
    """Issue 17: as a regex, ``*a*a*a*a*a*a*a*b`` against one job holding 60 ``a``s ran for
    11 s on the event loop, every other client waiting. Answered at once now, loop free."""
    await backend_store.add_to_set(
        SCHEDULED, [entry("j1", NOW, args=["a" * 60]), entry("j2", NOW + 1, args=["a" * 60 + "b"])]
    )
    loop = asyncio.get_running_loop()
    ticks = [loop.time()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(loop.time())

    ticker = asyncio.create_task(tick())
    try:
        whole = await backend_store.list_set(SCHEDULED, JobFilter(pattern="*a*a*a*a*a*a*a*b"), 0, 9)
        inner = await backend_store.list_set(
            SCHEDULED, JobFilter(pattern="*a*a*a*a*a*a*a*b*"), 0, 9
        )
        await asyncio.sleep(0.03)
    finally:
        ticker.cancel()
    assert (whole.items, whole.total) == ([], 0)  # the payload ends with "]}", not "b"
    assert ([e.jid for e in inner.items], inner.total) == (["j2"], 1)
    longest_wait = max(later - earlier for earlier, later in itertools.pairwise(ticks))
    assert longest_wait < 1.0, f"the loop was held for {longest_wait:.1f} s"


async def test_get_set_entries_returns_only_present(backend_store: Store) -> None:
    await backend_store.add_to_set(SCHEDULED, [entry("j1", NOW), entry("j2", NOW + 1)])
    found = await backend_store.get_set_entries(SCHEDULED, ["j2", "missing", "j1"])
    assert sorted(e.jid for e in found) == ["j1", "j2"]
    assert await backend_store.get_set_entries(RETRIES, ["j1"]) == []


# --------------------------------------------------------------------------- counters, workers


async def test_daily_counters_are_per_day(backend_store: Store) -> None:
    await backend_store.enqueue([job(f"j{i}") for i in range(4)])
    await backend_store.reserve(["default"], "w", NOW, count=4)
    await backend_store.ack(["j0", "j1"], "2024-01-01")
    await backend_store.ack(["j2"], "2024-01-02")
    await backend_store.fail("j3", FailOutcome(None), "2024-01-02")
    days = ["2023-12-31", "2024-01-01", "2024-01-02"]
    assert await backend_store.daily_counters(days) == {
        "2023-12-31": Counters(0, 0),
        "2024-01-01": Counters(2, 0),
        "2024-01-02": Counters(2, 1),
    }
    assert await backend_store.counters() == Counters(4, 1)


async def test_workers_round_trip(backend_store: Store) -> None:
    record = WorkerRecord(
        wid="w1", hostname="h", pid=12, labels=["a", "b"], started_at=NOW, last_beat=NOW + 1
    )
    await backend_store.save_worker(record)
    record.labels.append("changed-after-save")
    stored = await backend_store.get_worker("w1")
    assert stored == WorkerRecord("w1", "h", 12, ["a", "b"], NOW, NOW + 1)
    await backend_store.save_worker(WorkerRecord("w2", state="quiet", rss_kb=100, connections=2))
    await backend_store.save_worker(WorkerRecord("w1", hostname="h2"))
    workers = {w.wid: w for w in await backend_store.list_workers()}
    assert set(workers) == {"w1", "w2"}
    assert workers["w1"].hostname == "h2"
    assert (workers["w2"].state, workers["w2"].rss_kb, workers["w2"].connections) == (
        "quiet",
        100,
        2,
    )
    assert await backend_store.delete_worker("w1") is True
    assert await backend_store.delete_worker("w1") is False
    assert await backend_store.get_worker("w1") is None


async def test_delete_worker_spares_a_worker_that_beat_since(backend_store: Store) -> None:
    """The reaper deletes only a worker still silent: a BEAT landing between its listing and
    its delete (on another server sharing the store) keeps the worker."""
    await backend_store.save_worker(WorkerRecord("w1", last_beat=1_700_000_100.25))
    assert await backend_store.delete_worker("w1", silent_before=1_700_000_050.0) is False
    assert await backend_store.delete_worker("w1", silent_before=1_700_000_100.25) is False
    assert (await backend_store.get_worker("w1")) is not None
    assert await backend_store.delete_worker("w1", silent_before=1_700_000_200.0) is True
    assert await backend_store.get_worker("w1") is None
    assert await backend_store.delete_worker("ghost", silent_before=1_700_000_200.0) is False


async def test_flush_deletes_everything_but_workers(backend_store: Store) -> None:
    await backend_store.enqueue([job("j1", "a"), job("j2", "b"), job("j3", "b")])
    await backend_store.set_paused(["b"], True)
    await backend_store.reserve(["a"], "w", NOW)
    await backend_store.ack(["j1"], DAY)
    for name in SortedSet:
        await backend_store.add_to_set(name, [entry("s", NOW)])
    await backend_store.save_worker(WorkerRecord("w1"))
    await backend_store.flush()
    assert await backend_store.queue_sizes() == {}
    assert await backend_store.paused_queues() == set()
    assert [await backend_store.set_size(name) for name in SortedSet] == [0] * len(SortedSet)
    assert (await backend_store.list_reservations(0, 10)).total == 0
    assert await backend_store.counters() == Counters(0, 0)
    assert await backend_store.daily_counters([DAY]) == {DAY: Counters(0, 0)}
    assert [w.wid for w in await backend_store.list_workers()] == ["w1"]
    await backend_store.enqueue([job("j4", "b")])
    assert [r.jid for r in await backend_store.reserve(["b"], "w", NOW)] == ["j4"]


async def test_update_worker_sets_rss_and_last_beat_only(backend_store: Store) -> None:
    record = WorkerRecord("w1", "h", 12, ["a", "b"], NOW, NOW, rss_kb=1, connections=1)
    await backend_store.save_worker(record)
    changed = await backend_store.update_worker("w1", rss_kb=2048, last_beat=NOW + 5.5)
    assert changed == WorkerRecord("w1", "h", 12, ["a", "b"], NOW, NOW + 5.5, 2048, "running", 1)
    assert await backend_store.get_worker("w1") == changed
    # Nothing given changes nothing.
    assert await backend_store.update_worker("w1") == changed
    assert await backend_store.get_worker("w1") == changed


async def test_update_worker_moves_state_forward_only(backend_store: Store) -> None:
    await backend_store.save_worker(WorkerRecord("w1", connections=1))
    seen = []
    for wanted in (None, "quiet", "running", "bogus", "", "quiet", "terminate", "quiet"):
        record = await backend_store.update_worker("w1", state=wanted)
        assert record is not None
        seen.append(record.state)
    assert seen == ["running"] + ["quiet"] * 5 + ["terminate"] * 2
    stored = await backend_store.get_worker("w1")
    assert stored is not None
    assert stored.state == "terminate"


async def test_update_worker_of_unknown_wid_changes_nothing(backend_store: Store) -> None:
    assert await backend_store.update_worker("nope", state="quiet", connections_delta=1) is None
    assert await backend_store.get_worker("nope") is None
    assert await backend_store.list_workers() == []


async def test_update_worker_creates_once_and_counts_connections(backend_store: Store) -> None:
    first = WorkerRecord("w1", "hôte/1", 7, [], NOW, NOW)
    created = await backend_store.update_worker("w1", connections_delta=1, create=first)
    assert created == WorkerRecord("w1", "hôte/1", 7, [], NOW, NOW, connections=1)
    # A second "first connection" (say, on another server) counts, and keeps the record.
    other = WorkerRecord("w1", "elsewhere", 8, ["z"], NOW + 9, NOW + 9)
    again = await backend_store.update_worker("w1", connections_delta=1, create=other)
    assert again == WorkerRecord("w1", "hôte/1", 7, [], NOW, NOW, connections=2)
    assert await backend_store.list_workers() == [again]
    # Connections counted concurrently are all counted.
    await asyncio.gather(
        *(backend_store.update_worker("w1", connections_delta=1) for _ in range(20))
    )
    stored = await backend_store.get_worker("w1")
    assert stored is not None
    assert stored.connections == 22
    # Dropping to zero deletes the record and returns it as it was deleted.
    last = await backend_store.update_worker("w1", connections_delta=-22)
    assert last is not None
    assert (last.wid, last.connections) == ("w1", 0)
    assert await backend_store.get_worker("w1") is None
    assert await backend_store.list_workers() == []
    # A record with no connections is kept by changes that do not drop connections.
    await backend_store.save_worker(WorkerRecord("w2"))
    beat = await backend_store.update_worker("w2", last_beat=NOW)
    assert beat is not None
    assert beat.connections == 0
    assert [w.wid for w in await backend_store.list_workers()] == ["w2"]


async def test_update_worker_keeps_labels(backend_store: Store) -> None:
    for wid, labels in (("empty", []), ("two", ["x", "ü y"])):
        made = WorkerRecord(wid, labels=list(labels))
        await backend_store.update_worker(wid, connections_delta=1, create=made)
        await backend_store.update_worker(wid, rss_kb=5, state="quiet")
        stored = await backend_store.get_worker(wid)
        assert stored is not None
        assert (stored.labels, stored.rss_kb, stored.state) == (labels, 5, "quiet")
    listed = {w.wid: w.labels for w in await backend_store.list_workers()}
    assert listed == {"empty": [], "two": ["x", "ü y"]}


async def test_update_worker_refuses_to_create_another_wid(backend_store: Store) -> None:
    with pytest.raises(ValueError, match="w2"):
        await backend_store.update_worker("w1", connections_delta=1, create=WorkerRecord("w2"))
    assert await backend_store.list_workers() == []
