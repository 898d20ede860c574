"""The batches capability (``conveyor.store.batches``), run against every backend.

Each test states one promise through the Store methods only, so the Python engine (memory,
SQLite) and the Lua scripts (Redis) must agree exactly.
"""

from __future__ import annotations

import msgspec

from conveyor.job import Job, decode_job, encode_job
from conveyor.store.base import JobFilter, QueuedJob, SetMove, SortedSet, Store
from conveyor.store.batches import (
    CallbackJob,
    EndContext,
    JobEnd,
    MarkResult,
    MarkState,
    NewBatch,
    NewMark,
    Outcome,
    WaitingJob,
)

NOW = 1_700_000_000.0
DAY = "2023-11-14"
LATER = NOW + 86_400
CTX = EndContext(DAY, NOW, 1800.0, NOW + 3600)
_EMPTY = JobFilter()


def job(jid: str, queue: str = "q", **custom: object) -> bytes:
    return encode_job(
        Job(retry=3, jid=jid, queue=queue, jobtype="Work", args=[1], custom=dict(custom) or None)
    )


def callback(jid: str, bid: str, role: str) -> CallbackJob:
    payload = job(jid, "callbacks", _bid=bid, _cb=role)
    return CallbackJob(jid, "callbacks", "Work", payload)


async def new_batch(store: Store, bid: str, parent: str = "", both: bool = True) -> None:
    success = callback(f"{bid}-success", bid, "success")
    complete = callback(f"{bid}-complete", bid, "complete") if both else None
    batch = NewBatch(bid, NOW, NOW + 1800, f"batch {bid}", parent, complete, success)
    assert await store.create_batch(batch) is None


async def push(store: Store, *jids: str, bid: str = "b-1") -> None:
    marks = [NewMark(jid, bid, LATER) for jid in jids]
    results = await store.mark_jobs(marks, NOW)
    assert results == {jid: (MarkResult.READY, "") for jid in jids}
    await store.enqueue([QueuedJob("q", jid, job(jid, bid=bid), 60) for jid in jids])


async def run(
    store: Store, *jids: str, outcome: Outcome = Outcome.SUCCESS, bid: str = "b-1"
) -> None:
    """Reserve these jobs (from queue q) and end them with ``outcome``."""
    reserved = await store.reserve(["q"], "w", NOW, count=len(jids))
    assert sorted(r.jid for r in reserved) == sorted(jids)
    fired = await store.end_jobs([JobEnd(jid, outcome, bid) for jid in jids], CTX)
    assert fired.doomed == []
    if outcome != Outcome.SUCCESS:
        for jid in jids:
            await store.ack([jid], DAY)  # the job's own transition (fail) ends it


async def status(store: Store, bid: str = "b-1") -> tuple[int, int, int, str, str]:
    batch = (await store.get_batches([bid]))[bid]
    return batch.total, batch.pending, batch.failed, batch.complete_st, batch.success_st


async def scheduled(store: Store) -> list[str]:
    page = await store.list_set(SortedSet.SCHEDULED, _EMPTY, 0, 100)
    return [entry.jid for entry in page.items]


async def run_callback(
    store: Store, jid: str, outcome: Outcome = Outcome.SUCCESS, bid: str = "b-1"
) -> None:
    """Promote a scheduled callback, reserve it and end it."""
    (entry,) = await store.get_set_entries(SortedSet.SCHEDULED, [jid])
    moved = SetMove(entry, QueuedJob(entry.queue, jid, entry.payload, 60))
    assert await store.move_to_queue(SortedSet.SCHEDULED, [moved]) == 1
    (reserved,) = await store.reserve([entry.queue], "w", NOW)
    assert reserved.jid == jid
    await store.end_jobs([JobEnd(jid, outcome, bid)], CTX)


async def test_an_empty_committed_batch_fires_complete_then_success(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    fired = await store.commit_batch("b-1", NOW, LATER)
    assert fired is not None
    assert [e.jid for e in fired.scheduled] == ["b-1-complete"]
    assert await status(store) == (0, 0, 0, "1", "")
    assert await scheduled(store) == ["b-1-complete"]
    await run_callback(store, "b-1-complete")
    assert await status(store) == (0, 0, 0, "2", "1")
    assert await scheduled(store) == ["b-1-success"]
    await run_callback(store, "b-1-success")
    assert await status(store) == (0, 0, 0, "2", "2")


async def test_callbacks_wait_for_the_commit(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await push(store, "job-0001", "job-0002")
    assert await status(store) == (2, 2, 0, "", "")
    await run(store, "job-0001", "job-0002")
    assert await status(store) == (2, 0, 0, "", "")
    assert await scheduled(store) == []
    await store.commit_batch("b-1", NOW, LATER)
    assert await status(store) == (2, 0, 0, "1", "")


async def test_complete_when_each_job_ran_once_success_when_all_succeeded(
    backend_store: Store,
) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await push(store, "job-0001", "job-0002")
    await store.commit_batch("b-1", NOW, LATER)
    await run(store, "job-0001", outcome=Outcome.FAILED)
    assert await status(store) == (2, 2, 1, "", "")
    await run(store, "job-0002")
    assert await status(store) == (2, 1, 1, "1", "")
    await run_callback(store, "b-1-complete")
    assert await status(store) == (2, 1, 1, "2", "")  # one job still failing: no success
    # the retry of the failed job succeeds
    await store.enqueue([QueuedJob("q", "job-0001", job("job-0001"), 60)])
    await run(store, "job-0001")
    assert await status(store) == (2, 0, 0, "2", "1")


async def test_ends_are_idempotent_and_a_late_ack_does_not_count(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await push(store, "job-0001", "job-0002")
    await run(store, "job-0001")
    again = await store.end_jobs([JobEnd("job-0001", Outcome.SUCCESS, "b-1")], CTX)
    assert again.ended == []
    # job-0002 was never reserved: an ACK of it is late or bogus and counts nothing
    await store.end_jobs([JobEnd("job-0002", Outcome.SUCCESS, "b-1")], CTX)
    assert await status(store) == (2, 1, 0, "", "")
    # a PUSH sent twice joins once
    assert await store.mark_jobs([NewMark("job-0002", "b-1", LATER)], NOW) == {
        "job-0002": (MarkResult.READY, "")
    }
    assert await status(store) == (2, 1, 0, "", "")
    # failing twice counts once; dying after failing does not count again
    await store.end_jobs([JobEnd("job-0002", Outcome.FAILED, "b-1")], CTX)
    await store.end_jobs([JobEnd("job-0002", Outcome.FAILED, "b-1")], CTX)
    await store.end_jobs([JobEnd("job-0002", Outcome.DEAD, "b-1")], CTX)
    assert await status(store) == (2, 1, 1, "", "")
    marks = await store.get_marks(["job-0002"], NOW)
    assert marks["job-0002"].state == MarkState.DEAD


async def test_a_committed_batch_refuses_jobs_until_reopened(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await store.commit_batch("b-1", NOW, LATER)
    refused = await store.mark_jobs([NewMark("job-0001", "b-1", LATER)], NOW)
    assert refused["job-0001"][0] == MarkResult.REFUSED
    assert "committed" in refused["job-0001"][1]
    unknown = await store.mark_jobs([NewMark("job-0001", "b-nope", LATER)], NOW)
    assert unknown == {"job-0001": (MarkResult.REFUSED, "no such batch b-nope")}
    assert await store.get_marks(["job-0001"], NOW) == {}
    assert await store.open_batch("b-1")
    assert not await store.open_batch("b-nope")
    await push(store, "job-0001")
    assert await status(store) == (1, 1, 0, "1", "")  # complete fired before: not again
    await run(store, "job-0001")
    await store.commit_batch("b-1", NOW, LATER)
    assert await scheduled(store) == ["b-1-complete"]


async def test_an_ack_ends_the_marks_of_its_jobs_in_its_own_step(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await push(store, "job-0001")
    await store.commit_batch("b-1", NOW, LATER)
    tracked = NewMark("tracked-1", "", LATER)
    waits = WaitingJob("waits-1", "q", "Work", job("waits-1"), ("tracked-1",), 0, 0.0)
    results = await store.mark_jobs([tracked, NewMark("waits-1", "", LATER, waits)], NOW)
    assert results["waits-1"] == (MarkResult.WAITING, "")
    await store.enqueue([QueuedJob("q", jid, job(jid), 60) for jid in ("plain-001", "tracked-1")])
    assert len(await store.reserve(["q"], "w", NOW, count=3)) == 3

    jids = ["plain-001", "job-0001", "nothing-1", "tracked-1"]
    acked = await store.ack_returning(jids, DAY, ends=CTX)
    assert [r.jid for r in acked.ended] == ["plain-001", "job-0001", "tracked-1"]
    assert (await store.counters()).processed == 3
    assert sorted(acked.fired.ended) == ["job-0001", "tracked-1"]
    # the batch is done: its complete callback; the waiting job is released
    assert sorted(e.jid for e in acked.fired.scheduled) == ["b-1-complete", "waits-1"]
    assert await status(store) == (1, 0, 0, "1", "")
    marks = await store.get_marks(["job-0001", "tracked-1", "waits-1"], NOW)
    assert {jid: m.state for jid, m in marks.items()} == {
        "job-0001": MarkState.SUCCESS,
        "tracked-1": MarkState.SUCCESS,
        "waits-1": MarkState.ENQUEUED,
    }
    again = await store.ack_returning(jids, DAY, ends=CTX)  # a repeat ends nothing
    assert again.ended == []
    assert not again.fired
    assert (await store.counters()).processed == 3


async def test_an_ack_without_ends_leaves_the_marks_alone(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await push(store, "job-0001")
    await store.reserve(["q"], "w", NOW)
    acked = await store.ack_returning(["job-0001"], DAY)
    assert [r.jid for r in acked.ended] == ["job-0001"]
    assert not acked.fired
    assert (await store.get_marks(["job-0001"], NOW))["job-0001"].state == MarkState.ENQUEUED
    assert await status(store) == (1, 1, 0, "", "")


async def test_a_parent_waits_for_its_childs_callbacks(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1", both=False)
    await new_batch(store, "b-2", parent="b-1", both=False)
    assert await store.batch_children("b-1") == ["b-2"]
    await push(store, "job-0001", bid="b-1")
    await push(store, "job-0002", bid="b-2")
    await store.commit_batch("b-1", NOW, LATER)
    await store.commit_batch("b-2", NOW, LATER)
    await run(store, "job-0001")
    await run(store, "job-0002", bid="b-2")
    assert await scheduled(store) == ["b-2-success"]  # the child's, not yet the parent's
    await run_callback(store, "b-2-success", bid="b-2")
    pending = await store.pending_propagations(10)
    assert pending == ["b-2"]
    fired = await store.propagate("b-2", NOW)
    assert [e.jid for e in fired.scheduled] == ["b-1-success"]
    assert await store.pending_propagations(10) == []
    again = await store.propagate("b-2", NOW)
    assert again.scheduled == []
    (parent,) = (await store.get_batches(["b-1"])).values()
    assert (parent.children, parent.kids_complete, parent.kids_success) == (1, 0, 0)


async def test_child_adoption_and_its_errors(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await new_batch(store, "b-2")
    assert await store.adopt_batch("b-1", "b-nope", NOW) == "no such batch b-nope"
    assert await store.adopt_batch("b-1", "b-2", NOW) is None
    assert await store.adopt_batch("b-2", "b-1", NOW) is not None  # a cycle
    assert (await store.get_batches(["b-2"]))["b-2"].parent_bid == "b-1"
    unknown_parent = NewBatch(
        "b-3", NOW, LATER, parent_bid="b-nope", success=callback("x" * 8, "b-3", "success")
    )
    assert await store.create_batch(unknown_parent) == "no such batch b-nope"
    assert await store.get_batches(["b-3"]) == {}


async def test_waiting_jobs_are_released_when_their_dependencies_succeed(
    backend_store: Store,
) -> None:
    store = backend_store
    await store.mark_jobs([NewMark("dep-0001", "", LATER), NewMark("dep-0002", "", LATER)], NOW)
    await store.enqueue([QueuedJob("q", j, job(j), 60) for j in ("dep-0001", "dep-0002")])
    waiter = WaitingJob(
        "wait-001", "q", "Work", job("wait-001"), ("dep-0001", "dep-0002"), 0, NOW, NOW + 50
    )
    result = await store.mark_jobs([NewMark("wait-001", "", LATER, waiter)], NOW)
    assert result == {"wait-001": (MarkResult.WAITING, "")}
    assert (await store.get_waiting(["wait-001"]))["wait-001"].remaining == 2
    assert await store.count_waiting() == 1
    await store.reserve(["q"], "w", NOW, count=2)
    first = await store.end_jobs([JobEnd("dep-0001", Outcome.SUCCESS)], CTX)
    assert first.scheduled == []
    assert (await store.get_waiting(["wait-001"]))["wait-001"].remaining == 1
    second = await store.end_jobs([JobEnd("dep-0002", Outcome.SUCCESS)], CTX)
    assert [(e.jid, e.score) for e in second.scheduled] == [("wait-001", NOW + 50)]
    assert await store.count_waiting() == 0
    assert (await store.get_marks(["wait-001"], NOW))["wait-001"].state == MarkState.ENQUEUED
    # every dependency already succeeded: ready at once
    ready = WaitingJob("wait-002", "q", "Work", job("wait-002"), ("dep-0001",), 0, NOW)
    result = await store.mark_jobs([NewMark("wait-002", "", LATER, ready)], NOW)
    assert result == {"wait-002": (MarkResult.READY, "")}
    unknown = WaitingJob("wait-003", "q", "Work", job("wait-003"), ("nobody-1",), 0, NOW)
    result = await store.mark_jobs([NewMark("wait-003", "", LATER, unknown)], NOW)
    assert result["wait-003"][0] == MarkResult.REFUSED


async def test_a_dead_dependency_kills_its_waiters_and_theirs(backend_store: Store) -> None:
    store = backend_store
    await store.mark_jobs([NewMark("dep-0001", "", LATER)], NOW)
    await new_batch(store, "b-1")
    await store.enqueue([QueuedJob("q", "dep-0001", job("dep-0001"), 60)])
    first = WaitingJob("wait-001", "q", "Work", job("wait-001", bid="b-1"), ("dep-0001",), 0, NOW)
    second = WaitingJob("wait-002", "q", "Work", job("wait-002"), ("wait-001",), 0, NOW)
    await store.mark_jobs([NewMark("wait-001", "b-1", LATER, first)], NOW)
    await store.mark_jobs([NewMark("wait-002", "", LATER, second)], NOW)
    await store.reserve(["q"], "w", NOW)
    fired = await store.end_jobs([JobEnd("dep-0001", Outcome.DEAD)], CTX)
    for end in fired.doomed:  # Redis: the waiter's batch is ended in a second step
        fired.add(await store.end_jobs([end], CTX))
    assert sorted(fired.killed) == ["wait-001", "wait-002"]
    assert await store.count_waiting() == 0
    dead = await store.get_set_entries(SortedSet.DEAD, ["wait-001", "wait-002"])
    assert {e.jid: e.score for e in dead} == {"wait-001": NOW + 3600, "wait-002": NOW + 3600}
    for entry in dead:
        failure = decode_job(entry.payload).failure
        assert failure is not None
        assert failure["errtype"] == "DependencyDied"
        assert "dep-0001" in failure["message"]
    assert await status(store) == (1, 1, 1, "", "")  # the killed batch job counts as failed
    marks = await store.get_marks(["wait-001", "wait-002"], NOW)
    assert {m.state for m in marks.values()} == {MarkState.DEAD}
    late = WaitingJob("wait-003", "q", "Work", job("wait-003"), ("dep-0001",), 0, NOW)
    result = await store.mark_jobs([NewMark("wait-003", "", LATER, late)], NOW)
    assert result == {"wait-003": (MarkResult.DEAD, "dep-0001")}


async def test_listings_expiry_and_unfinished_marks(backend_store: Store) -> None:
    store = backend_store
    await new_batch(store, "b-1")
    await new_batch(store, "b-2")
    await store.create_batch(
        NewBatch("b-3", NOW, NOW + 10, "images", success=callback("cb-00003", "b-3", "success"))
    )
    await push(store, "job-0002", "job-0001")
    page = await store.list_batches("", 0, 10)
    assert [b.bid for b in page.items] == ["b-3", "b-2", "b-1"]
    assert [b.bid for b in (await store.list_batches("IMAG", 0, 10)).items] == ["b-3"]
    jobs = await store.batch_jobs("b-1", 0, 10)
    assert (jobs.total, [m.jid for m in jobs.items]) == (2, ["job-0002", "job-0001"])
    assert await store.unfinished_marks("", 10) == ["job-0001", "job-0002"]
    assert await store.unfinished_marks("job-0001", 10) == ["job-0002"]
    assert await store.expire_batches(NOW + 20, 10) == 1
    assert await store.get_batches(["b-3"]) == {}
    assert await store.expire_batches(NOW + 1800, 10) == 2
    assert await store.get_marks(["job-0001"], NOW) == {}
    assert (await store.list_batches("", 0, 10)).total == 0


async def test_finished_plain_marks_expire(backend_store: Store) -> None:
    store = backend_store
    await store.mark_jobs([NewMark("track-01", "", LATER)], NOW)
    await store.enqueue([QueuedJob("q", "track-01", job("track-01"), 60)])
    await store.reserve(["q"], "w", NOW)
    await store.end_jobs([JobEnd("track-01", Outcome.SUCCESS)], CTX)
    mark = (await store.get_marks(["track-01"], NOW))["track-01"]
    assert (mark.state, mark.expires_at) == (MarkState.SUCCESS, NOW + 1800)
    assert await store.get_marks(["track-01"], NOW + 1800) == {}
    assert await store.purge_marks(NOW + 1800, 10) == 1


async def test_flush_forgets_batches(backend_store: Store) -> None:
    await new_batch(backend_store, "b-1")
    await backend_store.flush()
    assert await backend_store.get_batches(["b-1"]) == {}


def test_bury_payload_keeps_the_rest_of_the_job() -> None:
    from conveyor.store.batch_engine import bury_payload

    payload = job("wait-001", bid="b-1")
    buried = msgspec.json.decode(bury_payload(payload, "dep-0001", NOW))
    original = msgspec.json.decode(payload)
    assert buried.pop("failure")["errtype"] == "DependencyDied"
    assert buried == original
