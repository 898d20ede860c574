"""Batches, job tracking and dependencies: Faktory Enterprise's BATCH and TRACK, and
``custom.after`` (docs/batches.md; decisions in docs/design/batches.md).

A job pushed with ``custom.bid`` joins its batch, one with ``custom.track`` is tracked, one
with ``custom.after`` waits for those jobs: each gets a **mark** in the store
(``conveyor.store.batches``), in one atomic step that also checks its batch and its
dependencies. When an attempt of a marked job ends, one store transition moves its mark, its
batch's counters and the jobs waiting for it, and schedules the callbacks that became due:

* ACK: the ACK's own store step ends the marks of the jobs it acknowledges
  (``Store.ack_returning`` with ``ack_ends()``); the feature then finishes what that set off
  (``acked``). On SQLite and memory only ACKs of jobs whose payload has a mark key take that
  path (``wants_acked``); on Redis every ACK does (one script either way);
* FAIL: the fail hook moves the mark before the job goes to retries or the dead set;
* a job removed for good (deleted, killed, purged, expired, cancelled) ends its mark dead
  (``removed``): its batch counts it failed, the jobs waiting for it die.

The BATCH verbs are in ``batch_commands.py``, TRACK in ``tracking.py``, the results a
workflow's step takes from the steps before (``custom.results_of``, at FETCH) in
``passing.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from conveyor.errors import CommandError, ConfigError, InvalidJob
from conveyor.job import Job, decode_job, encode_job
from conveyor.manager.features.aggregation import AGGREGATE_KEY
from conveyor.manager.features.base import Loop
from conveyor.manager.features.batch_commands import BatchCommands
from conveyor.manager.features.passing import PassResults
from conveyor.manager.features.tracking import Tracking
from conveyor.manager.middleware import Drop, FailContext, Next
from conveyor.store.base import QueuedJob, SetEntry, SetMove, SortedSet
from conveyor.store.batch_engine import bury_payload
from conveyor.store.batches import (
    EndContext,
    Fired,
    JobEnd,
    MarkResult,
    NewMark,
    Outcome,
    WaitingJob,
)
from conveyor.store.endings import Acked
from conveyor.timefmt import day_key, now_iso, parse_time

__all__ = ["BatchFeature", "BatchSettings"]

log = logging.getLogger("conveyor.batches")

MAX_AFTER = 1000
"""The most jobs one job may wait for."""
SWEEP_SECONDS = 5.0
EXPIRY_SECONDS = 30.0
_EXPIRE_STEP = 100
_MARK_KEYS = ("bid", "track", "after")
_NOT_AGGREGATED = (
    "a job to aggregate (custom.aggregate) cannot join a batch, be tracked or wait for other"
    " jobs: it never runs itself, its group's job does"
)
_END_KEYS = ("bid", "track", "after", "_bid")
_END_MARKS = tuple(f'"{key}":'.encode() for key in _END_KEYS)
"""In a stored payload: the job may have a mark (a callback has ``_bid``)."""


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """``[batch]`` and ``[tracking]``: how long batches and tracking data are kept."""

    uncommitted_seconds: float = 30 * 60.0
    committed_seconds: float = 30 * 86_400.0
    tracking_seconds: float = 30 * 60.0


def _positive(tables: Mapping[str, Any], table: str, key: str, default: float) -> float:
    raw = tables.get(table, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"[{table}] must be a table")
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"[{table}] {key} must be a positive number, not {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"[{table}] {key} must be finite")
    return float(value)


def _unknown_keys(tables: Mapping[str, Any], table: str, known: Sequence[str]) -> None:
    raw = tables.get(table, {})
    extra = sorted(set(raw) - set(known)) if isinstance(raw, dict) else []
    if extra:
        raise ConfigError(f"[{table}] has no setting {extra[0]!r} (known: {', '.join(known)})")


def tracked(custom: Mapping[str, Any]) -> bool:
    """Faktory Enterprise tracks jobs pushed with ``custom.track = 1``."""
    value = custom.get("track")
    return value is not None and value not in (0, False, "", "0")


class BatchFeature(PassResults, BatchCommands, Tracking):
    """BATCH, TRACK and ``custom.after``: see the module docstring."""

    name = "batches"
    tables = ("batch", "tracking")
    gates_on_custom = True
    push_keys = frozenset(_MARK_KEYS)
    acked_marks = _END_MARKS  # an ACK of a job whose payload has none of these ends no mark

    def __init__(self, settings: BatchSettings | None = None) -> None:
        self.settings = settings or BatchSettings()
        self.clock = time.time
        self._expire_at = 0.0

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        batch_keys = ("uncommitted_timeout_minutes", "committed_timeout_days")
        _unknown_keys(tables, "batch", batch_keys)
        _unknown_keys(tables, "tracking", ("ttl_minutes",))
        return cls(
            BatchSettings(
                _positive(tables, "batch", "uncommitted_timeout_minutes", 30) * 60,
                _positive(tables, "batch", "committed_timeout_days", 30) * 86_400,
                _positive(tables, "tracking", "ttl_minutes", 30) * 60,
            )
        )

    def reconfigure(self, new: Self) -> None:
        self.settings = new.settings

    def loops(self) -> Sequence[Loop]:
        return (Loop("batches", SWEEP_SECONDS, self.tick),)

    async def tick(self) -> None:
        """The feature's one background loop: the sweep every tick, expiry every
        ``EXPIRY_SECONDS``."""
        await self.sweep()
        now = self.clock()
        if now >= self._expire_at:
            self._expire_at = now + EXPIRY_SECONDS
            await self.expire()

    # ------------------------------------------------------------------ PUSH

    def wants_push(self, job: Job) -> bool:
        custom = job.custom
        return custom is not None and not custom.keys().isdisjoint(_MARK_KEYS)

    def _marks(
        self, jobs: Sequence[Job], now: float
    ) -> tuple[list[NewMark], dict[str, CommandError | Drop]]:
        """The marks the jobs need (those with a bid, track or after), and the jobs whose
        ``custom`` is wrong."""
        refused: dict[str, CommandError | Drop] = {}
        marks: list[NewMark] = []
        keep = now + self.settings.committed_seconds
        for job in jobs:
            custom = job.custom or {}
            try:
                bid = custom.get("bid") or ""
                if not isinstance(bid, str):
                    raise InvalidJob(f"custom.bid must be a batch id (a string), not {bid!r}")
                waiting = self._waiting(job, custom.get("after"))
            except CommandError as exc:
                refused[job.jid] = exc
                continue
            if bid or waiting or tracked(custom):
                if AGGREGATE_KEY in custom:
                    refused[job.jid] = InvalidJob(_NOT_AGGREGATED)
                    continue
                marks.append(NewMark(job.jid, bid, None if bid else keep, waiting))
        return marks, refused

    async def push_many(self, jobs: Sequence[Job]) -> dict[str, CommandError | Drop]:
        """Mark the jobs of a PUSH or PUSHB that join a batch, are tracked or wait for others,
        in one store step; those waiting (or doomed by a dead dependency) are kept out of the
        queue, those refused get the error."""
        now = self.clock()
        marks, refused = self._marks(jobs, now)
        if not marks:
            return refused
        store = self.manager.store
        results = await store.mark_jobs(marks, now)
        # a waiting job is stored by this step alone: its PUSH waits for the step's commit
        dead = self._take(results, refused, store.durable())
        by_jid = {job.jid: job for job in jobs}
        for jid, cause in dead.items():
            await self._bury(by_jid[jid], cause, now)
            refused[jid] = Drop(f"job {cause}, which {jid} waits for, is dead")
        return refused

    def push_many_now(self, job: Job) -> dict[str, CommandError | Drop] | None:
        """The PUSH fast path of in-process stores, for jobs without ``custom.after`` (one
        that waits may have to go to the dead set: the long way)."""
        store = self.manager.store
        if not store.in_process or (job.custom or {}).get("after"):
            return None
        now = self.clock()
        marks, refused = self._marks([job], now)
        if marks:
            self._take(store.mark_jobs_now(marks, now), refused, store.durable())
        return refused

    def push_many_soon(
        self,
        job: Job,
        done: Callable[[MarkResult | None, BaseException | None], object],
        queued: Sequence[QueuedJob] = (),
    ) -> bool:
        """The PUSH fast path of a store whose writes wait for I/O (Redis), for a job without
        ``custom.after``: its mark written from the reply's step (``mark_jobs_soon``); with
        ``queued``, the job enqueued in that same step when ready (``mark_enqueue_soon``)."""
        store = self.manager.store
        if store.in_process or (job.custom or {}).get("after"):
            return False
        now = self.clock()
        marks, refused = self._marks([job], now)
        if refused or not marks:
            return False  # the long way refuses it

        def marked(
            results: Mapping[str, tuple[MarkResult, str]] | None, error: BaseException | None
        ) -> None:
            verdict = results.get(job.jid) if results is not None else None
            done(verdict[0] if verdict is not None else None, error)

        if queued:
            return store.mark_enqueue_soon(marks, now, queued, marked)
        return store.mark_jobs_soon(marks, now, marked)

    def _take(
        self,
        results: Mapping[str, tuple[MarkResult, str]],
        refused: dict[str, CommandError | Drop],
        durable: Awaitable[None],
    ) -> dict[str, str]:
        """The refused and waiting ones into ``refused`` (a waiting
        one's ``Drop`` carries ``durable``, the durability of the step that stored it);
        returns the jids doomed by a dead dependency, with that dependency."""
        dead: dict[str, str] = {}
        for jid, (result, detail) in results.items():
            if result == MarkResult.REFUSED:
                refused[jid] = CommandError(detail)
            elif result == MarkResult.DEAD:
                dead[jid] = detail
            elif result == MarkResult.WAITING:
                refused[jid] = Drop(f"{jid} waits for other jobs", durable)
        return dead

    def _waiting(self, job: Job, after: Any) -> WaitingJob | None:
        if after is None or after == []:
            return None
        if not isinstance(after, list) or not all(isinstance(j, str) and j for j in after):
            raise InvalidJob("custom.after must be a list of jids (strings)")
        if len(after) > MAX_AFTER:
            raise InvalidJob(f"custom.after lists {len(after)} jobs; at most {MAX_AFTER}")
        if job.jid in after:
            raise InvalidJob(f"job {job.jid} cannot wait for itself")
        due = parse_time(job.at) if job.at else 0.0
        payload = encode_job(job)
        return WaitingJob(job.jid, job.queue, job.jobtype, payload, tuple(after), 0, 0.0, due)

    async def _bury(self, job: Job, cause: str, now: float) -> None:
        payload = bury_payload(encode_job(job), cause, now)
        score = now + self.manager.config.dead_ttl_seconds
        entry = SetEntry(score, job.jid, payload, job.queue, job.jobtype)
        await self.manager.store.add_to_set(SortedSet.DEAD, [entry])

    # ------------------------------------------------------------------ ACK and FAIL

    def ack_ends(self) -> EndContext:
        return self._context()

    async def acked(self, acked: Acked) -> None:
        await self.finish(acked.fired)

    def acked_idle(self, acked: Acked) -> bool:
        fired = acked.fired  # what finish() acts on: nothing for most batch jobs' ACKs
        return not (fired.scheduled or fired.propagate or fired.doomed)

    async def removed(self, payloads: Sequence[bytes]) -> None:
        """Jobs gone for good without success (deleted, killed, purged, expired, cancelled):
        their marks end dead, as a death would end them (idempotent: a dead mark stays)."""
        ends: list[JobEnd] = []
        for payload in payloads:
            if not any(mark in payload for mark in _END_MARKS):
                continue
            job = decode_job(payload)
            custom = job.custom or {}
            bid = custom.get("bid") or custom.get("_bid") or ""
            ends.append(JobEnd(job.jid, Outcome.DEAD, bid if isinstance(bid, str) else ""))
        if ends:
            await self.finish(await self.manager.store.end_jobs(ends, self._context()))

    async def watches_removals(self) -> bool:
        store = self.manager.store
        if not store.in_process:
            return True  # reading every mark to tell would cost more than reading the jobs
        return bool(await store.unfinished_marks("", 1))

    async def fail(self, ctx: FailContext, call_next: Next) -> None:
        custom = ctx.job.custom
        jid = ctx.reservation.jid
        if custom is not None and any(key in custom for key in _END_KEYS):
            dead = ctx.outcome.target is not SortedSet.RETRIES
            bid = str((custom or {}).get("bid") or (custom or {}).get("_bid") or "")
            end = JobEnd(jid, Outcome.DEAD if dead else Outcome.FAILED, bid)
            await self.finish(await self.manager.store.end_jobs([end], self._context()))
        await call_next()

    def _context(self) -> EndContext:
        now = self.clock()
        dead_until = now + self.manager.config.dead_ttl_seconds
        return EndContext(day_key(now), now, self.settings.tracking_seconds, dead_until)

    # ------------------------------------------------------------------ what a step set off

    async def finish(self, fired: Fired) -> None:
        """Do at once what a transition set in motion: promote the jobs it scheduled, count
        the children's milestones in their parents, end the doomed waiting jobs. Should this
        server die first, the promoter and ``sweep`` do it."""
        store = self.manager.store
        while True:
            if fired.scheduled:
                await self._promote(fired.scheduled)
            more = Fired()
            for child in fired.propagate:
                more.add(await store.propagate(child, self.clock()))
            if fired.doomed:
                more.add(await store.end_jobs(fired.doomed, self._context()))
            if not more:
                return
            fired = more

    async def _promote(self, entries: Sequence[SetEntry]) -> None:
        now = self.clock()
        stamp = now_iso()
        moves: list[SetMove] = []
        for entry in entries:
            if entry.score <= now:
                job = decode_job(entry.payload)
                job.enqueued_at = stamp
                moves.append(SetMove(entry, self.manager.queued(job)))
        if moves:
            try:
                await self.manager.store.move_to_queue(SortedSet.SCHEDULED, moves)
            except Exception:  # the promoter moves them at its next step
                log.exception("cannot enqueue %d batch callbacks or released jobs now", len(moves))

    # ------------------------------------------------------------------ loops

    async def sweep(self) -> None:
        """Finish what servers that died left half done: milestones not yet counted in
        parents, waiting jobs doomed by a dead dependency."""
        store = self.manager.store
        fired = Fired()
        for child in await store.pending_propagations(1000):
            fired.add(await store.propagate(child, self.clock()))
        offset = 0
        while True:
            page = await store.list_waiting(offset, 1000)
            doomed = [
                JobEnd(w.jid, Outcome.DEAD, w.bid, w.doomed_by)
                for w in page.items
                if w.remaining < 0
            ]
            if doomed:
                fired.add(await store.end_jobs(doomed, self._context()))
            offset += len(page.items)
            if len(page.items) < 1000:
                break
        await self.finish(fired)

    async def expire(self) -> None:
        store = self.manager.store
        now = self.clock()
        while await store.expire_batches(now, _EXPIRE_STEP) >= _EXPIRE_STEP:
            pass
        while await store.purge_marks(now, 1000) >= 1000:
            pass
