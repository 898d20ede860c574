"""Cancels (``conveyor.store.cancels``) in memory: the job's removal, its record and its count
in one step without an await, so atomic on the event loop."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.cancels import (
    CANCELLED_SPACE,
    COUNTS_SPACE,
    NOTICES_SPACE,
    TOTAL_KEY,
    CancelOutcome,
    Cancels,
    CancelTarget,
    decode_count,
    encode_count,
)
from conveyor.store.records import Record

if TYPE_CHECKING:
    from conveyor.store.memory.groups import _Group
    from conveyor.store.memory.store import _SortedSet

__all__ = ["MemoryCancels"]


class MemoryCancels(Cancels):
    """Mixed into ``MemoryStore``, whose queues, sets, reservations, groups and records it
    changes."""

    if TYPE_CHECKING:  # MemoryStore's and its other mixins'
        _queues: dict[str, deque[QueuedJob]]
        _sets: dict[SortedSet, _SortedSet]
        _reservations: dict[str, Reservation]
        _groups: dict[str, _Group]

        def _space(self, space: str) -> dict[str, Record]: ...

        def _keep(self, stored: dict[str, Record], space: str, record: Record) -> None: ...

        def _remove_members(self, key: str, jids: Iterable[str]) -> None: ...

    async def cancel_job(
        self,
        target: CancelTarget,
        record: Record,
        notice: Record | None,
        day: str,
        now: float,
    ) -> CancelOutcome:
        if not self._take_target(target):
            found = self._space(CANCELLED_SPACE).get(target.jid)
            return CancelOutcome.ALREADY if found and found.live(now) else CancelOutcome.MOVED
        self._keep(self._space(CANCELLED_SPACE), CANCELLED_SPACE, record)
        if notice is not None:
            self._keep(self._space(NOTICES_SPACE), NOTICES_SPACE, notice)
        counts = self._space(COUNTS_SPACE)
        for key in (TOTAL_KEY, day):
            current = counts.get(key)
            count = decode_count(current.value if current else None) + 1
            self._keep(counts, COUNTS_SPACE, Record(key, encode_count(count)))
        return CancelOutcome.CANCELLED

    def _take_target(self, target: CancelTarget) -> bool:
        """Remove the job from where ``target`` says, if it is still there."""
        jid = target.jid
        if target.where == "queued":
            queue = self._queues.get(target.queue)
            if queue is None:
                return False
            for job in queue:
                if job.jid == jid and (target.entry is None or job == target.entry):
                    queue.remove(job)
                    return True
            return False
        if target.where == "working":
            reservation = self._reservations.get(jid)
            if reservation is None or reservation.wid != target.wid:
                return False
            del self._reservations[jid]
            return True
        if target.where == "aggregating":
            group = self._groups.get(target.group)
            if group is None or jid not in group.members:
                return False
            self._remove_members(target.group, [jid])
            return True
        entry = SetEntry(target.score, jid, b"")
        return self._sets[SortedSet(target.where)].take(entry) is not None
