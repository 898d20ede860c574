"""The batch transitions in Python, for the backends that run in this process (memory,
SQLite): each public function is one atomic step over a ``Tables`` view of the backend.

``redis/lua/_batches.lua`` implements the same rules in Lua; the contract suite
(``tests/test_store_batches.py``) holds both to the same answers. The rules themselves are
described in ``conveyor.store.batches`` and docs/design/batches.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import msgspec

from conveyor.store.base import SetEntry
from conveyor.store.batches import (
    BatchRecord,
    CallbackJob,
    EndContext,
    Fired,
    JobEnd,
    JobMark,
    MarkResult,
    MarkState,
    NewBatch,
    NewMark,
    Outcome,
    WaitingJob,
)
from conveyor.timefmt import format_time

__all__ = [
    "Tables",
    "adopt",
    "bury_payload",
    "commit",
    "create",
    "end_jobs",
    "mark_jobs",
    "may_fire_on_success",
    "propagate",
]

_STARTED = frozenset({MarkState.ENQUEUED, MarkState.WAITING})
_FAILING = frozenset({MarkState.FAILED, MarkState.DEAD})
DEPENDENCY_ERRTYPE = "DependencyDied"


class Tables(Protocol):
    """What the engine reads and writes, inside one atomic step of a backend."""

    def batch(self, bid: str) -> BatchRecord | None: ...

    def save_batch(self, batch: BatchRecord) -> None: ...

    def join(self, bid: str, jid: str, seq: int) -> None:
        """Add ``jid`` to the batch's job list, ``seq`` (its ``total`` now) giving the order."""

    def add_child(self, parent: str, child: str) -> None: ...

    def set_propagation(self, bid: str, pending: bool) -> None: ...

    def mark(self, jid: str) -> JobMark | None:
        """The live mark of ``jid``."""

    def save_mark(self, mark: JobMark) -> None: ...

    def waiting(self, jid: str) -> WaitingJob | None: ...

    def save_waiting(self, job: WaitingJob) -> None: ...

    def delete_waiting(self, jid: str) -> None: ...

    def waiters(self, dep: str) -> list[str]: ...

    def add_waiter(self, dep: str, waiter: str) -> None: ...

    def drop_waiters(self, dep: str) -> None: ...

    def schedule(self, entry: SetEntry) -> None:
        """Put ``entry`` in the scheduled set (replacing one of its jid)."""

    def bury(self, entry: SetEntry) -> None:
        """Put ``entry`` in the dead set (replacing one of its jid)."""

    def end_reservation(self, jid: str, day: str) -> bool:
        """``Store.ack`` of one jid: True when a reservation existed (counted processed)."""


# ----------------------------------------------------------------------- batches


def create(t: Tables, new: NewBatch) -> str | None:
    parent: BatchRecord | None = None
    if new.parent_bid:
        parent = t.batch(new.parent_bid)
        if parent is None:
            return f"no such batch {new.parent_bid}"
        if parent.committed:
            return f"batch {new.parent_bid} is committed: BATCH OPEN it to add a child"
    batch = BatchRecord(
        new.bid,
        new.created_at,
        new.expires_at,
        description=new.description,
        parent_bid=new.parent_bid,
        complete=new.complete,
        success=new.success,
    )
    t.save_batch(batch)
    if parent is not None:
        parent.children += 1
        parent.kids_complete += 1
        parent.kids_success += 1
        t.save_batch(parent)
        t.add_child(parent.bid, new.bid)
    return None


def commit(t: Tables, bid: str, now: float, expires_at: float) -> Fired | None:
    batch = t.batch(bid)
    if batch is None:
        return None
    batch.committed = True
    batch.committed_at = now
    batch.expires_at = expires_at
    fired = Fired()
    settle(t, batch, now, fired)
    return fired


def adopt(t: Tables, parent_bid: str, child_bid: str) -> str | None:
    parent, child = t.batch(parent_bid), t.batch(child_bid)
    if parent is None:
        return f"no such batch {parent_bid}"
    if child is None:
        return f"no such batch {child_bid}"
    if child.parent_bid == parent_bid:
        return None  # asked again: done already
    if parent.committed:
        return f"batch {parent_bid} is committed: BATCH OPEN it to add a child"
    if child.parent_bid:
        return f"batch {child_bid} already has a parent, {child.parent_bid}"
    ancestor: BatchRecord | None = parent
    while ancestor is not None:
        if ancestor.bid == child_bid:
            return f"batch {child_bid} is an ancestor of {parent_bid}: no cycles"
        ancestor = t.batch(ancestor.parent_bid) if ancestor.parent_bid else None
    child.parent_bid = parent_bid
    child.r_complete, child.r_success = child.m_complete, child.m_success
    parent.children += 1
    parent.kids_complete += 0 if child.m_complete else 1
    parent.kids_success += 0 if child.m_success else 1
    t.save_batch(child)
    t.save_batch(parent)
    t.add_child(parent_bid, child_bid)
    return None


def settle(t: Tables, batch: BatchRecord, now: float, fired: Fired) -> None:
    """Save ``batch`` after firing what its counters make due (nothing while it is open)."""
    if batch.committed:
        complete_reached = batch.pending == batch.failed and batch.kids_complete == 0
        if complete_reached and batch.complete is not None and batch.complete_st == "":
            batch.complete_st = "1"
            _call_back(t, batch, batch.complete, "complete", now, fired)
        complete_done = complete_reached and (batch.complete is None or batch.complete_st == "2")
        if complete_done and not batch.m_complete:
            batch.m_complete = True
            _milestone(t, batch, fired)
        success_reached = complete_done and batch.pending == 0 and batch.kids_success == 0
        if success_reached and batch.success is not None and batch.success_st == "":
            batch.success_st = "1"
            _call_back(t, batch, batch.success, "success", now, fired)
        success_done = success_reached and (batch.success is None or batch.success_st == "2")
        if success_done and not batch.m_success:
            batch.m_success = True
            _milestone(t, batch, fired)
    t.save_batch(batch)


def may_fire_on_success(batch: BatchRecord) -> bool:
    """Whether one more success of an enqueued job of ``batch`` may make something due in
    ``settle`` (conservatively: committed, and every job still pending would then be a
    failed one); when not, its counters can move without ``settle``."""
    return batch.committed and batch.pending - 1 == batch.failed


def _milestone(t: Tables, batch: BatchRecord, fired: Fired) -> None:
    if batch.parent_bid:
        t.set_propagation(batch.bid, True)
        if batch.bid not in fired.propagate:
            fired.propagate.append(batch.bid)


def _call_back(
    t: Tables, batch: BatchRecord, job: CallbackJob, role: str, now: float, fired: Fired
) -> None:
    entry = SetEntry(now, job.jid, job.payload, job.queue, job.jobtype)
    t.schedule(entry)
    t.save_mark(JobMark(job.jid, MarkState.ENQUEUED, now, batch.bid, role))
    fired.scheduled.append(entry)
    fired.marked.append(job.jid)


def propagate(t: Tables, child_bid: str, now: float) -> Fired:
    fired = Fired()
    child = t.batch(child_bid)
    parent = t.batch(child.parent_bid) if child is not None and child.parent_bid else None
    if child is None or parent is None:
        t.set_propagation(child_bid, False)
        return fired
    if child.m_complete and not child.r_complete:
        child.r_complete = True
        parent.kids_complete -= 1
    if child.m_success and not child.r_success:
        child.r_success = True
        parent.kids_success -= 1
    t.save_batch(child)
    t.set_propagation(child_bid, False)
    settle(t, parent, now, fired)
    return fired


# ----------------------------------------------------------------------- marks


def mark_jobs(t: Tables, marks: Sequence[NewMark], now: float) -> dict[str, tuple[MarkResult, str]]:
    results: dict[str, tuple[MarkResult, str]] = {}
    for new in marks:
        results[new.jid] = _mark_one(t, new, now)
    return results


def _mark_one(t: Tables, new: NewMark, now: float) -> tuple[MarkResult, str]:
    existing = t.mark(new.jid)
    if existing is not None:  # a PUSH sent again: as the first one left it
        if existing.state == MarkState.WAITING:
            return MarkResult.WAITING, ""
        return MarkResult.READY, ""
    batch: BatchRecord | None = None
    if new.bid:
        batch = t.batch(new.bid)
        if batch is None:
            return MarkResult.REFUSED, f"no such batch {new.bid}"
        if batch.committed:
            return MarkResult.REFUSED, f"batch {new.bid} is committed: BATCH OPEN it to add jobs"
    result, detail, pending = MarkResult.READY, "", []
    if new.waiting is not None:
        for dep in dict.fromkeys(new.waiting.after):
            mark = t.mark(dep)
            if mark is None:
                return MarkResult.REFUSED, f"after: no tracked job {dep}"
            if mark.state == MarkState.DEAD and result != MarkResult.DEAD:
                result, detail = MarkResult.DEAD, dep
            elif mark.state != MarkState.SUCCESS:
                pending.append(dep)
        if result != MarkResult.DEAD and pending:
            result = MarkResult.WAITING
    state = {
        MarkResult.READY: MarkState.ENQUEUED,
        MarkResult.WAITING: MarkState.WAITING,
        MarkResult.DEAD: MarkState.DEAD,
    }[result]
    if batch is not None:
        batch.total += 1
        batch.pending += 1
        batch.failed += 1 if state == MarkState.DEAD else 0
        t.save_batch(batch)
        t.join(batch.bid, new.jid, batch.total)
    expires = None if new.bid else new.expires_at  # a batch job's mark goes with its batch
    t.save_mark(JobMark(new.jid, state, now, new.bid, "", expires))
    if result == MarkResult.WAITING and new.waiting is not None:
        t.save_waiting(dataclasses.replace(new.waiting, remaining=len(pending), since=now))
        for dep in pending:
            t.add_waiter(dep, new.jid)
    return result, detail


def end_jobs(
    t: Tables, ends: Sequence[JobEnd], ctx: EndContext, declared: set[str] | None = None
) -> Fired:
    """``declared``: the batches this step may change (None: all of them)."""
    fired = Fired()
    work = list(ends)
    while work:
        _end_one(t, work.pop(0), ctx, declared, fired, work)
    return fired


def _end_one(
    t: Tables,
    end: JobEnd,
    ctx: EndContext,
    declared: set[str] | None,
    fired: Fired,
    work: list[JobEnd],
) -> None:
    mark = t.mark(end.jid)
    new_state = _next_state(mark.state, end.outcome) if mark is not None else None
    batch = t.batch(mark.bid) if mark is not None and mark.bid and new_state else None
    if batch is not None and declared is not None and batch.bid not in declared:
        waiting = t.waiting(end.jid)
        if waiting is not None:  # durable, for the sweep, should the caller die now
            t.save_waiting(dataclasses.replace(waiting, remaining=-1, doomed_by=end.cause))
        fired.doomed.append(dataclasses.replace(end, bid=batch.bid))
        return
    if end.outcome == Outcome.SUCCESS:
        if not t.end_reservation(end.jid, ctx.day):
            return  # no reservation: a late ACK of an attempt that has been failed since
        fired.processed += 1
    if mark is None or new_state is None:
        return
    if mark.state == MarkState.WAITING:  # killed before it ran
        waiting = t.waiting(end.jid)
        t.delete_waiting(end.jid)
        if waiting is not None:
            payload = bury_payload(waiting.payload, end.cause, ctx.now)
            t.bury(SetEntry(ctx.dead_until, end.jid, payload, waiting.queue, waiting.jobtype))
            fired.killed.append(end.jid)
    expires = mark.expires_at if mark.bid else ctx.now + ctx.keep_seconds
    t.save_mark(JobMark(mark.jid, new_state, ctx.now, mark.bid, mark.role, expires))
    if new_state in (MarkState.SUCCESS, MarkState.DEAD):
        fired.ended.append(end.jid)
    if batch is not None:
        _count(batch, mark, new_state)
        settle(t, batch, ctx.now, fired)
    if new_state == MarkState.SUCCESS:
        _release(t, end.jid, ctx.now, fired)
    elif new_state == MarkState.DEAD:
        cause = end.cause or end.jid
        waiters = t.waiters(end.jid)
        if waiters:
            work.extend(JobEnd(w, Outcome.DEAD, "", cause) for w in waiters)
            t.drop_waiters(end.jid)


def _next_state(state: MarkState, outcome: Outcome) -> MarkState | None:
    """The mark's next state, None when this end changes nothing (a repeat)."""
    if outcome == Outcome.SUCCESS:
        return MarkState.SUCCESS if state != MarkState.SUCCESS else None
    if state == MarkState.SUCCESS:
        return None
    if outcome == Outcome.FAILED:
        return MarkState.FAILED if state != MarkState.FAILED else None
    return MarkState.DEAD if state != MarkState.DEAD else None


def _count(batch: BatchRecord, mark: JobMark, new_state: MarkState) -> None:
    if mark.role:  # a callback of this batch: only its success counts
        if new_state == MarkState.SUCCESS:
            if mark.role == "complete" and batch.complete_st == "1":
                batch.complete_st = "2"
            elif mark.role == "success" and batch.success_st == "1":
                batch.success_st = "2"
        return
    if mark.state in _STARTED and new_state in _FAILING:
        batch.failed += 1
    elif mark.state in _FAILING and new_state == MarkState.SUCCESS:
        batch.failed -= 1
    if new_state == MarkState.SUCCESS:
        batch.pending -= 1


def _release(t: Tables, dep: str, now: float, fired: Fired) -> None:
    waiters = t.waiters(dep)
    if not waiters:
        return
    for jid in waiters:
        waiting = t.waiting(jid)
        if waiting is None or waiting.remaining < 0:  # gone, or doomed by a dead dependency
            continue
        if waiting.remaining > 1:
            t.save_waiting(dataclasses.replace(waiting, remaining=waiting.remaining - 1))
            continue
        t.delete_waiting(jid)
        entry = SetEntry(
            max(waiting.due, now), jid, waiting.payload, waiting.queue, waiting.jobtype
        )
        t.schedule(entry)
        mark = t.mark(jid)
        if mark is not None:
            t.save_mark(dataclasses.replace(mark, state=MarkState.ENQUEUED, updated_at=now))
        fired.scheduled.append(entry)
    t.drop_waiters(dep)


_failure_encoder = msgspec.json.Encoder()


def bury_payload(payload: bytes, cause: str, now: float) -> bytes:
    """``payload`` with the failure of a job whose dependency ``cause`` died, inserted after
    its first key (``retry``, which every stored job has first). The Lua twin builds the same
    bytes."""
    failure = _failure_encoder.encode(
        {
            "retry_count": 0,
            "remaining": 0,
            "failed_at": format_time(now),
            "message": f"job {cause}, which this job waits for, died",
            "errtype": DEPENDENCY_ERRTYPE,
        }
    )
    comma = payload.find(b",")
    if not payload.startswith(b'{"retry":') or comma < 0:
        return payload
    return payload[: comma + 1] + b'"failure":' + failure + b"," + payload[comma + 1 :]
