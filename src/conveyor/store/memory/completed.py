"""Completed jobs (``conveyor.store.completed``) in memory."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import Reservation, SetEntry, SortedSet
from conveyor.store.completed import Completions

__all__ = ["MemoryCompletions"]


class MemoryCompletions(Completions):
    """Mixed into ``MemoryStore``, whose reservations, sets and counters it uses."""

    if TYPE_CHECKING:  # MemoryStore's
        _reservations: dict[str, Reservation]
        _sets: dict[SortedSet, Any]

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        async def release_slots(self, ended: Sequence[Reservation]) -> None: ...

    async def complete(
        self,
        entries: Sequence[SetEntry],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        completed = self._sets[SortedSet.COMPLETED]
        ended: list[Reservation] = []
        for entry in entries:
            reservation = self._reservations.pop(entry.jid, None)
            if reservation is not None:
                completed.add(entry)
                ended.append(reservation)
        if ended:
            self._count(day, len(ended), 0)
            freed = [r for r in ended if r.queue in throttled]
            if freed:
                await self.release_slots(freed)
        return ended

    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        found = (self._reservations.get(jid) for jid in dict.fromkeys(jids))
        return [reservation for reservation in found if reservation is not None]
