"""Endings (``conveyor.store.endings``) in SQLite: ``sql/endings.sql``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Collection, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.endings import Endings
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteEndings"]

_SQL = load_queries("endings.sql")


class SQLiteEndings(Endings):
    """Mixed into ``SQLiteStore``; writes join its shared transaction, not awaited (as ACK)."""

    if TYPE_CHECKING:  # SQLiteStore's
        _db: Database
        _sizes: dict[str, int]

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        def _free_slots(self, ended: Sequence[Reservation]) -> None: ...

    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        if not jids:
            return []
        ended, committed = self._discard(jids)
        if self._db.careful:
            await committed  # during an outage, answered only once it is recorded (as ack)
        if ended:
            self._count(day, len(ended), 0)
            if throttled:
                freed = [r for r in ended if r.queue in throttled]
                if freed:
                    self._free_slots(freed)
        return ended

    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        if not jids:
            return []
        ended, committed = self._discard(jids)
        if self._db.careful:
            await committed  # during an outage, answered only once it is recorded (as ack)
        return ended

    def _discard(self, jids: Sequence[str]) -> tuple[list[Reservation], Awaitable[None]]:
        """End these reservations in this step; returns those that existed, and the commit
        that records it."""
        ended = []
        if len(jids) == 1:  # one statement is atomic by itself: no savepoint (as ack)
            row = self._db.write(_SQL["end_returning"], (jids[0],)).fetchone()
            ended = [Reservation(*row)] if row is not None else []
        else:
            with self._db.atomic() as conn:
                for jid in jids:
                    row = conn.execute(_SQL["end_returning"], (jid,)).fetchone()
                    if row is not None:
                        ended.append(Reservation(*row))
        return ended, self._db.pending

    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        if self._sizes.get(queue, 0) == 0 or not jids:
            return []
        with self._db.atomic() as conn:
            rows = conn.execute(_SQL["take_queued"], (queue, json.dumps(list(jids)))).fetchall()
        committed = self._db.pending
        rows.sort()
        self._sizes[queue] -= len(rows)
        await committed
        return [
            QueuedJob(queue, jid, payload, reserve_for) for _seq, jid, reserve_for, payload in rows
        ]
