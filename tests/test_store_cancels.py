"""The cancels capability (``conveyor.store.cancels``), run against every backend: a job taken
out of wherever it is, recorded and counted in one step, and never counted twice."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.store.base import QueuedJob, SetEntry, SortedSet, Store
from conveyor.store.cancels import (
    CANCELLED_SPACE,
    COUNTS_SPACE,
    NOTICES_SPACE,
    CancelOutcome,
    CancelTarget,
)
from conveyor.store.groups import GroupMember, GroupSpec
from conveyor.store.records import Record

NOW = 1_700_000_000.0
DAY = "2023-11-14"


def queued(jid: str, queue: str = "default") -> QueuedJob:
    return QueuedJob(queue, jid, b'{"jid":"%s"}' % jid.encode(), 60)


def record(jid: str) -> Record:
    return Record(jid, b'{"was":"somewhere"}', NOW + 3600)


async def counts(store: Store) -> dict[str, int]:
    found = await store.get_records(COUNTS_SPACE, ["total", DAY], NOW)
    return {key: int(r.value) for key, r in found.items()}


async def test_a_queued_job_leaves_its_queue_with_its_record_and_count(
    backend_store: Store,
) -> None:
    store = backend_store
    await store.enqueue([queued("job-0001"), queued("job-0002"), queued("job-0003")])
    target = CancelTarget("job-0002", "queued", queue="default")
    outcome = await store.cancel_job(target, record("job-0002"), None, DAY, NOW)
    assert outcome is CancelOutcome.CANCELLED
    page = await store.list_queue("default", 0, 10)
    assert [j.jid for j in page.items] == ["job-0001", "job-0003"]
    assert page.total == 2
    assert (await store.queue_sizes())["default"] == 2
    kept = await store.get_records(CANCELLED_SPACE, ["job-0002"], NOW)
    assert kept == {"job-0002": record("job-0002")}
    assert await counts(store) == {"total": 1, DAY: 1}
    # the same call again (a lost reply's retry, or another server): no second count
    again = await store.cancel_job(target, record("job-0002"), None, DAY, NOW)
    assert again is CancelOutcome.ALREADY
    assert await counts(store) == {"total": 1, DAY: 1}
    assert [j.jid for j in await store.reserve(["default"], "w", NOW, 5)] == [
        "job-0001",
        "job-0003",
    ]


@pytest.mark.parametrize("name", [SortedSet.SCHEDULED, SortedSet.RETRIES])
async def test_a_set_entry_is_cancelled_only_at_the_score_it_was_seen(
    backend_store: Store, name: SortedSet
) -> None:
    store = backend_store
    await store.add_to_set(name, [SetEntry(NOW + 50, "job-0001", b"{}", "default", "T")])
    moved = CancelTarget("job-0001", name.value, score=NOW + 49)
    assert await store.cancel_job(moved, record("job-0001"), None, DAY, NOW) is CancelOutcome.MOVED
    assert await store.set_size(name) == 1
    assert await counts(store) == {}
    target = CancelTarget("job-0001", name.value, score=NOW + 50)
    outcome = await store.cancel_job(target, record("job-0001"), None, DAY, NOW)
    assert outcome is CancelOutcome.CANCELLED
    assert await store.set_size(name) == 0
    assert await store.get_set_entries(name, ["job-0001"]) == []
    assert await store.due_entries(name, NOW + 100, 10) == []


async def test_a_reserved_job_ends_uncounted_and_its_worker_gets_a_notice(
    backend_store: Store,
) -> None:
    store = backend_store
    await store.enqueue([queued("job-0001")])
    (reservation,) = await store.reserve(["default"], "wid-a", NOW, 1)
    wrong = CancelTarget("job-0001", "working", wid="wid-b")
    assert await store.cancel_job(wrong, record("job-0001"), None, DAY, NOW) is CancelOutcome.MOVED
    assert await store.get_reservation("job-0001") == reservation
    target = CancelTarget("job-0001", "working", wid="wid-a")
    notice = Record("job-0001", b"wid-a", NOW + 300)
    outcome = await store.cancel_job(target, record("job-0001"), notice, DAY, NOW)
    assert outcome is CancelOutcome.CANCELLED
    assert await store.get_reservation("job-0001") is None
    assert (await store.list_reservations(0, 10)).total == 0
    assert await store.expired_reservations(NOW + 10**6, 10) == []
    assert await store.get_records(NOTICES_SPACE, ["job-0001"], NOW) == {"job-0001": notice}
    # neither processed nor failed: counted apart
    totals = await store.counters()
    assert (totals.processed, totals.failures) == (0, 0)
    assert await counts(store) == {"total": 1, DAY: 1}
    # the worker's late ACK and FAIL find nothing to end
    assert await store.ack(["job-0001"], DAY) == 0


async def test_a_group_member_leaves_its_group(backend_store: Store) -> None:
    store = backend_store
    spec = GroupSpec(3, 10.0, 2.0)
    for i in range(3):
        await store.add_to_group("g", GroupMember(f"job-{i:04d}", b"{}", NOW + i), spec)
    target = CancelTarget("job-0000", "aggregating", group="g")
    assert await store.cancel_job(target, record("job-0000"), None, DAY, NOW + 3) is (
        CancelOutcome.CANCELLED
    )
    (group,) = await store.get_groups(["g"])
    assert (group.size, group.first_at, group.due_at) == (2, NOW + 1, NOW + 4)
    assert [m.jid for m in await store.group_members("g", 0, 9)] == ["job-0001", "job-0002"]
    assert await store.find_group_members(["job-0000"]) == {}
    for jid in ("job-0001", "job-0002"):
        last = CancelTarget(jid, "aggregating", group="g")
        assert await store.cancel_job(last, record(jid), None, DAY, NOW + 3) is (
            CancelOutcome.CANCELLED
        )
    assert await store.group_counts() == (0, 0)
    assert await store.next_group_due() is None
    assert await counts(store) == {"total": 3, DAY: 3}


async def test_already_needs_a_live_record(backend_store: Store) -> None:
    store = backend_store
    target = CancelTarget("job-0001", "queued", queue="default")
    assert await store.cancel_job(target, record("job-0001"), None, DAY, NOW) is (
        CancelOutcome.MOVED
    )
    await store.put_records(CANCELLED_SPACE, [Record("job-0001", b"x", NOW + 10)])
    assert await store.cancel_job(target, record("job-0001"), None, DAY, NOW) is (
        CancelOutcome.ALREADY
    )
    assert await store.cancel_job(target, record("job-0001"), None, DAY, NOW + 10) is (
        CancelOutcome.MOVED
    )
    assert await counts(store) == {}


async def test_concurrent_cancels_count_once(backend_store: Store) -> None:
    store = backend_store
    await store.enqueue([queued(f"job-{i:04d}") for i in range(10)])
    targets = [CancelTarget(f"job-{i:04d}", "queued", queue="default") for i in range(10)]
    outcomes = await asyncio.gather(
        *(store.cancel_job(t, record(t.jid), None, DAY, NOW) for t in targets * 3)
    )
    assert outcomes.count(CancelOutcome.CANCELLED) == 10
    assert await counts(store) == {"total": 10, DAY: 10}
    assert (await store.queue_sizes())["default"] == 0


async def test_bad_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot cancel a job from 'dead'"):
        CancelTarget("job-0001", "dead")


async def test_a_queued_job_named_by_its_entry_is_taken_only_if_that_entry_is_there(
    backend_store: Store,
) -> None:
    store = backend_store
    await store.enqueue([queued("job-0001"), queued("job-0002")])
    (first,) = await store.find_queued(["job-0001"])
    other = QueuedJob("default", "job-0001", b'{"jid":"job-0001","v":2}', 60)  # not that one
    moved = CancelTarget("job-0001", "queued", queue="default", entry=other)
    assert await store.cancel_job(moved, record("job-0001"), None, DAY, NOW) is (
        CancelOutcome.MOVED
    )
    target = CancelTarget("job-0001", "queued", queue="default", entry=first)
    assert await store.cancel_job(target, record("job-0001"), None, DAY, NOW) is (
        CancelOutcome.CANCELLED
    )
    assert [j.jid for j in (await store.list_queue("default", 0, 9)).items] == ["job-0002"]
    assert (await store.queue_sizes())["default"] == 1
