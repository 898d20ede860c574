"""Endings (``conveyor.store.endings``) in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.batches import EndContext, Fired
from conveyor.store.endings import Acked, Endings, Settle
from conveyor.store.records import Record

__all__ = ["MemoryEndings"]


class MemoryEndings(Endings):
    """Mixed into ``MemoryStore``, whose reservations, sets and counters it uses."""

    if TYPE_CHECKING:  # MemoryStore's
        _reservations: dict[str, Reservation]
        _sets: dict[SortedSet, Any]
        _queues: dict[str, deque[QueuedJob]]

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        async def release_slots(self, ended: Sequence[Reservation]) -> None: ...

        def _end_acked(self, ended: Sequence[Reservation], ctx: EndContext) -> Fired: ...

        def _space(self, space: str) -> dict[str, Record]: ...

        def _keep(self, stored: dict[str, Record], space: str, record: Record) -> None: ...

        def _keep_many(self, space: str, records: Sequence[Record]) -> None: ...

    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        keep: Sequence[SetEntry] = (),
        settle: Settle | None = None,
    ) -> Acked:
        ended = self._end_settled(jids, day, keep, settle)  # no await before all is stored
        if not ended:
            return Acked(ended)
        fired = self._end_acked(ended, ends) if ends is not None else Fired()  # same step
        freed = [r for r in ended if r.queue in throttled]
        if freed:
            await self.release_slots(freed)
        return Acked(ended, fired)

    def ack_returning_now(
        self,
        jids: Sequence[str],
        day: str,
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        settle: Settle | None = None,
    ) -> Acked:
        ended = self._end_settled(jids, day, (), settle)  # one job: _end_one
        if not ended or ends is None:
            return Acked(ended)
        return Acked(ended, self._end_acked(ended, ends))

    def _end_settled(
        self, jids: Sequence[str], day: str, keep: Sequence[SetEntry], settle: Settle | None
    ) -> list[Reservation]:
        """End and count these reservations, keeping the entries of ``keep`` and storing
        what ``settle`` asks (asked before anything changes: all of it or nothing)."""
        if len(jids) == 1 and not keep:
            return self._end_one(jids[0], day, settle)
        reservations = self._reservations
        found = (reservations.get(jid) for jid in jids)
        ended = list({r.jid: r for r in found if r is not None}.values())
        if not ended:
            return ended
        kept = {entry.jid: entry for entry in keep}
        records: list[Record] = []
        space = ""
        if settle is not None:
            space = settle.space
            for reservation in ended:
                record, entry = settle(reservation)
                if record is not None:
                    records.append(record)
                if entry is not None:
                    kept[entry.jid] = entry
        for reservation in ended:
            del reservations[reservation.jid]
        if kept:
            completed = self._sets[SortedSet.COMPLETED]
            for reservation in ended:
                kept_entry = kept.get(reservation.jid)
                if kept_entry is not None:
                    completed.add(kept_entry)
        if records:
            self._keep_many(space, records)
        self._count(day, len(ended), 0)
        return ended

    def _end_one(self, jid: str, day: str, settle: Settle | None) -> list[Reservation]:
        """``_end_settled`` of one ACK's one job (the usual ACK that carries a result)."""
        reservation = self._reservations.get(jid)
        if reservation is None:
            return []
        record = entry = None
        if settle is not None:
            record, entry = settle(reservation)  # may raise: nothing changed yet
        del self._reservations[jid]
        if entry is not None:
            self._sets[SortedSet.COMPLETED].add(entry)
        if record is not None:
            assert settle is not None
            space = settle.space
            self._keep(self._space(space), space, record)
        self._count(day, 1, 0)
        return [reservation]

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
