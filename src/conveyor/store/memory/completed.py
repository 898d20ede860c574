"""Completed jobs (``conveyor.store.completed``) in memory (the ACK that keeps a job:
``MemoryEndings.ack_returning`` with ``keep``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import Reservation
from conveyor.store.completed import Completions

__all__ = ["MemoryCompletions"]


class MemoryCompletions(Completions):
    """Mixed into ``MemoryStore``, whose reservations it reads."""

    if TYPE_CHECKING:  # MemoryStore's
        _reservations: dict[str, Reservation]

    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        found = (self._reservations.get(jid) for jid in dict.fromkeys(jids))
        return [reservation for reservation in found if reservation is not None]
