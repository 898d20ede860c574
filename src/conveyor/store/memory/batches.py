"""Batches (``conveyor.store.batches``) in memory: dicts, moved by ``batch_engine``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.store import batch_engine as engine
from conveyor.store.base import Page, Reservation, SetEntry, SortedSet
from conveyor.store.batches import (
    Batches,
    BatchRecord,
    EndContext,
    Fired,
    JobEnd,
    JobMark,
    MarkResult,
    NewBatch,
    NewMark,
    Outcome,
    WaitingJob,
)

if TYPE_CHECKING:
    from conveyor.store.memory.store import _SortedSet

__all__ = ["MemoryBatches"]


class _Tables:
    """``batch_engine.Tables`` over a ``MemoryStore``. The engine saves every batch record it
    changes, so it is handed the stored records themselves (no copies on the hot path)."""

    def __init__(
        self, store: MemoryBatches, now: float = 0.0, ended: set[str] | None = None
    ) -> None:
        self.s = store
        self.now = now
        self.ended = ended
        """Jids whose reservations the caller ended and counted already (an ACK)."""

    def batch(self, bid: str) -> BatchRecord | None:
        return self.s._batches.get(bid)

    def save_batch(self, batch: BatchRecord) -> None:
        self.s._batches[batch.bid] = batch

    def join(self, bid: str, jid: str, seq: int) -> None:
        self.s._batch_jobs.setdefault(bid, {})[jid] = None

    def add_child(self, parent: str, child: str) -> None:
        self.s._batch_children.setdefault(parent, {})[child] = None

    def set_propagation(self, bid: str, pending: bool) -> None:
        if pending:
            self.s._propagations[bid] = None
        else:
            self.s._propagations.pop(bid, None)

    def mark(self, jid: str) -> JobMark | None:
        mark = self.s._marks.get(jid)
        if mark is None or (mark.expires_at is not None and mark.expires_at <= self.now):
            return None
        return mark

    def save_mark(self, mark: JobMark) -> None:
        self.s._marks[mark.jid] = mark

    def waiting(self, jid: str) -> WaitingJob | None:
        return self.s._waiting.get(jid)

    def save_waiting(self, job: WaitingJob) -> None:
        self.s._waiting[job.jid] = job

    def delete_waiting(self, jid: str) -> None:
        self.s._waiting.pop(jid, None)

    def waiters(self, dep: str) -> list[str]:
        return list(self.s._waiters.get(dep, ()))

    def add_waiter(self, dep: str, waiter: str) -> None:
        self.s._waiters.setdefault(dep, {})[waiter] = None

    def drop_waiters(self, dep: str) -> None:
        self.s._waiters.pop(dep, None)

    def schedule(self, entry: SetEntry) -> None:
        self.s._sets[SortedSet.SCHEDULED].add(entry)

    def bury(self, entry: SetEntry) -> None:
        self.s._sets[SortedSet.DEAD].add(entry)

    def end_reservation(self, jid: str, day: str) -> bool:
        if self.ended is not None and jid in self.ended:
            self.ended.discard(jid)
            return True
        if self.s._reservations.pop(jid, None) is None:
            return False
        self.s._count(day, 1, 0)
        return True


class MemoryBatches(Batches):
    """Mixed into ``MemoryStore``; every method completes without awaiting (atomic)."""

    if TYPE_CHECKING:  # MemoryStore's
        _sets: dict[SortedSet, _SortedSet]
        _reservations: dict[str, Reservation]

        def _count(self, day: str, processed: int, failures: int) -> None: ...

    def _init_batches(self) -> None:
        self._batches: dict[str, BatchRecord] = {}
        self._batch_jobs: dict[str, dict[str, None]] = {}
        self._batch_children: dict[str, dict[str, None]] = {}
        self._propagations: dict[str, None] = {}
        self._marks: dict[str, JobMark] = {}
        self._waiting: dict[str, WaitingJob] = {}
        self._waiters: dict[str, dict[str, None]] = {}

    def _tables(self, now: float = 0.0) -> _Tables:
        return _Tables(self, now)

    async def create_batch(self, batch: NewBatch) -> str | None:
        return engine.create(self._tables(), batch)

    async def open_batch(self, bid: str) -> bool:
        batch = self._batches.get(bid)
        if batch is not None:
            batch.committed = False
        return batch is not None

    async def commit_batch(self, bid: str, now: float, expires_at: float) -> Fired | None:
        return engine.commit(self._tables(now), bid, now, expires_at)

    async def adopt_batch(self, parent: str, child: str, now: float) -> str | None:
        return engine.adopt(self._tables(now), parent, child)

    async def get_batches(self, bids: Sequence[str]) -> dict[str, BatchRecord]:
        return {bid: copy.copy(self._batches[bid]) for bid in bids if bid in self._batches}

    async def list_batches(self, search: str, offset: int, limit: int) -> Page[BatchRecord]:
        needle = search.lower()
        found = [
            b
            for b in reversed(self._batches.values())
            if not needle or needle in b.bid.lower() or needle in b.description.lower()
        ]
        start = max(offset, 0)
        page = [copy.copy(b) for b in found[start : start + max(limit, 0)]]
        return Page(page, len(found))

    async def batch_children(self, bid: str) -> list[str]:
        return list(self._batch_children.get(bid, ()))

    async def batch_jobs(self, bid: str, offset: int, limit: int) -> Page[JobMark]:
        jids = list(self._batch_jobs.get(bid, ()))
        start = max(offset, 0)
        window = jids[start : start + max(limit, 0)]
        return Page([self._marks[j] for j in window if j in self._marks], len(jids))

    async def propagate(self, child: str, now: float) -> Fired:
        return engine.propagate(self._tables(now), child, now)

    async def pending_propagations(self, limit: int) -> list[str]:
        return list(self._propagations)[: max(limit, 0)]

    async def expire_batches(self, now: float, limit: int) -> int:
        doomed = [b.bid for b in self._batches.values() if b.expires_at <= now][: max(limit, 0)]
        for bid in doomed:
            del self._batches[bid]
            for jid in self._batch_jobs.pop(bid, {}):
                mark = self._marks.get(jid)
                if mark is not None and mark.bid == bid:
                    del self._marks[jid]
            self._batch_children.pop(bid, None)
            self._propagations.pop(bid, None)
        return len(doomed)

    async def mark_jobs(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        return self.mark_jobs_now(marks, now)

    def mark_jobs_now(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        return engine.mark_jobs(self._tables(now), marks, now)

    async def get_marks(self, jids: Sequence[str], now: float) -> dict[str, JobMark]:
        tables = self._tables(now)
        found = {jid: tables.mark(jid) for jid in jids}
        return {jid: mark for jid, mark in found.items() if mark is not None}

    async def unfinished_marks(self, after: str, limit: int) -> list[str]:
        jids = sorted(j for j, m in self._marks.items() if m.unfinished and j > after)
        return jids[: max(limit, 0)]

    def _end_acked(self, ended: Sequence[Reservation], ctx: EndContext) -> Fired:
        """The ACK's own step (``MemoryEndings.ack_returning``): end the unfinished marks of
        the jobs whose reservations it has just ended (and counted)."""
        tables = _Tables(self, ctx.now, {r.jid for r in ended})
        done = []
        for reservation in ended:
            mark = tables.mark(reservation.jid)
            if mark is not None and mark.unfinished:
                done.append(JobEnd(reservation.jid, Outcome.SUCCESS))
        return engine.end_jobs(tables, done, ctx) if done else Fired()

    async def end_jobs(self, ends: Sequence[JobEnd], ctx: EndContext) -> Fired:
        return engine.end_jobs(self._tables(ctx.now), ends, ctx)

    async def purge_marks(self, now: float, limit: int) -> int:
        doomed = [
            jid
            for jid, m in self._marks.items()
            if not m.bid and m.expires_at is not None and m.expires_at <= now
        ][: max(limit, 0)]
        for jid in doomed:
            del self._marks[jid]
        return len(doomed)

    async def list_waiting(self, offset: int, limit: int) -> Page[WaitingJob]:
        jobs = list(self._waiting.values())
        start = max(offset, 0)
        return Page(jobs[start : start + max(limit, 0)], len(jobs))

    async def get_waiting(self, jids: Sequence[str]) -> dict[str, WaitingJob]:
        return {jid: self._waiting[jid] for jid in jids if jid in self._waiting}

    async def count_waiting(self) -> int:
        return len(self._waiting)

    def _flush_batches(self) -> None:
        self._init_batches()
