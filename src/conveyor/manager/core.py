"""The manager: every rule of the job lifecycle, over one Store.

The FWP server, the web app and the in-process client are adapters over this one API. The
store does each transition atomically; the manager decides which transition, with what
payload (see ``docs/design/architecture.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec

from conveyor.errors import CommandError, QueueFull
from conveyor.job import Job, encode_job
from conveyor.logs import RateLimitedLog
from conveyor.manager import soon, validation
from conveyor.manager.admin import AdminOps
from conveyor.manager.config import ManagerConfig
from conveyor.manager.failing import FailOps
from conveyor.manager.feature_calls import FeatureCalls
from conveyor.manager.features import Feature
from conveyor.manager.features.registry import build_features
from conveyor.manager.features.results import ResultsFeature
from conveyor.manager.features.results_model import Outcome
from conveyor.manager.flow import FlowControl
from conveyor.manager.info import build_info
from conveyor.manager.later import Later
from conveyor.manager.middleware import (
    AckContext,
    Middleware,
    hooks_of,
    run_chain,
)
from conveyor.manager.retry import RetryPolicy
from conveyor.manager.tasks import BackgroundTasks
from conveyor.manager.types import ClientInfo, ServerStats, WorkerState
from conveyor.manager.waiters import Deliver, QueueWaiters
from conveyor.manager.workers import WorkerOps
from conveyor.metrics.jobs import JobMetrics
from conveyor.store.base import (
    QueuedJob,
    SetEntry,
    SortedSet,
    Store,
)
from conveyor.store.endings import Settle
from conveyor.timefmt import now_iso

__all__ = ["Manager"]

log = logging.getLogger("conveyor.manager")

F = TypeVar("F", bound=Feature)

FAKTORY_VERSION = "1.10.0"
"""The Faktory release whose protocol we speak; clients gate features on it (semver)."""

_NO_DURATIONS: Mapping[str, float] = MappingProxyType({})


class Manager(FeatureCalls, AdminOps, WorkerOps, FailOps):
    """All the rules. ``await start()`` before use, ``await stop()`` at the end."""

    version = FAKTORY_VERSION

    def __init__(
        self,
        store: Store,
        config: ManagerConfig | None = None,
        middleware: Sequence[Middleware] = (),
        features: Sequence[Feature] | None = None,
        metrics: JobMetrics | None = None,
    ) -> None:
        from conveyor import __version__

        self.store = store
        self.config = config or ManagerConfig()
        self.description = f"conveyor {__version__} (Faktory-compatible job server)"
        self.retry_policy = RetryPolicy(self.config.dead_ttl_seconds)
        self.waiters = QueueWaiters()
        self.tasks = BackgroundTasks(self)
        self.started_at = time.time()
        self.metrics = metrics
        """Counts jobs by queue and jobtype for ``/metrics`` (``conveyor.metrics``), or None."""
        self.store_trouble = RateLimitedLog(logging.getLogger("conveyor.store"))
        """Where store failures are logged, with a growing pause while they go on: a store
        that is down fails every command and every loop tick (docs/operations.md, Logs)."""
        # None: every feature with its defaults (configured ones come from ServerConfig)
        self.features = build_features({}) if features is None else list(features)
        self._signal_handlers: dict[str, list[Callable[[Sequence[str] | None], None]]] = {}
        for feature in self.features:
            feature.bind(self)
        # features first: they are the server's own rules, the middleware given is the user's
        self._middleware = [*self.features, *middleware]
        self._push_hooks = hooks_of(self._middleware, "push")
        self._fetch_hooks = hooks_of(self._middleware, "fetch")
        self._ack_hooks = hooks_of(self._middleware, "ack")
        self._fail_hooks = hooks_of(self._middleware, "fail")
        # Fetch middleware sees every job a FETCH takes, so a job some fetch hook wants goes the
        # long way, through reserve; features say which jobs they want (wants_fetch), any other
        # middleware wants them all.
        fetchers = [m for m in self._middleware if type(m).fetch is not Middleware.fetch]
        self._fetch_gates = [m.wants_fetch for m in fetchers if isinstance(m, Feature)]
        self._fetch_gated = all(isinstance(m, Feature) for m in fetchers)
        self._hand_offs = store.in_process and self._fetch_gated
        # What features must hear of: ACKed jobs (with what ended), jobs removed for good.
        self._ack_watchers = [f for f in self.features if type(f).acked is not Feature.acked]
        marks = [type(f).acked_marks for f in self._ack_watchers]
        self._acked_marks: tuple[bytes, ...] | None = (
            None if any(m is None for m in marks) else tuple(b for m in marks if m for b in m)
        )
        # every gate the default one over its marks: one loop over all the marks instead
        by_marks = all(type(f).wants_acked is Feature.wants_acked for f in self._ack_watchers)
        self._acked_by_marks = by_marks and self._acked_marks is not None
        self._acked_gates = (
            [self._holds_acked_mark]
            if self._acked_by_marks
            else [f.wants_acked for f in self._ack_watchers]
        )
        gate_owners = [f for f in self.features if f.wants_fetch in self._fetch_gates]
        gate_owners += self._ack_watchers
        self._gates_on_custom = all(type(f).gates_on_custom for f in gate_owners)
        self._any_mark = self._marks_search(fetchers)
        self._watched = set() if store.in_process else None
        self._slotted: dict[str, str] = {}
        self._removal_watchers = [
            f for f in self.features if type(f).removed is not Feature.removed
        ]
        # The feature whose records move in the ACK's own step (batches: the marks).
        enders = [f for f in self.features if type(f).ack_ends is not Feature.ack_ends]
        if len(enders) > 1:
            raise ValueError("at most one feature may move its records with an ACK (ack_ends)")
        self._ack_ender = enders[0] if enders else None
        self._plan_ends(store)
        self.flow = FlowControl(self)
        self.flow.refresh(self.features)
        # A job no push hook wants keeps the fast path; gates say which jobs features want.
        self._plan_pushes()
        self._pushes_now = store.in_process and self._push_gated
        # PUSH, FETCH and ACK in the caller's step (soon.py): at once on an in-process store;
        # on one whose writes wait for I/O, answered from the step that reads the reply
        self._acks_now = store.in_process
        self._soon = not store.in_process
        # Likewise for ACK: jids no gated ack hook wants keep the batched ACK (None: ungated).
        ackers = [m for m in self._middleware if type(m).ack is not Middleware.ack]
        self._ack_gates: list[Callable[[str], bool]] | None = (
            [m.wants_ack for m in ackers if isinstance(m, Feature)]
            if all(isinstance(m, Feature) for m in ackers)
            else None
        )
        self.results: ResultsFeature | None = next(
            (f for f in self.features if isinstance(f, ResultsFeature)), None
        )
        """Results and completed jobs (``RESULT``, ACKs that carry results), if running."""
        # Worker state as last seen by this server; BEAT refreshes it from the store.
        self._worker_states: dict[str, str] = {}
        self._local_clients: dict[str, set[int]] = {}
        self._closers: dict[int, ClientInfo] = {}
        # the store's ready listener is FlowControl's (flow.py); its signals are the features'
        store.set_signal_listener(self._signalled)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await self.store.open()
        await self._watch_reservations()
        self.started_at = time.time()
        self.tasks.start()

    async def stop(self) -> None:
        await self.tasks.stop()
        self.flow.stop()
        self.waiters.notify_all()
        for feature in self.features:
            feature.close()
        await self.store.close()

    def on_signal(self, topic: str, handler: Callable[[Sequence[str] | None], None]) -> None:
        """Call ``handler(keys)`` for every store signal of ``topic`` (``store/signals.py``);
        ``keys`` None means signals may have been lost: look at everything again."""
        self._signal_handlers.setdefault(topic, []).append(handler)

    def _signalled(self, topic: str, keys: Sequence[str] | None) -> None:
        if keys is None:
            for handlers in self._signal_handlers.values():
                for handler in handlers:
                    handler(None)
            return
        for handler in self._signal_handlers.get(topic, ()):
            handler(keys)

    # ------------------------------------------------------------------ push

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
            return soon.push_soon(self, payload) if self._soon and self._push_gated else None
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

    # ------------------------------------------------------------------ fetch

    async def fetch(
        self, queues: Sequence[str], wid: str = "", wait: float | None = None
    ) -> bytes | None:
        jobs = await self.fetch_many(queues, wid, 1, wait)
        return jobs[0] if jobs else None

    async def fetch_many(
        self,
        queues: Sequence[str],
        wid: str,
        count: int,
        wait: float | None = None,
        deliver: Deliver | None = None,
    ) -> list[bytes]:
        """Reserve up to ``count`` jobs, taking queues in the order given; wait up to ``wait``
        seconds (default ``fetch_wait_seconds``) for the first one.

        ``deliver``: how to answer this FETCH at once with jobs a push hands off while it
        waits (``QueueWaiters``). Jobs given to ``deliver`` are not returned: the result is
        then empty."""
        wait = self.config.fetch_wait_seconds if wait is None else wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        if wid and self._worker_states.get(wid, WorkerState.RUNNING) != WorkerState.RUNNING:
            await asyncio.sleep(wait)  # Faktory: a quiet worker's FETCH waits, then gets nothing
            return []
        while True:
            jobs = await self._reserve(queues, wid, count)
            if jobs:
                return jobs
            # Register first, then look again: a push landing between the two is not missed.
            waiter = self.waiters.register(queues, wid, count)
            try:
                jobs = await self._reserve(queues, wid, count)
                if jobs:
                    return jobs
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                waiter.deliver = deliver  # from now on a push may answer this FETCH itself
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that arrives just as the future completes.
                    async with asyncio.timeout(remaining):
                        await waiter.future
                except TimeoutError:
                    if waiter.delivered:  # handed jobs just as the wait ran out
                        return []
                    return await self._reserve(queues, wid, count)
                if waiter.delivered:
                    return []
            except asyncio.CancelledError:
                future = waiter.future
                if future.done() and not future.cancelled() and not waiter.delivered:
                    # We were woken for a job we will not take (our client went away):
                    # pass the wake-up on, or the next waiting FETCH would miss it.
                    for queue in queues:
                        self.waiters.notify(queue)
                raise
            finally:
                self.waiters.unregister(waiter)

    def fetch_now(
        self, queues: Sequence[str], wid: str, count: int
    ) -> list[bytes] | Later[list[bytes]] | None:
        """The jobs a FETCH finds at once, reserved in the caller's step, without a task: for
        the server's FETCH on an idle connection. ``[]`` when there is none now (the FETCH
        then waits, through ``fetch_many``); None, with nothing done, when this FETCH has to
        take the long way (``fetch_many``: fetch middleware that is not a feature's, a quiet
        worker, a store that must wait for its commit). ``Later`` when the value comes from
        the event loop: a store whose writes wait for I/O, or jobs a feature's fetch hook
        must see (soon.py)."""
        if wid and self._worker_states.get(wid, WorkerState.RUNNING) != WorkerState.RUNNING:
            return None
        flow = self.flow
        if flow.fetch_limits and flow.limits_for(queues) is not None:
            if self._hand_offs:  # in process: the slots and tokens taken in this step too
                return soon.fetch_limited_in_process(self, queues, wid, count)
            if self._soon and self._fetch_gated:
                return soon.fetch_limited_soon(self, queues, wid, count)
            return None  # reserve_limited, through the long way
        if self._hand_offs:  # in process, and every fetch hook is a gated feature's
            return soon.fetch_in_process(self, queues, wid, count)
        if self._soon and self._fetch_gated:
            return soon.fetch_soon(self, queues, wid, count)
        return None

    def fetches_ahead(self, queues: Sequence[str], wid: str) -> bool:
        """Whether a FETCH of ``queues`` by ``wid`` may be reserved before it comes
        (manager/ahead.py): on a store that is not in process, as ``fetch_now`` would reserve
        it, with no limit on those queues."""
        if not (self._soon and self._fetch_gated):
            return False
        if wid and self._worker_states.get(wid, WorkerState.RUNNING) != WorkerState.RUNNING:
            return False
        flow = self.flow
        return not (flow.fetch_limits and flow.limits_for(queues) is not None)

    async def _reserve(self, queues: Sequence[str], wid: str, count: int) -> list[bytes]:
        flow = self.flow
        if flow.fetch_limits:
            queues = flow.passable(queues)  # without limited queues known to be full
            if not queues:
                return []
        while True:
            limits = flow.limits_for(queues) if flow.fetch_limits else None
            if limits is None:
                reservations = await self.store.reserve(queues, wid, time.time(), count)
            else:
                wakes = self.flow.wakes()
                limited = await self.store.reserve_limited(queues, wid, time.time(), count, limits)
                reservations = limited.reservations
                if limited.blocked:
                    self.flow.held_back(limited.blocked, wakes)
            if not reservations:
                return []
            if self.metrics is not None:
                self.metrics.on_reserve(reservations)
            # Pass the baton: there may be more jobs for other waiting FETCHes.
            self.waiters.notify(reservations[-1].queue)
            if not self._taken(reservations):  # no fetch hook wants any (ACKs to watch noted)
                return [r.payload for r in reservations]
            kept = await self._fetch_chain(reservations)
            if kept:
                return kept
            # every job taken was dropped (expired): the FETCH goes on with the next ones

    # ------------------------------------------------------------------ ack / fail

    async def result_of(self, jid: str) -> Outcome | None:
        """How job ``jid`` ended, when that is known: ``Outcome.state`` is ``succeeded``
        (``Outcome.result``: the handler's value, as raw JSON) or ``failed`` (the error
        fields). For features that pass results on (a chain's next job); None when the job
        has not ended, asked for nothing to be kept, or its result expired."""
        return None if self.results is None else await self.results.outcome(jid)

    async def ack(
        self, jid: str, duration: float | None = None, result: bytes | None = None
    ) -> None:
        durations = {jid: duration} if duration is not None else _NO_DURATIONS
        await self.ack_many((jid,), durations, None if result is None else {jid: result})

    def ack_now(
        self, jid: str, duration: float | None = None, result: bytes | None = None
    ) -> int | Later[int] | None:
        """ACK done in the caller's step, without a task: how many reservations ended (0 or
        1); ``Later`` on a store whose writes wait for I/O (soon.py). An ACK the results
        feature must see (it carries a result, or a results default is on) stores what its
        job asked for in the same step, on an in-process store (``soon.ack_settled``). None,
        with nothing done, when it has to take the long way (``ack``): an ack hook wants
        this jid, a feature must hear of it and that takes a wait, the store must wait for
        its commit, a result on a shared store. ``duration``: the run time the worker
        reported, for the metrics."""
        if self._ack_hooks:
            gates = self._ack_gates
            if gates is None or any(wants(jid) for wants in gates):
                return None
        results = self.results
        if results is not None and (result is not None or results.every_ack):
            return soon.ack_settled(self, results, jid, duration, result)
        if self._acks_now:
            return soon.ack_in_process(self, jid, duration)
        return soon.ack_soon(self, jid, duration) if self._soon else None

    async def ack_many(
        self,
        jids: Sequence[str],
        durations: Mapping[str, float] = _NO_DURATIONS,
        results: Mapping[str, bytes] | None = None,
    ) -> int:
        """End these reservations; returns how many existed. ``durations``: run times
        (seconds) the worker reported, by jid, for the metrics; ``results``: the results
        (JSON) workers sent with some of the ACKs, by jid (docs/results.md)."""
        feature = self.results
        if feature is not None and (results or feature.every_ack):
            done = await feature.acknowledge(jids, results or {})
        else:
            done = await self.ack_jobs(jids)
        if self.metrics is not None:
            self.metrics.on_ack(jids, done, durations)
        return done

    async def ack_jobs(
        self, jids: Sequence[str], keep: Sequence[SetEntry] = (), settle: Settle | None = None
    ) -> int:
        """End these reservations; ``keep``: completed-set entries of those of ``jids`` to
        keep (``Store.ack_returning``: kept in the ACK's own step, with their batch marks,
        throttle slots and what the features hear of); ``settle``: what to store with each
        job that ends, asked and stored in that step too (the results feature's). The ack
        hooks run around each hooked job's step."""
        if self._ack_hooks:
            return await self._ack_through_hooks(jids, keep, settle)
        return await self._ack_unhooked(jids, keep, settle)

    async def _ack_through_hooks(
        self, jids: Sequence[str], keep: Sequence[SetEntry], settle: Settle | None
    ) -> int:
        done = 0
        if self._ack_gates is not None:
            hooked = self._hooked_acks(jids, self._ack_gates)
            if not hooked:
                return await self._ack_unhooked(jids, keep, settle)
            if len(hooked) < len(jids):
                chosen = set(hooked)
                rest = [jid for jid in jids if jid not in chosen]
                done = await self._ack_unhooked(rest, keep, settle)
            jids = hooked
        kept = {entry.jid: entry for entry in keep}
        for jid in jids:
            ctx = AckContext(self, jid, await self.store.get_reservation(jid))

            async def final(jid: str = jid) -> None:
                nonlocal done
                entry = kept.get(jid)
                entries = () if entry is None else (entry,)
                done += await self._ack_returning((jid,), entries, settle)

            await run_chain(self._ack_hooks, ctx, final)
        return done

    @staticmethod
    def _hooked_acks(jids: Sequence[str], gates: Sequence[Callable[[str], bool]]) -> list[str]:
        if len(gates) == 1:  # the usual case, without a generator per jid
            wants = gates[0]
            return [jid for jid in jids if wants(jid)]
        return [jid for jid in jids if any(wants(jid) for wants in gates)]

    # ------------------------------------------------------------------ INFO / FLUSH

    async def info(self, stats: ServerStats | None = None) -> dict[str, Any]:
        return await build_info(self, stats or ServerStats())

    async def flush(self) -> None:
        await self.store.flush()
        self._unwatch(list(self._watched or ()))
        self.flow.forget_held()
        self.tasks.reset_stats()
        if self.metrics is not None:
            self.metrics.on_flush()

    def feature(self, kind: type[F]) -> F:
        """The running feature of class ``kind`` (for the wire verbs and pages over it)."""
        for feature in self.features:
            if isinstance(feature, kind):
                return feature
        raise LookupError(f"the {kind.__name__} feature is not running")

    def reconfigure(self, features: Sequence[Feature]) -> None:
        """Apply reloaded feature settings (SIGHUP): ``features`` is a fresh, valid
        ``build_features()``, one instance per running feature, in the same order."""
        for running, new in zip(self.features, features, strict=True):
            running.reconfigure(new)
        self._push_on_custom = self._pushing_on_custom()
        self._plan_push_keys()
        for queue in self.flow.refresh(self.features):  # a limit raised or lifted: room now?
            self.flow.ready(queue)


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


async def _nothing() -> None:
    return None
