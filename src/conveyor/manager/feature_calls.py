"""How the manager calls the features' own hooks (beyond the four middleware chains).

Mixed into ``Manager``: the push chain with its gates (``feature_pushes.PushCalls``); the
fetch chain with its gates; and the one ACK step that tells the features what it ended
(``Feature.acked``, with the marks ``Feature.ack_ends`` moves in that same step), and what was
removed for good (``Feature.removed``). See ``conveyor.manager.features`` and
docs/design/layout.md.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.job import decode_job
from conveyor.manager.feature_pushes import PushCalls, nothing
from conveyor.manager.features.base import Feature
from conveyor.manager.middleware import (
    Discard,
    FetchContext,
    Middleware,
    run_chain,
)
from conveyor.store.base import QueuedJob, Reservation, SetEntry, Store
from conveyor.store.batches import EndContext
from conveyor.store.endings import Acked, Settle
from conveyor.timefmt import day_key

if TYPE_CHECKING:
    from conveyor.manager.flow import FlowControl
    from conveyor.metrics.jobs import JobMetrics

__all__ = ["FeatureCalls"]

log = logging.getLogger("conveyor.manager")

_CUSTOM = b'"custom":'
_BATCH_KEYS = (b'"bid":"', b'"_bid":"')  # a batch job's, a callback's


def batch_in(payload: bytes) -> str:
    """The batch a stored job's payload names (``custom.bid``, or a callback's ``_bid``), or
    "": a hint only (the key might be in the args), so it need not be exact."""
    for key in _BATCH_KEYS:
        at = payload.find(key)
        if at >= 0:
            start = at + len(key)
            end = payload.find(b'"', start)
            if 0 < end - start <= 64:
                return payload[start:end].decode("utf-8", "replace")
    return ""


MAX_UNMARKED = 100_000
"""The most jids ``_unmarked`` holds; then it starts again (the lookups it saved come back)."""


class FeatureCalls(PushCalls):
    """Mixed into ``Manager``; relies on its store, hooks, gates and flow control."""

    store: Store
    flow: FlowControl
    metrics: JobMetrics | None
    features: list[Feature]
    _middleware: list[Middleware]
    _push_hooks: list[Callable[..., Awaitable[None]]]
    _fetch_hooks: list[Callable[..., Awaitable[None]]]
    _fetch_gates: list[Callable[[bytes], bool]]
    _fetch_gated: bool
    _ack_watchers: list[Feature]
    _ack_ender: Feature | None
    _acked_gates: list[Callable[[bytes], bool]]
    _acked_marks: tuple[bytes, ...] | None
    _acked_by_marks: bool
    """Whether every feature watching ACKs wants just the jobs holding one of its marks."""
    _gates_on_custom: bool
    _any_mark: Callable[[bytes], object] | None
    """Finds any mark of every fetch and ACK gate at once (``_marks_search``), or None."""
    _removal_watchers: list[Feature]
    _watched: set[str] | None
    """In-process stores: the jids reserved whose end a feature must hear of (None: a shared
    store, where every ACK says what it ended)."""
    _slotted: dict[str, str]
    """In-process stores: those of ``_watched`` watched only for their throttle slot (no
    feature's gate wants their ACK: they carry none of the marks), with their queue: their
    ACK frees the slot in its own step without the long way (``soon.ack_in_process``)."""
    _unmarked: set[str] | None
    """A shared store (Redis): jids this server reserved whose payload holds none of the ACK
    ender's marks, so their ACK needs no mark lookup (None: not kept)."""
    _ender_marks: tuple[bytes, ...] = ()
    _plain: set[str] | None
    """A shared store (Redis): jids this server reserved that hold none of the marks of the
    features watching ACKs, in queues without a throttle: their ACK is a plain one
    (``Store.ack``: a count back, nothing returned), as if no feature watched ACKs (None: not
    kept, some watcher asks more than marks)."""
    _batch_of: dict[str, str]
    """A shared store (Redis): the batch each job this server reserved names (``"bid":`` in
    its payload), so its ACK declares it at once (``EndContext.bids``: one script run)."""

    # ------------------------------------------------------------------ which ACKs to watch

    def _plan_ends(self, store: Store) -> None:
        """On a shared store every ACK returns what it ended, so nothing is watched; but the
        ender's step (batches: a mark lookup per jid in the ACK script) is skipped for the
        ACKs of jobs this server reserved and saw carry none of its marks (``_unmarked``).
        A jid not known here (reserved by another server, or before a restart) takes it."""
        ender = self._ack_ender
        marks = type(ender).acked_marks if ender is not None else None
        by_marks = ender is not None and type(ender).wants_acked is Feature.wants_acked
        self._unmarked = set() if not store.in_process and by_marks and marks else None
        self._ender_marks = marks or ()
        self._batch_of = {}
        self._plain = set() if not store.in_process and self._acked_by_marks else None

    def _all_plain(self, jids: Sequence[str]) -> bool:
        """Whether every one of ``jids`` was noted plain (``_plain``), which they no longer
        are: their ACK is on its way."""
        plain = self._plain
        if not plain or any(jid not in plain for jid in jids):
            return False
        plain.difference_update(jids)
        if self._unmarked:
            self._unmarked.difference_update(jids)
        return True

    def _note_fetched(self, reservations: Sequence[Reservation]) -> None:
        """A shared store: note, in one pass, which of the jobs just reserved no feature must
        hear of when they are ACKed (``_plain``: a job of a queue throttled only later took
        no slot, so it frees none) and which carry none of the ender's marks (``_unmarked``).
        Caches: what they forget only costs those ACKs the longer step."""
        plain, unmarked = self._plain, self._unmarked
        for noted in (plain, unmarked):
            if noted is not None and len(noted) >= MAX_UNMARKED:  # ACKed elsewhere, expired
                noted.clear()
        throttled, gates = self.flow.throttled, self._acked_gates
        marks = self._ender_marks
        for reservation in reservations:
            payload = reservation.payload
            if plain is not None:
                if (throttled and reservation.queue in throttled) or self._wanted(payload, gates):
                    plain.discard(reservation.jid)  # a jid pushed again, now marked
                else:
                    plain.add(reservation.jid)
                    if unmarked is not None:  # no feature's mark: none of the ender's either
                        unmarked.add(reservation.jid)
                    continue
            if unmarked is None:
                continue
            for mark in marks:
                if mark in payload:
                    unmarked.discard(reservation.jid)  # a jid pushed again, now marked
                    bid = batch_in(payload)
                    if bid:
                        batch_of = self._batch_of
                        if len(batch_of) >= MAX_UNMARKED:
                            batch_of.clear()
                        batch_of[reservation.jid] = bid
                    break
            else:
                unmarked.add(reservation.jid)

    def _ends_for(self, jids: Sequence[str]) -> EndContext | None:
        """How the ACK of ``jids`` ends their marks (``Feature.ack_ends``), with the batches
        noted at their FETCH (``_batch_of``: a hint, taken off with the ACK); None when no mark
        can be unfinished."""
        ender = self._ack_ender
        if ender is None or not self._needs_ends(jids):
            return None
        ends = ender.ack_ends()
        batch_of = self._batch_of
        if ends is None or not batch_of:
            return ends
        bids = tuple(dict.fromkeys(b for jid in jids if (b := batch_of.pop(jid, ""))))
        return dataclasses.replace(ends, bids=bids) if bids else ends

    def _needs_ends(self, jids: Sequence[str]) -> bool:
        """Whether the ACK of ``jids`` must end marks in its step (some may carry one)."""
        watched = self._watched
        if watched is not None:  # in-process: a marked job is watched (its ACK gate)
            return any(jid in watched for jid in jids)
        unmarked = self._unmarked
        if unmarked is None:
            return True
        if len(jids) == 1:
            return jids[0] not in unmarked
        return not all(jid in unmarked for jid in jids)

    def _marks_search(self, fetchers: Sequence[Middleware]) -> Callable[[bytes], object] | None:
        """One search for the marks of every fetch gate (``Feature.fetch_marks``) and every
        ACK gate (``acked_marks``), when each gate is one over its marks: a job holding none
        of them is wanted by none, and its gates are not asked (a job whose ``custom`` serves
        another feature, e.g. results', costs one search instead of a call a gate). None when
        some gate cannot say."""
        marks: list[bytes] = list(self._acked_marks or ()) if self._acked_by_marks else []
        if self._ack_watchers and not self._acked_by_marks:
            return None
        for fetcher in fetchers:
            declared = type(fetcher).fetch_marks if isinstance(fetcher, Feature) else None
            if declared is None:
                return None
            marks.extend(declared)
        if not marks:
            return None
        return re.compile(b"|".join(re.escape(mark) for mark in dict.fromkeys(marks))).search

    def _wanted(self, payload: bytes, gates: Sequence[Callable[[bytes], bool]]) -> bool:
        """Whether one of ``gates`` wants the job of ``payload`` (loops, not generators:
        this runs for every job a FETCH takes)."""
        if self._gates_on_custom and _CUSTOM not in payload:
            return False
        if self._any_mark is not None and self._any_mark(payload) is None:
            return False
        return any(wants(payload) for wants in gates)

    def _holds_acked_mark(self, payload: bytes) -> bool:
        """The ACK gates of every watcher at once, when each is the default over its marks."""
        for mark in self._acked_marks or ():  # noqa: SIM110 - no generator a FETCH
            if mark in payload:
                return True
        return False

    def _watch(self, jobs: Sequence[Reservation | QueuedJob]) -> None:
        """Remember the jobs just reserved (or handed off) whose ACK must be reported."""
        watched = self._watched
        if watched is None:
            return
        throttled = self.flow.throttled  # their ACK frees a slot
        gates = self._acked_gates
        for job in jobs:
            if self._wanted(job.payload, gates):
                watched.add(job.jid)
            elif throttled and job.queue in throttled:
                watched.add(job.jid)
                self._slotted[job.jid] = job.queue

    def _unwatch(self, jids: Sequence[str]) -> None:
        if self._watched:
            self._watched.difference_update(jids)
            slotted = self._slotted
            if slotted:
                for jid in jids:
                    slotted.pop(jid, None)
        elif self._unmarked:
            self._unmarked.difference_update(jids)

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
        if self._unmarked is not None or self._plain is not None:
            self._note_fetched(reservations)
        if watched is None and not fetching:
            return False
        if fetching and not self._fetch_gated:
            self._watch(reservations)
            return True
        throttled = self.flow.throttled
        on_custom = self._gates_on_custom
        any_mark = self._any_mark
        wanted = False
        slotted = self._slotted
        for reservation in reservations:
            payload = reservation.payload
            if watched is not None and throttled and reservation.queue in throttled:
                watched.add(reservation.jid)
                slotted[reservation.jid] = reservation.queue  # unless a gate wants it
            if on_custom and _CUSTOM not in payload:
                continue
            if any_mark is not None and any_mark(payload) is None:
                continue  # none of the gates' marks: no gate wants it
            if watched is not None:
                for wants in self._acked_gates:
                    if wants(payload):
                        watched.add(reservation.jid)
                        slotted.pop(reservation.jid, None)
                        break
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
                await run_chain(self._fetch_hooks, ctx, nothing)
            except Discard as exc:
                log.info("discarded job %s at fetch: %s", reservation.jid, exc)
                dropped.append(reservation.jid)
            else:
                kept.append(payload if ctx.send is None else ctx.send)
        if dropped:
            self._unwatch(dropped)
            if self.metrics is not None:
                for jid in dropped:
                    self.metrics.forget(jid)
            ended = await self.store.discard_reservations(dropped)
            await self.flow.ended(ended)  # a throttle's slot is free
        return kept

    def _ack_unhooked(
        self, jids: Sequence[str], keep: Sequence[SetEntry] = (), settle: Settle | None = None
    ) -> Awaitable[int]:
        """ACK jids no ack middleware wants: ``Store.ack``, unless a feature must hear of
        them (``acked``), some are kept or something is stored with them (``settle``); what
        it returns gives how many reservations ended."""
        watched = self._watched
        if watched is not None:  # in-process: only the jids noted at FETCH
            if not watched or all(jid not in watched for jid in jids):
                if not keep and settle is None:
                    return self.store.ack(jids, day_key(time.time()))
                return self._ack_returning(jids, keep, settle, tell=False)
        elif not (keep or settle) and (
            not (self._ack_watchers or self.flow.throttled) or self._all_plain(jids)
        ):
            return self.store.ack(jids, day_key(time.time()))
        return self._ack_returning(jids, keep, settle)

    async def _ack_returning(
        self,
        jids: Sequence[str],
        keep: Sequence[SetEntry] = (),
        settle: Settle | None = None,
        tell: bool = True,
    ) -> int:
        """ACK the jids in one store step, telling the features what ended (unless ``tell``
        is False: none of them is watched, in process); returns how many reservations did.
        Throttle slots are freed (and their queues woken everywhere) by the ACK itself, the
        jobs of ``keep`` go into the completed set, what ``settle`` asks is stored, and the
        marks of batch and tracked jobs move with it (``ack_ends``): all or nothing."""
        day = day_key(time.time())
        ends = self._ends_for(jids)
        acked = await self.store.ack_returning(
            jids, day, self.flow.throttled, self._acked_marks, ends, keep, settle
        )
        if self._unmarked:
            self._unmarked.difference_update(jids)
        if tell:
            await self._acked(acked)
        return len(acked.ended)

    def _acked_idle(self, acked: Acked) -> bool:
        """Whether no feature has anything to do about ``acked`` (``Feature.acked_idle``);
        then the watched jids are forgotten here, as ``_acked`` would."""
        if not acked.ended:
            return True
        for feature in self._ack_watchers:
            if not feature.acked_idle(acked):
                return False
        self._unwatch([r.jid for r in acked.ended])
        return True

    async def _acked(self, acked: Acked) -> None:
        """Tell the features which jobs succeeded, and what that set off."""
        if not acked.ended:
            return
        self._unwatch([r.jid for r in acked.ended])
        for feature in self._ack_watchers:
            await feature.acked(acked)

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
