"""Expiring jobs (Faktory Enterprise, reference §4.2): ``custom.expires_at`` and
``custom.expires_in``.

``expires_at`` is an RFC 3339 time; ``expires_in`` (seconds) is turned into ``expires_at`` at
PUSH (the job is stored with ``expires_at`` only). An expired job is never delivered:

* a PUSH of a job expired already is answered ``+OK`` and the job is dropped;
* a FETCH that takes an expired job drops it and goes on to the next job (the job's
  reservation ends, counted neither processed nor failed);
* a background sweep removes expired jobs from their queue and from the scheduled and retry
  sets, so jobs nobody fetches do not fill them. It finds them through a deadline per job
  (``conveyor.store.deadlines``), not by reading every job.

Each expired job is counted, per UTC day (``conveyor.store.counts``; INFO ``features.expiring``,
the dashboard), and the features hear of it (a unique job's lock is released). A job being
worked on when it expires runs on; the dead set is left alone.

A FETCH only decodes the jobs whose payload holds ``"expires_at":``; every other job keeps the
plain path and the PUSH hand-off.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from conveyor.errors import InvalidJob
from conveyor.job import Job, decode_job
from conveyor.manager.features.base import Feature, Loop
from conveyor.manager.middleware import Discard, Drop, FetchContext, Next, PushContext
from conveyor.store.base import SortedSet
from conveyor.store.deadlines import Deadline
from conveyor.store.endings import Acked
from conveyor.timefmt import day_key, format_time, parse_time

__all__ = ["COUNTS", "DEADLINES", "ExpiringJobs", "expires_at_of"]

log = logging.getLogger("conveyor.manager.expiring")

DEADLINES = "expiring"
"""The deadlines space: jid -> (its expires_at, its queue's name)."""
COUNTS = "expired"
"""The counts space: ``total`` and one key per UTC day."""
SWEEP_INTERVAL_SECONDS = 1.0
SWEEP_BATCH = 500
MAX_EXPIRES_IN_SECONDS = 10 * 366 * 86_400

_MARK = b'"expires_at":'


def _json(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def expires_at_of(job: Job) -> float | None:
    """When ``job`` expires (None: never, or a value that is not a time)."""
    value = (job.custom or {}).get("expires_at")
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def prepare_expiry(job: Job, now: float) -> float:
    """Check the job's expiry keys, turn ``expires_in`` into ``expires_at``; returns when the
    job expires. Raises ``InvalidJob`` for a bad value."""
    custom = job.custom or {}
    if "expires_in" in custom:
        if "expires_at" in custom:
            raise InvalidJob("custom.expires_at and custom.expires_in cannot both be set")
        seconds = custom.pop("expires_in")
        number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        if not number or not math.isfinite(seconds) or not 0 < seconds <= MAX_EXPIRES_IN_SECONDS:
            raise InvalidJob(
                f"invalid expires_in {_json(seconds)}: must be a number of seconds, above 0 and "
                f"at most {MAX_EXPIRES_IN_SECONDS}"
            )
        custom["expires_at"] = format_time(now + seconds)
    value = custom["expires_at"]
    if not isinstance(value, str):
        raise InvalidJob(f"invalid expires_at {_json(value)}: must be an RFC 3339 time")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidJob(f"invalid expires_at {_json(value)}: {exc}") from None


class ExpiringJobs(Feature):
    name = "expiring"

    def __init__(self, sweep_interval_seconds: float = SWEEP_INTERVAL_SECONDS) -> None:
        self.sweep_interval_seconds = sweep_interval_seconds

    gates_on_custom = True
    fetch_marks = (_MARK,)
    push_keys = frozenset(("expires_at", "expires_in"))
    acked_marks = (_MARK,)

    def wants_push(self, job: Job) -> bool:
        custom = job.custom
        return custom is not None and ("expires_at" in custom or "expires_in" in custom)

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        job = ctx.job
        if not self.wants_push(job):  # the chain runs for any job some feature wants
            await call_next()
            return
        now = time.time()
        expires = prepare_expiry(job, now)
        if expires <= now:
            log.info("job %s expired before it was pushed (%s)", job.jid, format_time(expires))
            await self._count(1, now)
            raise Drop("expired")
        await call_next()
        # before the job is stored: a crash between the two leaves a deadline the sweep drops
        deadline = Deadline(job.jid, expires, job.queue.encode())
        await self.manager.store.set_deadlines(DEADLINES, [deadline])

    def wants_fetch(self, payload: bytes) -> bool:
        return _MARK in payload

    async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
        expires = expires_at_of(ctx.job)
        now = time.time()
        if expires is not None and expires <= now:
            await self._expired([ctx.reservation.payload], [ctx.job.jid], 1, now)
            raise Discard(f"job expired at {format_time(expires)}")
        await call_next()

    async def acked(self, acked: Acked) -> None:
        jids = [r.jid for r in acked.ended if _MARK in r.payload]
        if jids:
            await self.manager.store.delete_deadlines(DEADLINES, jids)

    def loops(self) -> Sequence[Loop]:
        return [Loop("expiring", self.sweep_interval_seconds, self._sweep_loop)]

    async def _sweep_loop(self) -> None:
        await self.sweep()

    async def sweep(self) -> int:
        """Remove expired jobs from queues and the scheduled and retry sets; returns how many.
        Safe on several servers at once: each job is taken out by one of them."""
        total = 0
        while True:
            now = time.time()
            due = await self.manager.store.due_deadlines(DEADLINES, now, SWEEP_BATCH)
            if not due:
                return total
            total += await self._sweep(due, now)
            if len(due) < SWEEP_BATCH:
                return total

    async def _sweep(self, due: Sequence[Deadline], now: float) -> int:
        store = self.manager.store
        jids = [deadline.key for deadline in due]
        by_queue: dict[str, list[str]] = {}
        for deadline in due:
            by_queue.setdefault(deadline.value.decode(), []).append(deadline.key)
        payloads: list[bytes] = []
        for queue, queued in by_queue.items():
            payloads += [job.payload for job in await store.take_queued(queue, queued)]
        count = len(payloads)
        for name in (SortedSet.SCHEDULED, SortedSet.RETRIES):
            entries = [
                entry
                for entry in await store.get_set_entries(name, jids)
                if (expires := expires_at_of(decode_job(entry.payload))) is not None
                and expires <= now
            ]
            if entries:
                count += await store.remove_from_set(name, entries)
                payloads += [entry.payload for entry in entries]
        await self._expired(payloads, jids, count, now)
        return count

    async def _expired(
        self, payloads: Sequence[bytes], jids: Sequence[str], count: int, now: float
    ) -> None:
        """``count`` jobs expired: count them, forget their deadlines, tell the features."""
        if count:
            await self._count(count, now)
        await self.manager.store.delete_deadlines(DEADLINES, jids)
        await self.manager.removed(payloads)

    async def _count(self, count: int, now: float) -> None:
        await self.manager.store.add_counts(COUNTS, {"total": count, day_key(now): count})

    async def expired_per_day(self, days: Sequence[str]) -> dict[str, int]:
        return await self.manager.store.get_counts(COUNTS, list(days))

    async def info(self) -> Mapping[str, Any] | None:
        today = day_key(time.time())
        counts = await self.manager.store.get_counts(COUNTS, ["total", today])
        return {"expired": counts["total"], "expired_today": counts[today]}
