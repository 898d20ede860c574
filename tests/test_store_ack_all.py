"""One ACK does everything its jobs asked for, in one store step, on every backend
(``Endings.ack_returning``): it ends the reservation, counts it, keeps the job in the completed
set (``keep``), frees its throttle slot and moves its batch or tracked mark (``ends``), and a
repeat changes nothing. On Redis a batch job takes the script's second run (its batch declared):
its entry must come along. On SQLite a step that fails midway leaves all of it as it was."""

from __future__ import annotations

import time

import pytest

from conveyor.store.base import QueuedJob, SetEntry, SortedSet, Store
from conveyor.store.batches import MarkState, NewMark
from conveyor.store.limits import QueueLimit
from conveyor.store.sqlite import SQLiteStore
from tests.test_store_batches import CTX, DAY, LATER, NOW, job, new_batch, status

LIMITS = {"q": QueueLimit(concurrency=2)}


def kept(jid: str, **custom: object) -> SetEntry:
    return SetEntry(NOW + 600, jid, job(jid, **custom), "q", "Work")


async def setup(store: Store) -> None:
    """Batch b-1 (committed) with job-0001, a tracked job, both in throttled queue q and
    reserved; a third job of q waits for a slot."""
    await new_batch(store, "b-1")
    marks = [NewMark("job-0001", "b-1", LATER), NewMark("tracked-1", "", LATER)]
    await store.mark_jobs(marks, NOW)
    await store.commit_batch("b-1", NOW, LATER)
    await store.enqueue(
        [
            QueuedJob("q", "job-0001", job("job-0001", bid="b-1", retain=600), 60),
            QueuedJob("q", "tracked-1", job("tracked-1", track=1, retain=600), 60),
            QueuedJob("q", "next-001", job("next-001"), 60),
        ]
    )
    taken = await store.reserve_limited(["q"], "w", time.time(), 3, LIMITS)
    assert [r.jid for r in taken.reservations] == ["job-0001", "tracked-1"]


async def test_one_ack_keeps_counts_frees_its_slot_and_moves_its_batch(
    backend_store: Store,
) -> None:
    store = backend_store
    await setup(store)
    jids = ["job-0001", "tracked-1"]
    entries = [kept("job-0001", bid="b-1"), kept("tracked-1", track=1)]
    woken: list[str] = []
    store.set_ready_listener(woken.append)
    acked = await store.ack_returning(jids, DAY, {"q"}, None, CTX, entries)

    assert [r.jid for r in acked.ended] == jids
    assert (await store.counters()).processed == 2
    # kept, both: the batch job's entry came along to the run that named its batch (Redis)
    assert await store.get_set_entries(SortedSet.COMPLETED, jids) == entries
    # the marks ended with it: the batch is complete, its callback scheduled in the same step
    assert sorted(acked.fired.ended) == jids
    assert [e.jid for e in acked.fired.scheduled] == ["b-1-complete"]
    assert await status(store) == (1, 0, 0, "1", "")
    marks = await store.get_marks(jids, NOW)
    assert {jid: m.state for jid, m in marks.items()} == dict.fromkeys(jids, MarkState.SUCCESS)
    # the throttle's slots are free (its queue announced): the waiting job of q can be reserved
    assert "q" in woken
    assert (await store.limit_usage(LIMITS, time.time()))["q"].in_use == 0
    again = await store.reserve_limited(["q"], "w", time.time(), 3, LIMITS)
    assert [r.jid for r in again.reservations] == ["next-001"]

    repeat = await store.ack_returning(jids, DAY, {"q"}, None, CTX, entries)
    assert repeat.ended == []
    assert not repeat.fired
    assert (await store.counters()).processed == 2
    assert await store.set_size(SortedSet.COMPLETED) == 2


async def test_an_ack_that_keeps_nothing_still_moves_the_batch(backend_store: Store) -> None:
    """``keep`` and ``ends`` are independent: a batch job not kept counts in its batch, a
    kept job outside any batch is kept, in one call."""
    store = backend_store
    await setup(store)
    acked = await store.ack_returning(
        ["job-0001", "tracked-1"], DAY, {"q"}, None, CTX, [kept("tracked-1", track=1)]
    )
    assert len(acked.ended) == 2
    assert await store.get_set_entries(SortedSet.COMPLETED, ["job-0001", "tracked-1"]) == [
        kept("tracked-1", track=1)
    ]
    assert await status(store) == (1, 0, 0, "1", "")


@pytest.mark.parametrize("backend_store", ["sqlite"], indirect=True)
async def test_sqlite_a_failed_step_changes_none_of_it(
    backend_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is written last in the savepoint: when it fails, the reservation, the
    counters, the marks, the batch and the slot are all as they were (the ACK is refused,
    the job runs again)."""
    store = backend_store
    assert isinstance(store, SQLiteStore)
    await setup(store)

    def broken(*args: object) -> int:
        raise OSError("disk I/O error")

    monkeypatch.setattr(store, "_put_entries", broken)
    with pytest.raises(OSError, match="disk I/O error"):
        await store.ack_returning(
            ["job-0001"], DAY, {"q"}, None, CTX, [kept("job-0001", bid="b-1")]
        )
    monkeypatch.undo()
    assert await store.get_reservation("job-0001") is not None
    assert (await store.counters()).processed == 0
    assert await status(store) == (1, 1, 0, "", "")
    assert (await store.get_marks(["job-0001"], NOW))["job-0001"].state == MarkState.ENQUEUED
    assert await store.set_size(SortedSet.COMPLETED) == 0
    assert (await store.limit_usage(LIMITS, time.time()))["q"].in_use == 2
    # and the ACK, sent again, does all of it
    acked = await store.ack_returning(
        ["job-0001"], DAY, {"q"}, None, CTX, [kept("job-0001", bid="b-1")]
    )
    assert [r.jid for r in acked.ended] == ["job-0001"]
    assert await status(store) == (1, 0, 0, "1", "")
    assert await store.set_size(SortedSet.COMPLETED) == 1
