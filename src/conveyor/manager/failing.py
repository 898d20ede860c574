"""FAIL and what else ends a reservation without success: the reaper's expired
reservations, and extending a reservation (TRACK SET reserve_until, the worker's extend).

Mixed into ``Manager``. A failure is recorded on the job (``RetryPolicy``), which then goes to
the retries, the dead set or nowhere, in one store step (``Store.fail``), through the fail
middleware when there is any.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, cast

from conveyor.errors import JobNotFound
from conveyor.job import decode_job, encode_job
from conveyor.manager.lifecycle import JobState, check_transition
from conveyor.manager.middleware import FailContext, run_chain
from conveyor.manager.retry import NO_CONTROL, FailureReport, RetryControl, RetryPolicy
from conveyor.store.base import Reservation, Store
from conveyor.timefmt import day_key

if TYPE_CHECKING:
    from conveyor.manager.core import Manager
    from conveyor.manager.features import Feature
    from conveyor.manager.flow import FlowControl
    from conveyor.metrics.jobs import JobMetrics

__all__ = ["FailOps"]


class FailOps:
    """Mixed into ``Manager``, whose store, retry policy, features and fail hooks it uses."""

    store: Store
    retry_policy: RetryPolicy
    features: list[Feature]
    flow: FlowControl
    metrics: JobMetrics | None
    _fail_hooks: list[Callable[..., Awaitable[None]]]

    def _unwatch(self, jids: Sequence[str]) -> None:  # provided by FeatureCalls
        raise NotImplementedError

    async def fail(
        self,
        jid: str,
        errtype: str,
        message: str,
        backtrace: Sequence[str] = (),
        duration: float | None = None,
        control: RetryControl = NO_CONTROL,
    ) -> None:
        """``duration``: the run time (seconds) the worker reported, for the metrics;
        ``control``: what the worker asked for (skip the retries, retry later without
        counting, its own backoff: ``retry.RetryControl``)."""
        reservation = await self.store.get_reservation(jid)
        if reservation is None:
            for feature in self.features:
                if await feature.unreserved_fail(jid):
                    return  # e.g. a job cancelled while it ran, reported late by its worker
            raise JobNotFound(f"Job not found {jid}")
        report = FailureReport.clean(errtype, message, backtrace)
        await self._fail_reservation(reservation, report, duration=duration, control=control)

    async def _fail_reservation(
        self,
        reservation: Reservation,
        report: FailureReport,
        *,
        expired: bool = False,
        duration: float | None = None,
        control: RetryControl = NO_CONTROL,
    ) -> bool:
        """Record a failure and move the job on. False when the reservation was gone already
        (acked, failed or expired by someone else meanwhile): then nothing changes."""
        now = time.time()
        job = decode_job(reservation.payload)
        self.retry_policy.record(job, report, now, control)
        outcome = self.retry_policy.outcome(job, now, encode_job, control)
        check_transition(JobState.WORKING, outcome.target or JobState.DISCARDED)
        if not self._fail_hooks:
            failed = await self.store.fail(reservation.jid, outcome, day_key(now))
        else:
            ctx = FailContext(cast("Manager", self), reservation, job, report, outcome)

            async def final() -> None:
                ctx.moved = await self.store.fail(reservation.jid, ctx.outcome, day_key(now))

            await run_chain(self._fail_hooks, ctx, final)
            failed, outcome = ctx.moved, ctx.outcome
        self._unwatch((reservation.jid,))
        if failed:
            await self.flow.ended((reservation,))
            if self.metrics is not None:
                self.metrics.on_fail(job, outcome, expired=expired, duration=duration)
        return failed

    async def expire_reservations(self, limit: int = 500) -> int:
        """Send overdue reservations down the failure path; returns how many."""
        report = FailureReport("ReservationExpired", "job reservation expired", ())
        expired = await self.store.expired_reservations(time.time(), limit)
        count = 0
        for reservation in expired:
            if await self._fail_reservation(reservation, report, expired=True):
                count += 1
        return count

    async def extend(self, jid: str, until: float) -> None:
        """Extend a reservation (never shortens it)."""
        reservation = await self.store.get_reservation(jid)
        if reservation is None:
            raise JobNotFound(f"Job not found {jid}")
        if until > reservation.expires_at:
            await self.store.extend_reservation(jid, until)
