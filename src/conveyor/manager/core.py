"""The manager: every rule of the job lifecycle, over one Store.

The FWP server, the web app and the in-process client are adapters over this one API. The
store does each transition atomically; the manager decides which transition, with what
payload (see ``docs/design/architecture.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from conveyor.errors import CommandError, JobNotFound, UnknownWorker
from conveyor.job import Job, decode_job, encode_job
from conveyor.manager import soon, validation
from conveyor.manager.admin import AdminOps
from conveyor.manager.config import ManagerConfig
from conveyor.manager.features import Feature
from conveyor.manager.features.registry import build_features
from conveyor.manager.info import build_info
from conveyor.manager.later import Later
from conveyor.manager.lifecycle import JobState, check_transition
from conveyor.manager.middleware import (
    AckContext,
    Discard,
    FailContext,
    FetchContext,
    Middleware,
    PushContext,
    hooks_of,
    run_chain,
)
from conveyor.manager.retry import FailureReport, RetryPolicy
from conveyor.manager.tasks import BackgroundTasks
from conveyor.manager.types import ClientInfo, ServerStats, WorkerState
from conveyor.manager.waiters import Deliver, QueueWaiters
from conveyor.store.base import (
    QueuedJob,
    Reservation,
    SetEntry,
    SortedSet,
    Store,
    WorkerRecord,
)
from conveyor.timefmt import day_key, now_iso

__all__ = ["Manager"]

log = logging.getLogger("conveyor.manager")

F = TypeVar("F", bound=Feature)

FAKTORY_VERSION = "1.10.0"
"""The Faktory release whose protocol we speak; clients gate features on it (semver)."""


class Manager(AdminOps):
    """All the rules. ``await start()`` before use, ``await stop()`` at the end."""

    version = FAKTORY_VERSION

    def __init__(
        self,
        store: Store,
        config: ManagerConfig | None = None,
        middleware: Sequence[Middleware] = (),
        features: Sequence[Feature] | None = None,
    ) -> None:
        from conveyor import __version__

        self.store = store
        self.config = config or ManagerConfig()
        self.description = f"conveyor {__version__} (Faktory-compatible job server)"
        self.retry_policy = RetryPolicy(self.config.dead_ttl_seconds)
        self.waiters = QueueWaiters()
        self.tasks = BackgroundTasks(self)
        self.started_at = time.time()
        # None: every feature with its defaults (configured ones come from ServerConfig)
        self.features = build_features({}) if features is None else list(features)
        for feature in self.features:
            feature.bind(self)
        # features first: they are the server's own rules, the middleware given is the user's
        self._middleware = [*self.features, *middleware]
        self._push_hooks = hooks_of(self._middleware, "push")
        self._fetch_hooks = hooks_of(self._middleware, "fetch")
        self._ack_hooks = hooks_of(self._middleware, "ack")
        self._fail_hooks = hooks_of(self._middleware, "fail")
        # fetch middleware sees every job a FETCH takes: those go the long way, through reserve
        self._hand_offs = store.in_process and not self._fetch_hooks
        self._acks_now = store.in_process
        # A job no push hook wants keeps the fast path; gates say which jobs features want.
        pushers = [m for m in self._middleware if type(m).push is not Middleware.push]
        gated = all(isinstance(m, Feature) for m in pushers)
        self._push_gates = [m.wants_push for m in pushers if isinstance(m, Feature)]
        self._pushes_now = store.in_process and gated
        self._gated = gated
        # a store whose writes wait for I/O may still take them without a task (soon.py)
        self._soon = not store.in_process
        # Likewise for ACK: jids no gated ack hook wants keep the batched ACK (None: ungated).
        ackers = [m for m in self._middleware if type(m).ack is not Middleware.ack]
        self._ack_gates: list[Callable[[str], bool]] | None = (
            [m.wants_ack for m in ackers if isinstance(m, Feature)]
            if all(isinstance(m, Feature) for m in ackers)
            else None
        )
        # Worker state as last seen by this server; BEAT refreshes it from the store.
        self._worker_states: dict[str, str] = {}
        self._local_clients: dict[str, set[int]] = {}
        self._closers: dict[int, ClientInfo] = {}
        store.set_ready_listener(self.waiters.notify)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await self.store.open()
        self.started_at = time.time()
        self.tasks.start()

    async def stop(self) -> None:
        await self.tasks.stop()
        self.waiters.notify_all()
        await self.store.close()

    # ------------------------------------------------------------------ push

    async def push(self, payload: bytes) -> None:
        job = validation.decode_pushed(payload, self.config)
        await self.push_job(job)

    async def push_job(self, job: Job) -> None:
        due = validation.prepare_job(job, self.config)
        if self._push_hooks:
            await run_chain(self._push_hooks, PushContext(self, job), _nothing)
        await self._store_jobs([(job, due)])

    def push_now(self, payload: bytes) -> Awaitable[None] | Later[None] | None:
        """A PUSH done at once, in the caller's step: the job is validated and stored, or
        handed to a waiting FETCH, whose reply is written before this returns. What is left
        is returned: the wait for the durability of this very write (it raises
        ``StoreError`` if the write was lost, however late it is awaited), to await before
        the PUSH is answered.

        ``None``, with nothing done, when the PUSH has to take the long way (``push()``):
        push middleware may wait for anything, so may a store that is not ``in_process``, and
        a job scheduled for later is no one's to hand off. Raises what ``push()`` raises for
        a bad job, with nothing stored.
        """
        if not self._pushes_now:
            return soon.push_soon(self, payload) if self._soon and self._gated else None
        job = validation.decode_pushed(payload, self.config)
        if self._push_gates and any(wants(job) for wants in self._push_gates):
            return None
        stamp = now_iso()  # created_at (when the client left it out) and enqueued_at
        due = validation.prepare_job(job, self.config, stamp)
        now = time.time()
        if due is not None and due > now:
            return None
        queued = [self._queued(job, stamp, validation.reserve_seconds(job, self.config))]
        handed: list[Awaitable[None]] = []
        left = self._hand_off(queued, now, handed)
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
        accepted: list[tuple[Job, float | None]] = []
        for index, item in enumerate(items):
            job: Job | None = None
            try:
                job = item if isinstance(item, Job) else validation.decode_pushed(item, config)
                due = validation.prepare_job(job, config, now)
                if self._push_hooks:
                    await run_chain(self._push_hooks, PushContext(self, job), _nothing)
            except CommandError as exc:  # middleware codes (NOTUNIQUE, ...) keep their code
                key = (job.jid if job is not None else _raw_jid(item)) or f"#{index}"
                errors[key] = exc.message if exc.code == "ERR" else str(exc)
            else:
                accepted.append((job, due))
        if accepted:
            await self._store_jobs(accepted)
        return errors

    async def _store_jobs(self, jobs: Sequence[tuple[Job, float | None]]) -> None:
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
        if queued:
            await self.store.enqueue(queued)
        for reservations in handed:
            await reservations  # raises if the hand-offs' reservations were lost

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
                jobs = jobs[waiter.count :]
            left.extend(jobs)
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
        take the long way (``fetch_many``: fetch middleware, a quiet worker, a store that
        must wait for its commit). A store that is not ``in_process`` answers ``Later``
        (soon.py)."""
        if not self._hand_offs:
            if self._soon and not self._fetch_hooks:
                return soon.fetch_soon(self, queues, wid, count)
            return None
        if wid and self._worker_states.get(wid, WorkerState.RUNNING) != WorkerState.RUNNING:
            return None
        reservations = self.store.reserve_now(queues, wid, time.time(), count)
        if reservations is None:
            return None
        if not reservations:
            return []
        # Pass the baton: there may be more jobs for other waiting FETCHes.
        self.waiters.notify(reservations[-1].queue)
        return [r.payload for r in reservations]

    async def _reserve(self, queues: Sequence[str], wid: str, count: int) -> list[bytes]:
        reservations = await self.store.reserve(queues, wid, time.time(), count)
        if not reservations:
            return []
        # Pass the baton: there may be more jobs for other waiting FETCHes.
        self.waiters.notify(reservations[-1].queue)
        if not self._fetch_hooks:
            return [r.payload for r in reservations]
        kept: list[bytes] = []
        for reservation in reservations:
            ctx = FetchContext(self, reservation, decode_job(reservation.payload))
            try:
                await run_chain(self._fetch_hooks, ctx, _nothing)
            except Discard as exc:
                log.info("discarded job %s at fetch: %s", reservation.jid, exc)
                await self.store.ack([reservation.jid], day_key(time.time()))
            else:
                kept.append(reservation.payload)
        return kept

    # ------------------------------------------------------------------ ack / fail

    async def ack(self, jid: str) -> None:
        await self.ack_many((jid,))

    def ack_now(self, jid: str) -> int | Later[int] | None:
        """ACK done in the caller's step, without a task: how many reservations ended (0 or
        1). None, with nothing done, when it has to take the long way (``ack``: an ack hook
        wants this jid, a store that is not ``in_process`` or must wait for its commit)."""
        if self._ack_hooks:
            gates = self._ack_gates
            if gates is None or any(wants(jid) for wants in gates):
                return None
        if not self._acks_now:
            return soon.ack_soon(self, jid) if self._soon else None
        return self.store.ack_now((jid,), day_key(time.time()))

    async def ack_many(self, jids: Sequence[str]) -> int:
        if not self._ack_hooks:
            return await self.store.ack(jids, day_key(time.time()))
        done = 0
        if self._ack_gates is not None:
            hooked = self._hooked_acks(jids, self._ack_gates)
            if not hooked:
                return await self.store.ack(jids, day_key(time.time()))
            if len(hooked) < len(jids):
                chosen = set(hooked)
                plain = [jid for jid in jids if jid not in chosen]
                done = await self.store.ack(plain, day_key(time.time()))
            jids = hooked
        for jid in jids:
            ctx = AckContext(self, jid, await self.store.get_reservation(jid))

            async def final(jid: str = jid) -> None:
                nonlocal done
                done += await self.store.ack((jid,), day_key(time.time()))

            await run_chain(self._ack_hooks, ctx, final)
        return done

    @staticmethod
    def _hooked_acks(jids: Sequence[str], gates: Sequence[Callable[[str], bool]]) -> list[str]:
        if len(gates) == 1:  # the usual case, without a generator per jid
            wants = gates[0]
            return [jid for jid in jids if wants(jid)]
        return [jid for jid in jids if any(wants(jid) for wants in gates)]

    async def fail(
        self, jid: str, errtype: str, message: str, backtrace: Sequence[str] = ()
    ) -> None:
        reservation = await self.store.get_reservation(jid)
        if reservation is None:
            raise JobNotFound(f"Job not found {jid}")
        await self._fail_reservation(reservation, FailureReport.clean(errtype, message, backtrace))

    async def _fail_reservation(self, reservation: Reservation, report: FailureReport) -> bool:
        """Record a failure and move the job on. False when the reservation was gone already
        (acked, failed or expired by someone else meanwhile): then nothing changes."""
        now = time.time()
        job = decode_job(reservation.payload)
        self.retry_policy.record(job, report, now)
        outcome = self.retry_policy.outcome(job, now, encode_job)
        check_transition(JobState.WORKING, outcome.target or JobState.DISCARDED)
        if not self._fail_hooks:
            return await self.store.fail(reservation.jid, outcome, day_key(now))
        ctx = FailContext(self, reservation, job, report, outcome)
        result = False

        async def final() -> None:
            nonlocal result
            result = await self.store.fail(reservation.jid, ctx.outcome, day_key(now))

        await run_chain(self._fail_hooks, ctx, final)
        return result

    async def expire_reservations(self, limit: int = 500) -> int:
        """Send overdue reservations down the failure path; returns how many."""
        report = FailureReport("ReservationExpired", "job reservation expired", ())
        expired = await self.store.expired_reservations(time.time(), limit)
        count = 0
        for reservation in expired:
            if await self._fail_reservation(reservation, report):
                count += 1
        return count

    async def extend(self, jid: str, until: float) -> None:
        """Extend a reservation (never shortens it)."""
        reservation = await self.store.get_reservation(jid)
        if reservation is None:
            raise JobNotFound(f"Job not found {jid}")
        if until > reservation.expires_at:
            await self.store.extend_reservation(jid, until)

    # ------------------------------------------------------------------ workers

    async def connect(self, client: ClientInfo) -> None:
        if not client.wid:
            return
        self._closers[id(client)] = client
        local = self._local_clients.setdefault(client.wid, set())
        local.add(id(client))
        now = time.time()
        # One atomic step: another server may be connecting the same worker right now.
        first = WorkerRecord(
            wid=client.wid,
            hostname=client.hostname,
            pid=client.pid,
            labels=list(client.labels),
            started_at=now,
            last_beat=now,
        )
        record = await self.store.update_worker(client.wid, connections_delta=1, create=first)
        self._worker_states[client.wid] = record.state if record else WorkerState.RUNNING

    async def disconnect(self, client: ClientInfo) -> None:
        if not client.wid:
            return
        self._closers.pop(id(client), None)
        local = self._local_clients.get(client.wid)
        if local is None or id(client) not in local:
            return  # already reaped
        local.discard(id(client))
        if not local:
            del self._local_clients[client.wid]
        # The store deletes the record when this was the worker's last connection anywhere
        # (Faktory forgets a worker at once when it hangs up).
        record = await self.store.update_worker(client.wid, connections_delta=-1)
        if record is None or record.connections <= 0:
            self._worker_states.pop(client.wid, None)

    async def beat(self, wid: str, rss_kb: int = 0, current_state: str | None = None) -> str:
        """Record a heartbeat; the state only moves forward (a worker's own report of quiet or
        terminate counts too). Atomic, so a quiet signalled on another server is never lost."""
        record = await self.store.update_worker(
            wid, rss_kb=rss_kb, last_beat=time.time(), state=current_state
        )
        if record is None:
            raise UnknownWorker(f"unknown worker {wid}")
        self._worker_states[wid] = record.state
        return record.state

    async def signal_workers(self, wids: Sequence[str] | None, state: str) -> int:
        """Quiet or terminate some workers (None = all); states never move backwards. Returns
        how many workers were signalled (a worker gone meanwhile is not counted)."""
        if state not in (WorkerState.QUIET, WorkerState.TERMINATE):
            raise ValueError(f"cannot signal workers to {state!r}")
        if wids is None:
            chosen = [record.wid for record in await self.store.list_workers()]
        else:
            chosen = list(dict.fromkeys(wids))
        signalled = 0
        for wid in chosen:
            record = await self.store.update_worker(wid, state=state)
            if record is not None:
                self._worker_states[wid] = record.state
                signalled += 1
        return signalled

    async def reap_workers(self) -> int:
        """Forget workers silent for longer than the timeout and close their connections."""
        cutoff = time.time() - self.config.worker_timeout_seconds
        reaped = 0
        for record in await self.store.list_workers():
            if record.last_beat >= cutoff:
                continue
            if not await self.store.delete_worker(record.wid, silent_before=cutoff):
                continue  # it beat (maybe on another server) since we listed it
            self._worker_states.pop(record.wid, None)
            reaped += 1
            for key in self._local_clients.pop(record.wid, set()):
                client = self._closers.pop(key, None)
                if client is not None and client.close is not None:
                    client.close()
        if reaped:
            log.info(
                "reaped %d workers silent for over %ss", reaped, self.config.worker_timeout_seconds
            )
        return reaped

    # ------------------------------------------------------------------ INFO / FLUSH

    async def info(self, stats: ServerStats | None = None) -> dict[str, Any]:
        return await build_info(self, stats or ServerStats())

    async def flush(self) -> None:
        await self.store.flush()
        self.tasks.reset_stats()

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
