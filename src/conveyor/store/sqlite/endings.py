"""Endings (``conveyor.store.endings``) in SQLite: ``sql/endings.sql``; a kept job's entry is
written into ``set_entries`` (name ``completed``) and the marks of batch and tracked jobs move
(``batches.py``) in the savepoint that ends the reservations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.batches import EndContext, Fired
from conveyor.store.endings import Acked, Endings
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteEndings"]

_SQL = load_queries("endings.sql")


class SQLiteEndings(Endings):
    """Mixed into ``SQLiteStore``; writes join its shared transaction, not awaited (as ACK)."""

    if TYPE_CHECKING:  # SQLiteStore's
        _db: Database
        _sizes: dict[str, int]

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        def _put_entries(
            self, conn: sqlite3.Connection, name: SortedSet, entries: list[SetEntry]
        ) -> int: ...

        def _resize(self, name: SortedSet, delta: int) -> None: ...

        async def release_slots(self, ended: Sequence[Reservation]) -> None: ...

        def _end_acked(
            self, jids: Sequence[str], ends: EndContext, keep: Mapping[str, SetEntry]
        ) -> tuple[list[Reservation], Fired]: ...

    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        keep: Sequence[SetEntry] = (),
    ) -> Acked:
        if not jids:
            return Acked([])
        kept = {entry.jid: entry for entry in keep}
        if ends is not None:  # the kept entries and the marks in the same savepoint
            ended, fired = self._end_acked(jids, ends, kept)
        elif kept:
            ended, fired = self._end_kept(jids, kept), Fired()
        else:
            ended, fired = self._end_rows(jids), Fired()
        committed = self._db.pending
        if ended:
            self._count(day, len(ended), 0)
        if self._db.careful:
            await committed  # during an outage, answered only once it is recorded (as ack)
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
    ) -> Acked | None:
        if not jids or self._db.careful:
            return None  # during an outage an ACK waits for its commit
        if ends is not None:
            ended, fired = self._end_acked(jids, ends, {})
        else:
            ended, fired = self._end_rows(jids), Fired()
        if ended:
            self._count(day, len(ended), 0)
        return Acked(ended, fired)

    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        if not jids:
            return []
        ended = self._end_rows(jids)
        committed = self._db.pending
        if self._db.careful:
            await committed  # during an outage, answered only once it is recorded (as ack)
        return ended

    def _end_rows(self, jids: Sequence[str]) -> list[Reservation]:
        """Delete these reservations, returning those that existed (one statement, or one
        savepoint for several)."""
        if len(jids) == 1:  # one statement is atomic by itself: no savepoint (as ack)
            row = self._db.write(_SQL["end_returning"], (jids[0],)).fetchone()
            return [Reservation(*row)] if row is not None else []
        ended = []
        with self._db.atomic() as conn:
            for jid in jids:
                row = conn.execute(_SQL["end_returning"], (jid,)).fetchone()
                if row is not None:
                    ended.append(Reservation(*row))
        return ended

    def _end_kept(self, jids: Sequence[str], keep: Mapping[str, SetEntry]) -> list[Reservation]:
        """``_end_rows``, writing the entries of the jobs of ``keep`` whose reservation ended
        into the completed set in the same savepoint."""
        ended = []
        with self._db.atomic() as conn:
            for jid in jids:
                row = conn.execute(_SQL["end_returning"], (jid,)).fetchone()
                if row is not None:
                    ended.append(Reservation(*row))
            kept = [keep[r.jid] for r in ended if r.jid in keep]
            grown = self._put_entries(conn, SortedSet.COMPLETED, kept) if kept else 0
        if grown:
            self._resize(SortedSet.COMPLETED, grown)
        return ended

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
