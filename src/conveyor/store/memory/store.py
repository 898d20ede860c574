"""The in-memory store: plain dicts, deques and sorted lists in this process.

For tests and experiments: fast, exact, and gone when the process ends. Every method completes
without awaiting anything, so each one is trivially atomic on the event loop.

Layout:

* queues: ``name -> deque[QueuedJob]`` (a key exists from the first enqueue until removal);
* sorted sets: per set a ``jid -> SetEntry`` dict plus a list of ``(score, jid)`` kept sorted
  with ``bisect``, so due-queries and pages are slices;
* reservations: ``jid -> Reservation``;
* counters: totals plus ``day -> [processed, failures]``;
* batches and job marks (``memory/batches.py``), aggregating groups (``memory/groups.py``)
  and records (``memory/records.py``);
* workers: ``wid -> WorkerRecord`` (copies, so callers cannot change stored state by accident).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TypeVar

from conveyor.store.base import (
    DURABLE,
    Counters,
    Durability,
    FailOutcome,
    JobFilter,
    Page,
    QueuedJob,
    ReadyListener,
    Reservation,
    SetEntry,
    SetMove,
    SortedSet,
    Store,
    WorkerRecord,
)
from conveyor.store.filters import filter_entries
from conveyor.store.memory.batches import MemoryBatches
from conveyor.store.memory.cancels import MemoryCancels
from conveyor.store.memory.completed import MemoryCompletions
from conveyor.store.memory.counts import MemoryCounts
from conveyor.store.memory.deadlines import MemoryDeadlines
from conveyor.store.memory.endings import MemoryEndings
from conveyor.store.memory.groups import MemoryGroups
from conveyor.store.memory.limits import MemoryLimits
from conveyor.store.memory.records import MemoryRecords
from conveyor.store.signals import LocalSignals
from conveyor.store.workers import LocalWorkers

__all__ = ["MemoryStore"]

_T = TypeVar("_T")


class _SortedSet:
    """One sorted set: entries by jid plus their ``(score, jid)`` keys in order.

    The last filtered listing is cached until the set changes, so paging through a filtered
    set (MUTATE) filters it once instead of once per page.
    """

    __slots__ = ("_matching", "entries", "keys", "version")

    def __init__(self) -> None:
        self.entries: dict[str, SetEntry] = {}
        self.keys: list[tuple[float, str]] = []
        self._matching: tuple[JobFilter, bool, list[SetEntry]] | None = None
        self.version = 0  # bumped on every change: a filtering that awaited may be stale

    def add(self, entry: SetEntry) -> None:
        self.discard(entry.jid)
        self.entries[entry.jid] = entry
        bisect.insort(self.keys, (entry.score, entry.jid))
        self._changed()

    def discard(self, jid: str) -> SetEntry | None:
        old = self.entries.pop(jid, None)
        if old is not None:
            key = (old.score, old.jid)
            del self.keys[bisect.bisect_left(self.keys, key)]
            self._changed()
        return old

    def take(self, entry: SetEntry) -> SetEntry | None:
        """Remove and return the entry only if the same jid is present with the same score."""
        current = self.entries.get(entry.jid)
        if current is None or current.score != entry.score:
            return None
        return self.discard(entry.jid)

    def due(self, before: float, limit: int) -> list[tuple[float, str]]:
        """Keys of up to ``limit`` entries with ``score <= before``, lowest first."""
        end = bisect.bisect_right(self.keys, (before, "\U0010ffff"))
        return self.keys[: min(end, max(limit, 0))]

    def purge(self, before: float, limit: int) -> int:
        doomed = self.due(before, limit)
        for _score, jid in doomed:
            del self.entries[jid]
        del self.keys[: len(doomed)]
        self._changed()
        return len(doomed)

    def _changed(self) -> None:
        self._matching = None
        self.version += 1

    async def matching(self, flt: JobFilter, descending: bool) -> list[SetEntry]:
        if self._matching is not None and self._matching[:2] == (flt, descending):
            return self._matching[2]
        keys = reversed(self.keys) if descending else self.keys
        version = self.version
        # filter_entries lets other tasks run on long scans: a snapshot of the entries, and
        # the result kept only if the set did not change meanwhile
        found = await filter_entries(flt, [self.entries[jid] for _score, jid in keys])
        if self.version == version:
            self._matching = (flt, descending, found)
        return found

    def clear(self) -> int:
        count = len(self.entries)
        self.entries.clear()
        self.keys.clear()
        self._changed()
        return count


class MemoryStore(
    LocalWorkers,
    MemoryRecords,
    MemoryLimits,
    MemoryEndings,
    MemoryCounts,
    MemoryDeadlines,
    MemoryBatches,
    MemoryCancels,
    MemoryGroups,
    MemoryCompletions,
    LocalSignals,
    Store,
):
    """Everything in this process; nothing survives a restart."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[QueuedJob]] = {}
        self._paused: set[str] = set()
        self._sets: dict[SortedSet, _SortedSet] = {name: _SortedSet() for name in SortedSet}
        self._reservations: dict[str, Reservation] = {}
        self._processed = 0
        self._failures = 0
        self._daily: dict[str, list[int]] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._listener: ReadyListener | None = None
        self._init_batches()
        self._init_groups()

    # ----------------------------------------------------------------- life cycle

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def set_ready_listener(self, listener: ReadyListener) -> None:
        self._listener = listener

    def _notify(self, queues: Iterable[str]) -> None:
        if self._listener is None:
            return
        for name in dict.fromkeys(queues):  # once per queue, in first-seen order
            self._listener(name)

    def _push(self, job: QueuedJob) -> None:
        queue = self._queues.get(job.queue)
        if queue is None:
            queue = self._queues[job.queue] = deque()
        queue.append(job)

    # ----------------------------------------------------------------- adding jobs

    in_process = True

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> None:
        self.enqueue_now(jobs)

    def enqueue_now(self, jobs: Sequence[QueuedJob]) -> Durability:
        for job in jobs:
            self._push(job)
        self._notify(job.queue for job in jobs)
        return DURABLE

    async def add_to_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> None:
        target = self._sets[name]
        for entry in entries:
            target.add(entry)

    # ----------------------------------------------------------------- working

    def takes_hand_off(self, queue: str) -> bool:
        return queue not in self._paused

    def hand_off(self, jobs: Sequence[QueuedJob], wid: str, now: float) -> Durability:
        name = jobs[0].queue
        self._queues.setdefault(name, deque())  # known from its first job, as after a push
        for job in jobs:
            self._reservations[job.jid] = Reservation(
                job.jid, name, job.payload, wid, now, now + job.reserve_for
            )
        return DURABLE

    async def reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        return self.reserve_now(queues, wid, now, count)

    def reserve_now(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        taken: list[Reservation] = []
        for name in queues:
            queue = self._queues.get(name)
            if not queue or name in self._paused:
                continue
            while queue and len(taken) < count:
                job = queue.popleft()
                reservation = Reservation(
                    jid=job.jid,
                    queue=job.queue,
                    payload=job.payload,
                    wid=wid,
                    reserved_at=now,
                    expires_at=now + job.reserve_for,
                )
                self._reservations[job.jid] = reservation
                taken.append(reservation)
            if len(taken) >= count:
                break
        return taken

    def _count(self, day: str, processed: int, failures: int) -> None:
        self._processed += processed
        self._failures += failures
        pair = self._daily.setdefault(day, [0, 0])
        pair[0] += processed
        pair[1] += failures

    async def ack(self, jids: Sequence[str], day: str) -> int:
        return self.ack_now(jids, day)

    def ack_now(self, jids: Sequence[str], day: str) -> int:
        ended = sum(1 for jid in jids if self._reservations.pop(jid, None) is not None)
        if ended:
            self._count(day, ended, 0)
        return ended

    async def fail(self, jid: str, outcome: FailOutcome, day: str) -> bool:
        if self._reservations.pop(jid, None) is None:
            return False
        self._count(day, 1, 1)
        if outcome.target is not None:
            entry = SetEntry(outcome.score, jid, outcome.payload, outcome.queue, outcome.jobtype)
            self._sets[outcome.target].add(entry)
        return True

    async def get_reservation(self, jid: str) -> Reservation | None:
        return self._reservations.get(jid)

    async def expired_reservations(self, now: float, limit: int) -> list[Reservation]:
        expired = [r for r in self._reservations.values() if r.expires_at <= now]
        expired.sort(key=lambda r: (r.expires_at, r.jid))
        return expired[: max(limit, 0)]

    async def extend_reservation(self, jid: str, expires_at: float) -> bool:
        current = self._reservations.get(jid)
        if current is None:
            return False
        self._reservations[jid] = dataclasses.replace(current, expires_at=expires_at)
        return True

    async def list_reservations(self, offset: int, limit: int) -> Page[Reservation]:
        ordered = sorted(self._reservations.values(), key=lambda r: (r.reserved_at, r.jid))
        return Page(_window(ordered, offset, limit), len(ordered))

    # ----------------------------------------------------------------- sorted sets

    async def due_entries(self, name: SortedSet, now: float, limit: int) -> list[SetEntry]:
        target = self._sets[name]
        return [target.entries[jid] for _score, jid in target.due(now, limit)]

    async def move_to_queue(self, name: SortedSet, moves: Sequence[SetMove]) -> int:
        source = self._sets[name]
        moved: list[str] = []
        for move in moves:
            if source.take(move.entry) is not None:
                self._push(move.job)
                moved.append(move.job.queue)
        self._notify(moved)
        return len(moved)

    async def move_to_set(
        self, source: SortedSet, entries: Sequence[SetEntry], target: SortedSet, score: float
    ) -> int:
        origin, destination = self._sets[source], self._sets[target]
        moved = 0
        for entry in entries:
            current = origin.take(entry)
            if current is not None:
                destination.add(dataclasses.replace(current, score=score))
                moved += 1
        return moved

    async def remove_from_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        target = self._sets[name]
        return sum(1 for entry in entries if target.take(entry) is not None)

    async def purge_set(self, name: SortedSet, before: float, limit: int) -> int:
        return self._sets[name].purge(before, limit)

    async def clear_set(self, name: SortedSet) -> int:
        return self._sets[name].clear()

    async def set_size(self, name: SortedSet) -> int:
        return len(self._sets[name].entries)

    async def list_set(
        self,
        name: SortedSet,
        flt: JobFilter,
        offset: int,
        limit: int,
        *,
        descending: bool = False,
    ) -> Page[SetEntry]:
        target = self._sets[name]
        if flt.is_empty:
            keys = target.keys[::-1] if descending else target.keys
            page = [target.entries[jid] for _score, jid in _window(keys, offset, limit)]
            return Page(page, len(keys))
        matching = await target.matching(flt, descending)
        return Page(_window(matching, offset, limit), len(matching))

    async def get_set_entries(self, name: SortedSet, jids: Sequence[str]) -> list[SetEntry]:
        entries = self._sets[name].entries
        return [entries[jid] for jid in dict.fromkeys(jids) if jid in entries]

    # ----------------------------------------------------------------- queues

    async def queue_sizes(self) -> dict[str, int]:
        return {name: len(queue) for name, queue in self._queues.items()}

    async def queue_heads(self, names: Sequence[str]) -> dict[str, bytes | None]:
        heads: dict[str, bytes | None] = {}
        for name in names:
            queue = self._queues.get(name)
            heads[name] = queue[0].payload if queue else None
        return heads

    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        queue = self._queues.get(name)
        if not queue:
            return Page([], 0)
        start = max(offset, 0)
        items = list(itertools.islice(queue, start, start + max(limit, 0)))
        return Page(items, len(queue))

    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        queue = self._queues.get(name)
        if not queue or not jids:
            return 0
        doomed = frozenset(jids)
        kept = deque(job for job in queue if job.jid not in doomed)
        deleted = len(queue) - len(kept)
        self._queues[name] = kept
        return deleted

    async def find_queued(
        self, jids: Sequence[str], queues: Sequence[str] | None = None
    ) -> list[QueuedJob]:
        wanted = set(jids)
        found: list[QueuedJob] = []
        for name in list(self._queues) if queues is None else queues:
            for job in self._queues.get(name, ()):
                if job.jid in wanted:
                    wanted.discard(job.jid)
                    found.append(job)
        return found

    async def clear_queue(self, name: str) -> int:
        queue = self._queues.get(name)
        if not queue:
            return 0
        deleted = len(queue)
        queue.clear()
        return deleted

    async def paused_queues(self) -> set[str]:
        return set(self._paused)

    async def set_paused(self, names: Sequence[str], paused: bool) -> None:
        known = [name for name in names if name in self._queues]
        if paused:
            self._paused.update(known)
            return
        resumed = [name for name in known if name in self._paused]
        self._paused.difference_update(resumed)
        self._notify(resumed)  # a resumed queue may have jobs waiting fetchers can take now

    async def remove_queues(self, names: Sequence[str]) -> None:
        for name in names:
            self._queues.pop(name, None)
            self._paused.discard(name)

    # ----------------------------------------------------------------- counters

    async def counters(self) -> Counters:
        return Counters(self._processed, self._failures)

    async def daily_counters(self, days: Sequence[str]) -> dict[str, Counters]:
        result: dict[str, Counters] = {}
        for day in days:
            processed, failures = self._daily.get(day, (0, 0))
            result[day] = Counters(processed, failures)
        return result

    # ----------------------------------------------------------------- admin

    async def flush(self) -> None:
        self._queues.clear()
        self._paused.clear()
        for target in self._sets.values():
            target.clear()
        self._reservations.clear()
        self._processed = self._failures = 0
        self._daily.clear()
        self._flush_records()
        self._flush_limits()
        self._flush_counts()
        self._flush_deadlines()
        self._flush_batches()
        self._init_groups()


def _window(items: Sequence[_T], offset: int, limit: int) -> list[_T]:
    start = max(offset, 0)
    return list(items[start : start + max(limit, 0)])
