"""How the manager calls the features' own hooks (beyond the four middleware chains).

Mixed into ``Manager``: the fetch chain with its gates, and telling the features what was
acknowledged (``Feature.acked``) or removed for good (``Feature.removed``). See
``conveyor.manager.features`` and docs/design/layout.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, cast

from conveyor.job import Job, decode_job
from conveyor.manager.middleware import Discard, FetchContext, PushContext, run_chain
from conveyor.store.base import QueuedJob, Reservation, Store
from conveyor.timefmt import day_key

if TYPE_CHECKING:
    from conveyor.manager.features import Feature
    from conveyor.manager.flow import FlowControl
    from conveyor.metrics.jobs import JobMetrics

__all__ = ["FeatureCalls"]

log = logging.getLogger("conveyor.manager")

_CUSTOM = b'"custom":'


class FeatureCalls:
    """Mixed into ``Manager``; relies on its store, hooks, gates and flow control."""

    store: Store
    flow: FlowControl
    metrics: JobMetrics | None
    _push_hooks: list[Callable[..., Awaitable[None]]]
    _fetch_hooks: list[Callable[..., Awaitable[None]]]
    _fetch_gates: list[Callable[[bytes], bool]]
    _fetch_gated: bool
    _ack_watchers: list[Feature]
    _acked_gates: list[Callable[[bytes], bool]]
    _acked_marks: tuple[bytes, ...] | None
    _gates_on_custom: bool
    _removal_watchers: list[Feature]
    _watched: set[str] | None
    """In-process stores: the jids reserved whose end a feature must hear of (None: a shared
    store, where every ACK says what it ended)."""

    def _push_chain_now(self, job: Job, hooks: list[Callable[..., Awaitable[None]]]) -> bool:
        """Run the push chain for ``job`` to its end in this very step (the PUSH fast path of
        an in-process store, whose writes never wait). False when a hook waited after all:
        the chain is closed where it stood, and the PUSH takes the long way, which runs it
        again (hooks are idempotent: a PUSH retried after a lost reply runs them twice too).
        Raises what the hooks raise (``Drop``, ``NotUnique``, ``InvalidJob``)."""
        ctx = PushContext(self, job)  # type: ignore[arg-type]
        # one hook (a unique job, an expiring one): called as run_chain would, without it
        chain = cast(
            "Coroutine[Any, Any, None]",
            hooks[0](ctx, _nothing) if len(hooks) == 1 else run_chain(hooks, ctx, _nothing),
        )
        try:
            chain.send(None)
        except StopIteration:
            return True
        chain.close()
        return False

    # ------------------------------------------------------------------ which ACKs to watch

    def _wanted(self, payload: bytes, gates: Sequence[Callable[[bytes], bool]]) -> bool:
        """Whether one of ``gates`` wants the job of ``payload`` (loops, not generators:
        this runs for every job a FETCH takes)."""
        if self._gates_on_custom and _CUSTOM not in payload:
            return False
        return any(wants(payload) for wants in gates)

    def _watch(self, jobs: Sequence[Reservation | QueuedJob]) -> None:
        """Remember the jobs just reserved (or handed off) whose ACK must be reported."""
        watched = self._watched
        if watched is None:
            return
        throttled = self.flow.throttled  # their ACK frees a slot
        gates = self._acked_gates
        for job in jobs:
            if (throttled and job.queue in throttled) or self._wanted(job.payload, gates):
                watched.add(job.jid)

    def _unwatch(self, jids: Sequence[str]) -> None:
        if self._watched:
            self._watched.difference_update(jids)

    async def _watch_reservations(self) -> None:
        """At start: the reservations an in-process store kept over a restart."""
        if self._watched is None:
            return
        offset = 0
        while True:
            page = await self.store.list_reservations(offset, 1000)
            self._watch(page.items)
            offset += len(page.items)
            if len(page.items) < 1000:
                return

    def _ungated(self, jobs: list[QueuedJob]) -> tuple[list[QueuedJob], list[QueuedJob]]:
        """Split ``jobs`` (of one queue, in order) before the first one a fetch hook wants:
        that one and those after it are queued, in order, and fetched through the hooks."""
        gates = self._fetch_gates
        for index, job in enumerate(jobs):
            if self._wanted(job.payload, gates):
                return jobs[:index], jobs[index:]
        return jobs, []

    def _taken(self, reservations: list[Reservation]) -> bool:
        """Note the reservations whose ACK a feature must hear of (``_watch``), and say
        whether the fetch hooks must see any of them: one pass, in this step, for every job a
        FETCH takes (a job without ``custom`` costs one substring test)."""
        watched, fetching = self._watched, self._fetch_hooks
        if watched is None and not fetching:
            return False
        if fetching and not self._fetch_gated:
            self._watch(reservations)
            return True
        throttled = self.flow.throttled
        on_custom = self._gates_on_custom
        wanted = False
        for reservation in reservations:
            payload = reservation.payload
            if watched is not None and throttled and reservation.queue in throttled:
                watched.add(reservation.jid)
            if on_custom and _CUSTOM not in payload:
                continue
            if watched is not None and any(wants(payload) for wants in self._acked_gates):
                watched.add(reservation.jid)
            if fetching and not wanted:
                wanted = any(wants(payload) for wants in self._fetch_gates)
        return wanted

    async def _fetch_chain(self, reservations: list[Reservation]) -> list[bytes]:
        """Run the fetch hooks on the reservations some gate wants; returns the payloads kept.
        The reservations of dropped jobs end, counted neither processed nor failed."""
        kept: list[bytes] = []
        dropped: list[str] = []
        gates = self._fetch_gates if self._fetch_gated else None  # None: ungated middleware
        for reservation in reservations:
            payload = reservation.payload
            if gates is not None and not self._wanted(payload, gates):
                kept.append(payload)
                continue
            ctx = FetchContext(self, reservation, decode_job(payload))  # type: ignore[arg-type]
            try:
                await run_chain(self._fetch_hooks, ctx, _nothing)
            except Discard as exc:
                log.info("discarded job %s at fetch: %s", reservation.jid, exc)
                dropped.append(reservation.jid)
            else:
                kept.append(payload)
        if dropped:
            self._unwatch(dropped)
            if self.metrics is not None:
                for jid in dropped:
                    self.metrics.forget(jid)
            ended = await self.store.discard_reservations(dropped)
            await self.flow.ended(ended)  # a throttle's slot is free
        return kept

    def _ack_unhooked(self, jids: Sequence[str]) -> Awaitable[int]:
        """ACK jids no ack middleware wants: ``Store.ack``, unless a feature must hear of
        them (``acked``); what it returns gives how many reservations ended."""
        watched = self._watched
        if watched is not None:  # in-process: only the jids noted at FETCH
            if len(jids) == 1:
                if jids[0] not in watched:
                    return self.store.ack(jids, day_key(time.time()))
            elif not watched or all(jid not in watched for jid in jids):
                return self.store.ack(jids, day_key(time.time()))
        elif not (self._ack_watchers or self.flow.throttled):
            return self.store.ack(jids, day_key(time.time()))
        return self._ack_returning(jids)

    async def _ack_returning(self, jids: Sequence[str]) -> int:
        """ACK the jids, telling the features what ended; returns how many did."""
        # throttle slots are freed (and their queues woken everywhere) by the ACK itself
        day = day_key(time.time())
        ended = await self.store.ack_returning(jids, day, self.flow.throttled, self._acked_marks)
        await self._acked(ended)
        return len(ended)

    async def _acked(self, ended: Sequence[Reservation]) -> None:
        """Tell the features which jobs succeeded."""
        if not ended:
            return
        self._unwatch([r.jid for r in ended])
        if self._gates_on_custom:  # the others (a throttle's jobs) are no feature's concern
            ended = [r for r in ended if _CUSTOM in r.payload]
            if not ended:
                return
        for feature in self._ack_watchers:
            await feature.acked(ended)

    async def removed(self, payloads: Sequence[bytes]) -> None:
        """Jobs gone for good without succeeding (deleted, killed, purged, expired, refused
        by a full queue): the features hear of them (a unique job's lock is released)."""
        if payloads:
            for feature in self._removal_watchers:
                await feature.removed(payloads)

    async def taken_away(self, payload: bytes, reservation: Reservation | None = None) -> None:
        """A feature took a job away for good, without success (a cancel): the reservation it
        held, if any, ends here (a throttle's slot frees), and the features hear of the job
        (``removed``: a unique job's lock is released)."""
        if reservation is not None:
            self._unwatch((reservation.jid,))
            await self.flow.ended((reservation,))
        await self.removed([payload])

    async def watching_removals(self) -> bool:
        """Whether jobs cleared in bulk must be read first, for ``removed``."""
        for feature in self._removal_watchers:
            if await feature.watches_removals():
                return True
        return False


async def _nothing() -> None:
    return None
