"""How the manager calls the features' own hooks (beyond the four middleware chains).

Mixed into ``Manager``: the push chain with its gates, cut where a feature takes pushed jobs
together (``Feature.push_many``: a PUSHB's batch jobs are marked in one store step); the
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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, cast

from conveyor.errors import CommandError
from conveyor.job import Job, decode_job, encode_job
from conveyor.manager.features.base import Feature
from conveyor.manager.middleware import (
    Discard,
    Drop,
    FetchContext,
    Middleware,
    PushContext,
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

Hook = Callable[..., Awaitable[None]]
Gate = Callable[[Job], bool]


class _Segment:
    """Push hooks run as one chain, with their gates (None: a middleware's, which wants every
    job); a feature that takes pushed jobs together (``push_many``) comes after it, if any."""

    __slots__ = ("bulk", "by_key", "gates", "hooks", "keys")

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.gates: list[Gate | None] = []
        self.bulk: Feature | None = None
        self.by_key: dict[str, tuple[int, ...]] = {}
        """The gates (their places in ``hooks``) that may want a job holding each key of
        ``custom``, when every gate says which (``Feature.push_keys``)."""
        self.keys: frozenset[str] | None = None
        """The keys of ``by_key`` (None: some gate cannot say): a job whose ``custom`` holds
        none of them is wanted by no gate of the segment."""


class FeatureCalls:
    """Mixed into ``Manager``; relies on its store, hooks, gates and flow control."""

    store: Store
    flow: FlowControl
    metrics: JobMetrics | None
    features: list[Feature]
    _middleware: list[Middleware]
    _push_hooks: list[Callable[..., Awaitable[None]]]
    _push_nows: dict[Hook, Callable[[Job], bool]]
    """The push hooks that have a synchronous twin (``Feature.push_now``), with it."""
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

    # ------------------------------------------------------------------ push

    def _plan_pushes(self) -> None:
        """Cut the push hooks where a feature takes pushed jobs together (``push_many``):
        the hooks before it run to their end first (a job they refuse is never marked), then
        it takes the survivors in one step, then the hooks after it."""
        segments = [_Segment()]
        nows: dict[Hook, Callable[[Job], bool]] = {}
        for m in self._middleware:
            if isinstance(m, Feature) and type(m).push_many is not Feature.push_many:
                segments[-1].bulk = m
                segments.append(_Segment())
            elif type(m).push is not Middleware.push:
                segments[-1].hooks.append(m.push)
                segments[-1].gates.append(m.wants_push if isinstance(m, Feature) else None)
                if isinstance(m, Feature) and type(m).push_now is not Feature.push_now:
                    nows[segments[-1].hooks[-1]] = m.push_now
        self._segments = segments
        self._push_nows = nows
        self._plan_push_keys()
        gates = [gate for segment in segments for gate in segment.gates]
        self._push_gated = all(gate is not None for gate in gates)
        self._push_any = len(segments) > 1 or bool(gates)
        pushers = [m for m in self._middleware if type(m).push is not Middleware.push]
        pushers += [segment.bulk for segment in segments if segment.bulk is not None]
        self._pushers = pushers
        self._push_on_custom = self._pushing_on_custom()

    def _plan_push_keys(self) -> None:
        """Note which gates of each segment want which keys of ``custom`` (again after a
        reload: results' depend on its defaults)."""
        for segment in self._segments:
            owners = [getattr(gate, "__self__", None) for gate in segment.gates]
            declared = [o.push_keys if isinstance(o, Feature) else None for o in owners]
            by_key: dict[str, tuple[int, ...]] = {}
            for place, keys in enumerate(declared):
                for key in keys or ():
                    by_key[key] = (*by_key.get(key, ()), place)
            segment.by_key = by_key
            segment.keys = None if None in declared else frozenset(by_key)

    def _pushing_on_custom(self) -> bool:
        """Whether every push hook (and ``push_many``) leaves a job without ``custom`` alone
        (``Feature.pushes_on_custom``, read again after a reload)."""
        return all(isinstance(m, Feature) and m.pushes_on_custom for m in self._pushers)

    def _admits(self, job: Job) -> bool:
        """Whether some push hook or ``push_many`` wants ``job`` (then it cannot take a path
        that runs none: ``soon.push_soon``)."""
        if not self._push_any or (job.custom is None and self._push_on_custom):
            return False
        for segment in self._segments:
            if self._chosen(job, segment):
                return True
            bulk = segment.bulk
            if bulk is not None and bulk.wants_push(job):
                return True
        return False

    def _marks_only(self, job: Job) -> Feature | None:
        """The one feature whose ``push_many`` wants ``job`` when no push hook does (a batch
        or tracked job and nothing else: ``soon.push_soon`` may mark it with a callback)."""
        found: Feature | None = None
        for segment in self._segments:
            if self._chosen(job, segment):
                return None
            bulk = segment.bulk
            if bulk is not None and bulk.wants_push(job):
                if found is not None:
                    return None
                found = bulk
        return found

    def _chosen(self, job: Job, segment: _Segment) -> list[Hook]:
        """The hooks of ``segment`` that ``job`` goes through: every one when some middleware
        is not a feature, else those of the features whose gate wants it (often none)."""
        if not self._push_gated or not segment.hooks:
            return segment.hooks
        custom = job.custom
        if custom is None and self._push_on_custom:
            return []
        keys = segment.keys
        if keys is not None:  # each gate wants only jobs holding one of its keys
            if custom is None or custom.keys().isdisjoint(keys):
                return []
            return self._chosen_by_keys(job, custom.keys() & keys, segment)
        chosen: list[Hook] = []
        for hook, wants in zip(segment.hooks, segment.gates, strict=True):
            if wants is not None and wants(job):
                chosen.append(hook)
        return chosen

    @staticmethod
    def _chosen_by_keys(job: Job, held: set[str], segment: _Segment) -> list[Hook]:
        """The hooks of the gates of the keys ``held`` that want ``job``, in chain order."""
        by_key = segment.by_key
        if len(held) == 1:
            places: Sequence[int] = by_key[next(iter(held))]
        else:
            places = sorted({place for key in held for place in by_key[key]})
        chosen: list[Hook] = []
        for place in places:
            wants = segment.gates[place]
            if wants is not None and wants(job):
                chosen.append(segment.hooks[place])
        return chosen

    async def _admit(self, job: Job) -> Drop | None:
        """Run the push hooks on ``job`` (the long way): a ``Drop`` when one kept it out of the
        queue, None to store it; raises what refused it."""
        if not self._push_any or (job.custom is None and self._push_on_custom):
            return None
        taken = False  # some hook took the job in: a later refusal tells them (removed)
        for segment in self._segments:
            hooks = self._chosen(job, segment)
            try:
                if hooks:
                    await run_chain(hooks, PushContext(self, job), _nothing)  # type: ignore[arg-type]
                    taken = True
                bulk = segment.bulk
                if bulk is not None and bulk.wants_push(job):
                    verdict = (await bulk.push_many([job])).get(job.jid)
                    if verdict is not None:
                        raise verdict
                    taken = True
            except Drop as dropped:
                return dropped
            except CommandError:
                if taken:
                    await self.removed([encode_job(job)])
                raise
        return None

    def _admit_now(self, job: Job) -> tuple[bool, Drop | None] | None:
        """``_admit`` done in the caller's step (an in-process store): whether some hook
        took the job, and its ``Drop``; None, to take the long way, when a hook would wait or
        a refusal must be told to hooks that took the job. Raises what refused the job when
        no hook had taken it."""
        if job.custom is None and self._push_on_custom:
            return False, None
        taken = False
        for segment in self._segments:
            hooks = self._chosen(job, segment)
            try:
                if hooks:
                    if not self._push_chain_now(job, hooks):
                        return None  # a hook waited: the long way runs the (idempotent) chain again
                    taken = True
                bulk = segment.bulk
                if bulk is not None and bulk.wants_push(job):
                    done = bulk.push_many_now(job)
                    if done is None:
                        return None
                    verdict = done.get(job.jid)
                    if verdict is not None:
                        raise verdict
                    taken = True
            except Drop as dropped:
                return True, dropped
            except CommandError:
                if taken:
                    return None  # the long way refuses it again, and tells the hooks
                raise
        return taken, None

    async def _admit_many(
        self, prepared: list[tuple[Job, float | None]], errors: dict[str, str]
    ) -> tuple[list[tuple[Job, float | None]], list[Awaitable[None]]]:
        """``_admit`` for the jobs of a PUSHB, each ``push_many`` once for all of them.
        Returns the jobs to store and the durability of the writes of those kept elsewhere;
        the refused ones go into ``errors``."""
        kept_elsewhere: list[Awaitable[None]] = []
        taken: set[str] = set()
        refused: list[Job] = []

        def refuse(job: Job, exc: CommandError) -> None:
            errors[job.jid] = exc.message if exc.code == "ERR" else str(exc)
            if job.jid in taken:
                refused.append(job)

        def keep(dropped: Drop) -> None:
            if dropped.durable is not None:
                kept_elsewhere.append(dropped.durable)

        alive = prepared
        if self._push_any:
            for segment in self._segments:
                survivors: list[tuple[Job, float | None]] = []
                for job, due in alive:
                    hooks = self._chosen(job, segment)
                    try:
                        if hooks:
                            await run_chain(hooks, PushContext(self, job), _nothing)  # type: ignore[arg-type]
                            taken.add(job.jid)
                    except Drop as dropped:
                        keep(dropped)
                    except CommandError as exc:  # middleware codes (NOTUNIQUE, ...) keep theirs
                        refuse(job, exc)
                    else:
                        survivors.append((job, due))
                alive = survivors
                bulk = segment.bulk
                wanted = [job for job, _ in alive if bulk is not None and bulk.wants_push(job)]
                if bulk is None or not wanted:
                    continue
                verdicts = await bulk.push_many(wanted)
                survivors = []
                for job, due in alive:
                    verdict = verdicts.get(job.jid)
                    if isinstance(verdict, Drop):
                        keep(verdict)
                    elif verdict is not None:
                        refuse(job, verdict)
                    else:
                        survivors.append((job, due))
                taken.update(job.jid for job in wanted)
                alive = survivors
        if refused:
            await self.removed([encode_job(job) for job in refused])
        return alive, kept_elsewhere

    def _push_chain_now(self, job: Job, hooks: list[Callable[..., Awaitable[None]]]) -> bool:
        """Run the push chain for ``job`` to its end in this very step (the PUSH fast path of
        an in-process store, whose writes never wait). False when a hook waited after all:
        the chain is closed where it stood, and the PUSH takes the long way, which runs it
        again (hooks are idempotent: a PUSH retried after a lost reply runs them twice too).
        Raises what the hooks raise (``Drop``, ``NotUnique``, ``InvalidJob``)."""
        if len(hooks) == 1:  # one feature's hook (a unique job's): its own, without coroutine
            now = self._push_nows.get(hooks[0])
            if now is not None and now(job):
                return True
        ctx = PushContext(self, job)  # type: ignore[arg-type]
        # one hook (a unique job's): called as run_chain would, without its two coroutines
        chain = cast(
            "Coroutine[object, None, None]",
            hooks[0](ctx, _nothing) if len(hooks) == 1 else run_chain(hooks, ctx, _nothing),
        )
        try:
            chain.send(None)
        except StopIteration:
            return True
        chain.close()
        return False

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
                await run_chain(self._fetch_hooks, ctx, _nothing)
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


async def _nothing() -> None:
    return None
