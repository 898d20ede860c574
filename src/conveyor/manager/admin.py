"""Admin operations of the manager: queues, MUTATE, sorted-set actions and read views.

Used by the FWP commands (QUEUE, MUTATE) and by the web dashboard. Bulk operations work in
pages so that a set of 100,000 jobs never has to be held or moved in one step. Jobs removed
for good (deleted, killed, purged) are reported to the features (``Manager.removed``): a
unique job's lock goes with its job. A bulk clear reads what it clears first only while a
feature asks for it (``Manager.watching_removals``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import CommandError, StoreError
from conveyor.job import Job, decode_job
from conveyor.manager.lifecycle import JobState, check_transition
from conveyor.store.base import (
    Counters,
    JobFilter,
    Page,
    QueuedJob,
    Reservation,
    SetEntry,
    SetMove,
    SortedSet,
    Store,
    WorkerRecord,
)
from conveyor.store.filters import MAX_PATTERN_CHARS
from conveyor.timefmt import day_key, now_iso, parse_time

if TYPE_CHECKING:
    from conveyor.logs import RateLimitedLog
    from conveyor.manager.config import ManagerConfig
    from conveyor.manager.features import Feature
    from conveyor.manager.waiters import QueueWaiters

__all__ = ["JOB_ACTIONS", "AdminOps", "JobActionReport", "JobLocation", "QueueInfo", "WorkerView"]

_PAGE = 1000
WAITING = "waiting"
"""Where a job pushed with ``custom.after`` is until the jobs it waits for have succeeded."""
_MUTATE_COMMANDS = ("clear", "discard", "kill", "requeue")
_SET_NAMES = frozenset(name.value for name in SortedSet)
JOB_ACTIONS = ("retry", "kill", "delete")
"""What ``act_on_jobs`` does to jobs wherever they are (``conveyor job retry|kill|delete``)."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    size: int
    latency: float
    paused: bool


@dataclass(frozen=True, slots=True)
class WorkerView:
    record: WorkerRecord
    busy: int


@dataclass(frozen=True, slots=True)
class JobLocation:
    """Where a job is now: ``working`` (reserved, by ``wid``, since ``reserved_at``, until
    ``expires_at``), ``queued``, ``waiting`` (for the jobs of its ``custom.after``), a sorted
    set's name (at ``score``), a place only a feature holds (``aggregating`` in ``group``), or,
    for a job that is nowhere any more, what became of it (``cancelled``). ``details``: what
    the feature that found it says about it (JSON-ready)."""

    where: str
    queue: str
    payload: bytes
    wid: str = ""
    score: float = 0.0
    group: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    reserved_at: float | None = None
    expires_at: float | None = None
    entry: QueuedJob | None = None
    """A queued job's entry as the queue holds it (a cancel removes exactly that one)."""


@dataclass(slots=True)
class JobActionReport:
    """What ``act_on_jobs`` did: ``refused`` maps each jid it could not act on to why, and
    ``changed`` counts the jobs changed (fewer than asked when some moved meanwhile)."""

    where: dict[str, str]
    refused: dict[str, str]
    changed: int = 0


def _check_filter(flt: JobFilter | None) -> None:
    if flt is not None and flt.pattern and len(flt.pattern) > MAX_PATTERN_CHARS:
        raise CommandError(
            f"filter regexp is {len(flt.pattern)} characters long; the limit is {MAX_PATTERN_CHARS}"
        )


_MUTATE_TARGETS = (SortedSet.SCHEDULED, SortedSet.RETRIES, SortedSet.DEAD)
"""Faktory's MUTATE targets; the completed set is not one (its jobs ran already)."""


def _set_named(target: str) -> SortedSet:
    for name in _MUTATE_TARGETS:
        if target == name.value:
            return name
    raise CommandError("invalid target for mutation command")


class AdminOps:
    """Mixed into ``Manager``; relies on its ``store``, ``config`` and ``waiters``."""

    store: Store
    config: ManagerConfig
    waiters: QueueWaiters
    store_trouble: RateLimitedLog
    features: list[Feature]

    def queued(self, job: Job) -> QueuedJob:  # provided by Manager
        raise NotImplementedError

    async def storage_problem(self) -> str | None:
        """Why the store cannot serve now, or None when it can: it refuses writes (SQLite
        that cannot commit), or a read fails (Redis down). For ``/health``."""
        refusal = self.store.refusing_writes()
        if refusal is not None:
            return refusal
        try:
            await self.store.counters()
        except StoreError as exc:
            return str(exc)
        return None

    def report_storage_error(self, where: str, exc: StoreError) -> None:
        """Log a store failure met outside the FWP server (the dashboard), rate-limited like
        the server's: an outage is told, not one line per request."""
        self.store_trouble.problem("%s: %s", where, exc)

    async def removed(self, payloads: Sequence[bytes]) -> None:  # provided by Manager
        raise NotImplementedError

    async def watching_removals(self) -> bool:  # provided by Manager
        raise NotImplementedError

    async def _queued_jobs(self, name: str) -> list[bytes]:
        """Every payload of a queue, page by page (before it is cleared, for ``removed``)."""
        payloads: list[bytes] = []
        while True:
            page = await self.store.list_queue(name, len(payloads), _PAGE)
            payloads += [job.payload for job in page.items]
            if len(page.items) < _PAGE:
                return payloads

    # ------------------------------------------------------------------ queues

    async def _queue_names(self, names: Sequence[str]) -> list[str]:
        if "*" in names:
            return list(await self.store.queue_sizes())
        return list(names)

    async def pause_queues(self, names: Sequence[str]) -> None:
        await self.store.set_paused(await self._queue_names(names), True)

    async def resume_queues(self, names: Sequence[str]) -> None:
        resumed = await self._queue_names(names)
        await self.store.set_paused(resumed, False)
        for name in resumed:  # FETCHes waiting on a paused queue can have its jobs now
            self.waiters.notify(name)

    async def remove_queues(self, names: Sequence[str]) -> None:
        removed = await self._queue_names(names)
        payloads: list[bytes] = []
        if await self.watching_removals():
            for name in removed:
                payloads += await self._queued_jobs(name)
        await self.store.remove_queues(removed)
        await self.removed(payloads)

    async def queue_latency(self, names: Sequence[str]) -> dict[str, float]:
        """Seconds since the oldest job of each queue was enqueued (0 when empty/unknown)."""
        if "*" in names:
            raise CommandError("QUEUE LATENCY does not support wildcards")
        heads = await self.store.queue_heads(names)
        now = time.time()
        return {name: _latency(heads.get(name), now) for name in names}

    async def queues(self) -> list[QueueInfo]:
        sizes = await self.store.queue_sizes()
        paused = await self.store.paused_queues()
        latency = await self.queue_latency(list(sizes)) if sizes else {}
        return [
            QueueInfo(name, size, latency.get(name, 0.0), name in paused)
            for name, size in sorted(sizes.items())
        ]

    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        return await self.store.list_queue(name, offset, limit)

    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        taken = await self.store.take_queued(name, jids)
        await self.removed([job.payload for job in taken])
        return len(taken)

    # ------------------------------------------------------------------ sorted sets

    async def list_set(
        self,
        name: SortedSet,
        flt: JobFilter,
        offset: int,
        limit: int,
        descending: bool = False,
    ) -> Page[SetEntry]:
        _check_filter(flt)
        return await self.store.list_set(name, flt, offset, limit, descending=descending)

    async def get_set_entry(self, name: SortedSet, jid: str) -> SetEntry | None:
        entries = await self.store.get_set_entries(name, (jid,))
        return entries[0] if entries else None

    async def _select(self, name: SortedSet, jids: Sequence[str] | None) -> list[SetEntry]:
        if jids is not None:
            return await self.store.get_set_entries(name, jids)
        return await self._matching(name, JobFilter())

    async def _matching(self, name: SortedSet, flt: JobFilter) -> list[SetEntry]:
        """Every entry matching ``flt``, read page by page before anything is changed."""
        entries: list[SetEntry] = []
        while True:
            page = await self.store.list_set(name, flt, len(entries), _PAGE)
            entries.extend(page.items)
            if len(page.items) < _PAGE:
                return entries

    async def requeue(self, name: SortedSet, jids: Sequence[str] | None) -> int:
        """Enqueue now ("Retry Now" / "Add to queue"), with a fresh ``enqueued_at``."""
        return await self._requeue_entries(name, await self._select(name, jids))

    async def _requeue_entries(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        check_transition(name, JobState.QUEUED)
        moved = 0
        for start in range(0, len(entries), _PAGE):
            enqueued_at = now_iso()
            moves = []
            for entry in entries[start : start + _PAGE]:
                job = decode_job(entry.payload)
                job.enqueued_at = enqueued_at
                moves.append(SetMove(entry, self.queued(job)))
            moved += await self.store.move_to_queue(name, moves)
        return moved

    async def delete(self, name: SortedSet, jids: Sequence[str] | None) -> int:
        check_transition(name, JobState.DISCARDED)
        if jids is None:
            return await self._clear_set(name)
        entries = await self.store.get_set_entries(name, jids)
        removed = await self.store.remove_from_set(name, entries)
        await self.removed([entry.payload for entry in entries])
        return removed

    async def _clear_set(self, name: SortedSet) -> int:
        watching = await self.watching_removals()
        entries = await self._matching(name, JobFilter()) if watching else []
        cleared = await self.store.clear_set(name)
        await self.removed([entry.payload for entry in entries])
        return cleared

    async def kill(self, name: SortedSet, jids: Sequence[str] | None) -> int:
        return await self._kill_entries(name, await self._select(name, jids))

    async def _kill_entries(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        check_transition(name, JobState.DEAD)
        score = time.time() + self.config.dead_ttl_seconds
        moved = 0
        for start in range(0, len(entries), _PAGE):
            chunk = entries[start : start + _PAGE]
            moved += await self.store.move_to_set(name, chunk, SortedSet.DEAD, score)
        if name is not SortedSet.DEAD:  # killed: they will not run again
            await self.removed([entry.payload for entry in entries])
        return moved

    async def mutate(self, cmd: str, target: str, flt: JobFilter | None) -> None:
        """MUTATE (faktory.md §3.7). ``flt`` None means the command had no ``filter`` key."""
        name = _set_named(target)
        if cmd not in _MUTATE_COMMANDS:
            raise CommandError("unknown mutate operation")
        _check_filter(flt)
        if cmd == "clear" or (cmd == "discard" and flt is None):
            await self._clear_set(name)
            return
        entries = await self._matching(name, flt or JobFilter())
        if cmd == "discard":
            for start in range(0, len(entries), _PAGE):
                await self.store.remove_from_set(name, entries[start : start + _PAGE])
            await self.removed([entry.payload for entry in entries])
        elif cmd == "kill":
            await self._kill_entries(name, entries)
        else:
            await self._requeue_entries(name, entries)

    async def purge_dead(self) -> int:
        """Drop dead jobs past their retention, and the oldest beyond ``dead_max_jobs``."""
        purged = 0
        watching = await self.watching_removals()
        while True:
            if watching:  # read them first: their locks go with them
                due = await self.store.due_entries(SortedSet.DEAD, time.time(), _PAGE)
                count = await self.store.remove_from_set(SortedSet.DEAD, due)
                await self.removed([entry.payload for entry in due])
                full = len(due) == _PAGE
            else:
                count = await self.store.purge_set(SortedSet.DEAD, time.time(), _PAGE)
                full = count == _PAGE
            purged += count
            if not full:
                break
        limit = self.config.dead_max_jobs
        if limit:
            excess = await self.store.set_size(SortedSet.DEAD) - limit
            while excess > 0:
                page = await self.store.list_set(SortedSet.DEAD, JobFilter(), 0, min(excess, _PAGE))
                removed = await self.store.remove_from_set(SortedSet.DEAD, page.items)
                await self.removed([entry.payload for entry in page.items])
                purged += removed
                excess -= len(page.items)
                if not page.items:
                    break
        return purged

    # ------------------------------------------------------------------ views

    async def workers(self) -> list[WorkerView]:
        records = await self.store.list_workers()
        busy: dict[str, int] = {}
        reservations = await self.store.list_reservations(0, 1_000_000)
        for reservation in reservations.items:
            busy[reservation.wid] = busy.get(reservation.wid, 0) + 1
        return [WorkerView(r, busy.get(r.wid, 0)) for r in sorted(records, key=lambda r: r.wid)]

    async def busy(self, offset: int, limit: int) -> Page[Reservation]:
        return await self.store.list_reservations(offset, limit)

    async def history(self, days: int) -> list[tuple[str, Counters]]:
        now = time.time()
        keys = [day_key(now - 86_400 * back) for back in range(days - 1, -1, -1)]
        counters = await self.store.daily_counters(keys)
        return [(key, counters.get(key, Counters(0, 0))) for key in keys]

    async def locate(self, jid: str, queue: str | None = None) -> JobLocation | None:
        """Where a job is now: reserved by a worker (``working``), in a sorted set, or waiting
        in a queue (``queued``; only ``queue`` is searched when given)."""
        located = await self._locate_fast(jid)
        if located is not None:
            return located
        found = await self._located_by_features((jid,), "locate")
        if jid in found:
            return found[jid]
        for queued in await self.store.find_queued((jid,), None if queue is None else [queue]):
            return JobLocation("queued", queued.queue, queued.payload, entry=queued)
        # fetched while the queues were searched: it is working now
        located = await self._reserved(jid)
        if located is not None:
            return located
        return (await self._located_by_features((jid,), "history")).get(jid)

    async def _located_by_features(self, jids: Sequence[str], hook: str) -> dict[str, JobLocation]:
        """What the features' ``locate`` (live places) or ``history`` (ends) say of jids."""
        found: dict[str, JobLocation] = {}
        for feature in self.features:
            rest = [jid for jid in jids if jid not in found]
            if not rest:
                break
            ask = feature.locate if hook == "locate" else feature.history
            found.update(await ask(rest))
        return found

    async def _locate_fast(self, jid: str) -> JobLocation | None:
        """The cheap lookups, by key: the reservations, the sorted sets, the jobs waiting
        for others (``custom.after``)."""
        located = await self._reserved(jid)
        if located is not None:
            return located
        for name in SortedSet:
            entries = await self.store.get_set_entries(name, (jid,))
            if entries:
                entry = entries[0]
                return JobLocation(str(name), entry.queue, entry.payload, score=entry.score)
        for waiting in (await self.store.get_waiting((jid,))).values():
            return JobLocation(WAITING, waiting.queue, waiting.payload)
        return None

    async def _reserved(self, jid: str) -> JobLocation | None:
        reservation = await self.store.get_reservation(jid)
        if reservation is None:
            return None
        return JobLocation(
            "working",
            reservation.queue,
            reservation.payload,
            reservation.wid,
            reserved_at=reservation.reserved_at,
            expires_at=reservation.expires_at,
        )

    async def locate_many(self, jids: Sequence[str]) -> dict[str, JobLocation]:
        """``locate`` for many jids: the sets are read in one call each and the queues are
        scanned once for all the jids not found elsewhere."""
        unique = list(dict.fromkeys(jids))
        found: dict[str, JobLocation] = {}
        for jid in unique:
            located = await self._reserved(jid)
            if located is not None:
                found[jid] = located
        for name in SortedSet:
            rest = [jid for jid in unique if jid not in found]
            for entry in await self.store.get_set_entries(name, rest) if rest else ():
                location = JobLocation(str(name), entry.queue, entry.payload, score=entry.score)
                found[entry.jid] = location
        rest = [jid for jid in unique if jid not in found]
        found.update(await self._located_by_features(rest, "locate"))
        rest = [jid for jid in unique if jid not in found]
        for waiting in (await self.store.get_waiting(rest)).values() if rest else ():
            found[waiting.jid] = JobLocation(WAITING, waiting.queue, waiting.payload)
        rest = [jid for jid in unique if jid not in found]
        for queued in await self.store.find_queued(rest) if rest else ():
            found[queued.jid] = JobLocation("queued", queued.queue, queued.payload, entry=queued)
        for jid in unique:  # fetched while the queues were searched
            located = found.get(jid) or await self._reserved(jid)
            if located is not None:
                found[jid] = located
        gone = [jid for jid in unique if jid not in found]
        found.update(await self._located_by_features(gone, "history"))
        return found

    async def act_on_jobs(self, action: str, jids: Sequence[str]) -> JobActionReport:
        """Retry (enqueue now), kill (move to the dead set) or delete jobs wherever they are.

        A job being worked on is refused (only its worker can finish it), as are a queued job
        asked to retry (it is waiting already) or to be killed (delete it instead)."""
        if action not in JOB_ACTIONS:
            raise ValueError(f"unknown job action {action!r}: use one of {', '.join(JOB_ACTIONS)}")
        locations = await self.locate_many(jids)
        report = JobActionReport({}, {})
        in_sets: dict[SortedSet, list[str]] = {}
        in_queues: dict[str, list[str]] = {}
        for jid in dict.fromkeys(jids):
            located = locations.get(jid)
            if located is None:
                report.refused[jid] = "not found"
                continue
            report.where[jid] = located.where
            reason = _refusal(action, located)
            if reason:
                report.refused[jid] = reason
            elif located.where == "queued":
                in_queues.setdefault(located.queue, []).append(jid)
            else:
                in_sets.setdefault(SortedSet(located.where), []).append(jid)
        for name, chosen in in_sets.items():
            if action == "retry":
                report.changed += await self.requeue(name, chosen)
            elif action == "kill":
                report.changed += await self.kill(name, chosen)
            else:
                report.changed += await self.delete(name, chosen)
        for queue, chosen in in_queues.items():
            report.changed += await self.delete_queued(queue, chosen)
        return report

    async def clear_queue(self, name: str) -> int:
        """Delete every job of a queue; the queue stays (paused, if it was)."""
        return await self.store.clear_queue(name)


def _refusal(action: str, located: JobLocation) -> str:
    """Why ``action`` cannot be done to a job where it is ("" when it can)."""
    if located.where == "working":
        return f"being worked on by {located.wid}: only its worker can finish it"
    if located.where == WAITING:
        return "waiting for other jobs (custom.after): it runs when they have succeeded"
    if located.where == "aggregating":
        return "waiting in an aggregating group: cancel it instead"
    if located.where != "queued" and located.where not in _SET_NAMES:
        return f"it is {located.where}: there is nothing to {action}"
    if located.where == "queued" and action == "retry":
        return f"already waiting in queue {located.queue}"
    if located.where == "queued" and action == "kill":
        return f"waiting in queue {located.queue}: delete it instead"
    if located.where == SortedSet.COMPLETED and action != "delete":
        return "completed: it ran and succeeded already (it can only be deleted)"
    return ""


def _latency(head: bytes | None, now: float) -> float:
    if head is None:
        return 0.0
    enqueued_at = decode_job(head).enqueued_at
    if not enqueued_at:
        return 0.0
    try:
        return max(0.0, now - parse_time(enqueued_at))
    except ValueError:
        return 0.0
