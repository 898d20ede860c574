"""Limits (``conveyor.store.limits``) in memory: throttle slots and buckets in dicts."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.limits import (
    InProcessSlots,
    Limited,
    Limits,
    QueueLimit,
    SlotTable,
)

__all__ = ["MemoryLimits"]


class MemoryLimits(InProcessSlots, Limits):
    """Mixed into ``MemoryStore`` (whose queues and reservations it uses). Every method
    completes without awaiting, so each is atomic on the event loop."""

    if TYPE_CHECKING:  # MemoryStore's
        _queues: dict[str, deque[QueuedJob]]
        _paused: set[str]
        _reservations: dict[str, Reservation]

        def _push(self, job: QueuedJob) -> None: ...

        def _notify(self, queues: Iterable[str]) -> None: ...

    def _limit_slots(self, queue: str, limit: QueueLimit) -> SlotTable:
        every: dict[str, SlotTable] = self.__dict__.setdefault("_throttle_slots", {})
        table = every.get(queue)
        if table is None:
            table = every[queue] = SlotTable()
        return table

    def _prune(self, slots: SlotTable, now: float) -> None:
        slots.expire(now)
        slots.keep(self._reservations.keys())

    async def enqueue_bounded(
        self, jobs: Sequence[QueuedJob], bounds: Mapping[str, int]
    ) -> list[QueuedJob]:
        refused: list[QueuedJob] = []
        stored: list[str] = []
        for job in jobs:
            bound = bounds.get(job.queue)
            if bound is not None and len(self._queues.get(job.queue, ())) >= bound:
                refused.append(job)
            else:
                self._push(job)
                stored.append(job.queue)
        self._notify(stored)
        return refused

    async def reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        return self.reserve_limited_now(queues, wid, now, count, limits)

    def reserve_limited_now(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        taken: list[Reservation] = []
        blocked: dict[str, float | None] = {}
        for name in dict.fromkeys(queues):
            want = count - len(taken)
            if want <= 0:
                break
            queue = self._queues.get(name)
            if not queue or name in self._paused:
                continue
            limit = limits.get(name)
            if limit is not None and limit.limits_fetch:
                room, wait = self._limit_room(name, limit, wid, now)
                if room < 1:
                    blocked[name] = wait
                    continue
                want = min(want, room)
            got: list[Reservation] = []
            while queue and len(got) < want:
                job = queue.popleft()
                reservation = Reservation(
                    job.jid, name, job.payload, wid, now, now + job.reserve_for
                )
                self._reservations[job.jid] = reservation
                got.append(reservation)
            if limit is not None and limit.limits_fetch:
                self._take_limited(name, limit, got, now)
            taken += got
        return Limited(taken, blocked)
