"""Endings (``conveyor.store.endings``) in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.endings import Endings

__all__ = ["MemoryEndings"]


class MemoryEndings(Endings):
    """Mixed into ``MemoryStore``, whose reservations and counters it uses."""

    if TYPE_CHECKING:  # MemoryStore's
        _reservations: dict[str, Reservation]
        _queues: dict[str, deque[QueuedJob]]

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        async def release_slots(self, ended: Sequence[Reservation]) -> None: ...

    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        ended = await self.discard_reservations(jids)
        if ended:
            self._count(day, len(ended), 0)
            freed = [r for r in ended if r.queue in throttled]
            if freed:
                await self.release_slots(freed)
        return ended

    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        pop = self._reservations.pop
        return [r for r in (pop(jid, None) for jid in jids) if r is not None]

    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        jobs = self._queues.get(queue)
        if not jobs or not jids:
            return []
        wanted = frozenset(jids)
        taken = [job for job in jobs if job.jid in wanted]
        if taken:
            self._queues[queue] = deque(job for job in jobs if job.jid not in wanted)
        return taken
