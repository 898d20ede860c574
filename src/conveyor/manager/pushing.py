"""PUSH and PUSHB: a job validated, admitted by the features, then stored, or handed
straight to a waiting FETCH (docs/design/hand-off.md).

Mixed into ``Manager``. The push chain and its gates are ``feature_pushes.PushCalls``'s;
``push_now`` is the step that answers a PUSH at once (or sends its enqueue, on a store that is
not ``in_process``: soon.py), ``push``/``push_bulk`` the long way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, cast

import msgspec

from conveyor.errors import CommandError, QueueFull
from conveyor.job import Job, encode_job
from conveyor.manager import soon, validation
from conveyor.manager.feature_calls import FeatureCalls
from conveyor.manager.later import Later
from conveyor.manager.waiters import QueueWaiters
from conveyor.store.base import QueuedJob, SetEntry, SortedSet
from conveyor.timefmt import now_iso

if TYPE_CHECKING:
    from conveyor.manager.config import ManagerConfig
    from conveyor.manager.core import Manager

__all__ = ["PushOps"]


class PushOps(FeatureCalls):
    """Mixed into ``Manager``, whose config, waiters and plans (set in its ``__init__``) it
    uses."""

    config: ManagerConfig
    waiters: QueueWaiters
    _pushes_now: bool
    _soon: bool
    _hand_offs: bool

    async def push(self, payload: bytes) -> None:
        job = validation.decode_pushed(payload, self.config)
        await self.push_job(job)

    async def push_job(self, job: Job) -> None:
        due = validation.prepare_job(job, self.config)
        dropped = await self._admit(job)
        if dropped is not None:  # kept elsewhere (a group, the jobs waiting), or expired
            if dropped.durable is not None:
                await dropped.durable
            return
        await self._store_job(job, due)

    async def _store_job(self, job: Job, due: float | None) -> None:
        if await self._store_jobs([(job, due)]):
            raise QueueFull.of(job.queue, self.flow.bound(job.queue))

    def push_now(self, payload: bytes) -> Awaitable[None] | Later[None] | None:
        """A PUSH done at once, in the caller's step: the job is validated and stored, or
        handed to a waiting FETCH, whose reply is written before this returns. What is left
        is returned: the wait for the durability of this very write (it raises
        ``StoreError`` if the write was lost, however late it is awaited), to await before
        the PUSH is answered.

        On a store that is not ``in_process`` a plain job's enqueue is sent from here and a
        ``Later`` is returned, settled from the step that reads the store's reply (soon.py).

        ``None``, with nothing done, when the PUSH has to take the long way (``push()``):
        middleware other than the features' may wait for anything, and so may a feature's
        hook that did (or any, on a store that is not ``in_process``); a job scheduled for
        later, or for a bounded queue, is no one's to hand off (one the features' hooks have
        seen is stored by what is returned). Raises what ``push()`` raises for a bad job,
        with nothing stored.
        """
        if not self._pushes_now:
            return (
                soon.push_soon(cast("Manager", self), payload)
                if self._soon and self._push_gated
                else None
            )
        job = validation.decode_pushed(payload, self.config)
        stamp = now_iso()  # created_at (when the client left it out) and enqueued_at
        due = validation.prepare_job(
            job, self.config, stamp, shallow=validation.fits_depth(payload)
        )
        admitted = self._admit_now(job) if self._push_any else (False, None)
        if admitted is None:
            return None  # a hook waited: the long way runs the (idempotent) hooks again
        chained, dropped = admitted
        if dropped is not None:  # kept elsewhere (a group, the jobs waiting), or expired
            return dropped.durable if dropped.durable is not None else self.store.durable()
        now = time.time()
        if (due is not None and due > now) or (self.flow.bounding and self.flow.bound(job.queue)):
            # for later, or for a queue that may be full: stored by the runner, not now
            return self._store_job(job, due) if chained else None
        queued = [self._queued(job, stamp, validation.reserve_seconds(job, self.config))]
        handed: list[Awaitable[None]] = []
        left = self._hand_off(queued, now, handed)
        if self.metrics is not None:
            self.metrics.on_push(job)
        if left:
            return self.store.enqueue_now(left)
        return handed[0]  # one job, handed off: the durability of its reservation

    async def push_bulk(self, payload: bytes) -> dict[str, str]:
        """PUSHB: each job validated and pushed on its own; returns ``{key: error}``.

        The key is the job's jid, or ``#<index>`` (its place in the array, from 0) for an
        element without one: not an object, not decodable, or no ``jid``; so no two such
        errors share a key. The size of the whole array is bounded by the server's line
        limit, each job's by ``max_payload_bytes``.
        """
        config = self.config
        items: Sequence[Job | msgspec.Raw] = validation.decode_pushed_bulk(payload, config)
        now = now_iso()  # one created_at for the whole batch, as one PUSH would have
        errors: dict[str, str] = {}
        prepared: list[tuple[Job, float | None]] = []
        for index, item in enumerate(items):
            job: Job | None = None
            try:
                job = item if isinstance(item, Job) else validation.decode_pushed(item, config)
                prepared.append((job, validation.prepare_job(job, config, now)))
            except CommandError as exc:
                key = (job.jid if job is not None else _raw_jid(item)) or f"#{index}"
                errors[key] = exc.message if exc.code == "ERR" else str(exc)
        accepted, kept_elsewhere = await self._admit_many(prepared, errors)
        if accepted:
            for refused in await self._store_jobs(accepted):
                errors[refused.jid] = QueueFull.of(
                    refused.queue, self.flow.bound(refused.queue)
                ).message
        if kept_elsewhere:  # one commit for all of them (they may share one future)
            await asyncio.gather(*{id(durable): durable for durable in kept_elsewhere}.values())
        return errors

    async def _store_jobs(self, jobs: Sequence[tuple[Job, float | None]]) -> list[QueuedJob]:
        """Store pushed jobs; returns those a full queue refused (backpressure), which the
        features have been told about (``removed``)."""
        now = time.time()
        queued: list[QueuedJob] = []
        scheduled: list[SetEntry] = []
        enqueued_at = now_iso()
        # what reserve_seconds gives every job without its own reserve_for, worked out once
        default_reserve = validation.reserve_seconds(Job(), self.config)
        for job, due in jobs:
            if due is not None and due > now:
                scheduled.append(SetEntry(due, job.jid, encode_job(job), job.queue, job.jobtype))
            else:
                reserve = (
                    validation.reserve_seconds(job, self.config)
                    if job.reserve_for
                    else default_reserve
                )
                queued.append(self._queued(job, enqueued_at, reserve))
        handed: list[Awaitable[None]] = []
        queued = self._hand_off(queued, now, handed)
        if scheduled:
            await self.store.add_to_set(SortedSet.SCHEDULED, scheduled)
        refused: list[QueuedJob] = []
        if queued:
            bounds = self.flow.bounds_for({job.queue for job in queued})
            if bounds:
                refused = await self.store.enqueue_bounded(queued, bounds)
            else:
                await self.store.enqueue(queued)
        for reservations in handed:
            await reservations  # raises if the hand-offs' reservations were lost
        if self.metrics is not None:
            if refused:
                gone = {job.jid for job in refused}
                for job, _ in jobs:
                    if job.jid not in gone:
                        self.metrics.on_push(job)
            else:
                for job, _ in jobs:
                    self.metrics.on_push(job)
        if refused:
            await self.removed([job.payload for job in refused])
        return refused

    @staticmethod
    def _queued(job: Job, enqueued_at: str, reserve_for: int) -> QueuedJob:
        job.enqueued_at = enqueued_at
        return QueuedJob(job.queue, job.jid, encode_job(job), reserve_for)

    def _hand_off(
        self, queued: list[QueuedJob], now: float, handed: list[Awaitable[None]]
    ) -> list[QueuedJob]:
        """Give ready jobs straight to the FETCHes waiting for their queues; returns the rest,
        and adds to ``handed`` the durability of each reservation written.

        A job handed off is reserved without ever being queued (one write instead of three)
        and its FETCH is answered in this very step, not after a wake-up of the FETCH's task:
        this is what enqueue->start latency is made of when workers are idle
        (docs/design/hand-off.md). Jobs of one queue keep their order: the first ones go to the
        waiters, the rest to the queue.
        """
        if not (self._hand_offs and self.waiters):  # under load nobody waits: this is all
            return queued
        left: list[QueuedJob] = []
        store = self.store
        for queue, jobs in _by_queue(queued).items():
            if self.flow.limited(queue):  # its limits are checked where jobs are reserved
                left.extend(jobs)
                continue
            if self._fetch_gates:
                jobs, wanted = self._ungated(jobs)
                left_after = wanted
            else:
                left_after = []
            while jobs and store.takes_hand_off(queue):
                waiter = self.waiters.newest(queue)
                if waiter is None or waiter.deliver is None:
                    break
                given = jobs[: waiter.count]
                # The reply first, the reservation next: the worker wakes meanwhile. Should
                # the INSERT fail, the PUSH fails and the producer pushes again, while this
                # job may run: at-least-once, as when the commit fails after the reply.
                if not waiter.hand([job.payload for job in given]):
                    # closed by the server (a reaped worker) and not yet told it is lost:
                    # never reserve for it; the loss will cancel its FETCH
                    self.waiters.unregister(waiter)
                    continue
                handed.append(store.hand_off(given, waiter.wid, now))
                if self._watched is not None:
                    self._watch(given)
                if self.metrics is not None:
                    self.metrics.on_hand_off(given, now)
                jobs = jobs[waiter.count :]
            left.extend(jobs)
            left.extend(left_after)
        return left

    def queued(self, job: Job) -> QueuedJob:
        return QueuedJob(
            job.queue, job.jid, encode_job(job), validation.reserve_seconds(job, self.config)
        )


def _by_queue(jobs: list[QueuedJob]) -> dict[str, list[QueuedJob]]:
    if len(jobs) == 1:  # a PUSH
        return {jobs[0].queue: jobs}
    grouped: dict[str, list[QueuedJob]] = {}
    for job in jobs:
        grouped.setdefault(job.queue, []).append(job)
    return grouped


def _raw_jid(raw: Job | msgspec.Raw) -> str:
    if isinstance(raw, Job):
        return raw.jid
    try:
        value = _jid_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return ""
    return value.jid if isinstance(value.jid, str) else ""


class _JidOnly(msgspec.Struct):
    jid: object = ""


_jid_decoder = msgspec.json.Decoder(_JidOnly)
