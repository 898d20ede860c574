"""Endings (``conveyor.store.endings``) in SQLite: ``sql/endings.sql``; a kept job's entry is
written into ``set_entries`` (name ``completed``), what a ``Settle`` asks for (a job's result
record) into ``records``, and the marks of batch and tracked jobs move (``batches.py``) in the
savepoint that ends the reservations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.batches import EndContext, Fired
from conveyor.store.endings import Acked, Endings, Settle
from conveyor.store.sqlite import damage
from conveyor.store.sqlite.damage import Damaged, intact
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteEndings"]

_SQL = load_queries("endings.sql")
_PUT_RECORD = load_queries("records.sql")["put"]


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
            self,
            jids: Sequence[str],
            ends: EndContext,
            keep: Mapping[str, SetEntry],
            settle: Settle | None,
        ) -> tuple[list[Reservation], Fired]: ...

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
        if not jids:
            return Acked([])
        kept = {entry.jid: entry for entry in keep}
        if ends is not None:  # the kept entries and the marks in the same savepoint
            ended, fired = self._end_acked(jids, ends, kept, settle)
        elif kept or settle is not None:
            ended, fired = self._end_kept(jids, kept, settle), Fired()
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
        settle: Settle | None = None,
    ) -> Acked | None:
        if not jids or self._db.careful:
            return None  # during an outage an ACK waits for its commit (ack_returning)
        if ends is not None:
            ended, fired = self._end_acked(jids, ends, {}, settle)
        elif settle is not None:
            ended, fired = self._end_kept(jids, {}, settle), Fired()
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

    def _end_kept(
        self, jids: Sequence[str], keep: Mapping[str, SetEntry], settle: Settle | None
    ) -> list[Reservation]:
        """``_end_rows``, keeping and storing what ``_keep_ended`` does, in one savepoint (one
        job's ACK that stores something: ``_settle_one``, without)."""
        if settle is not None and len(jids) == 1:
            ended, grown, damaged = self._settle_one(jids[0], keep, settle)
        else:
            with self._db.atomic() as conn:
                ended, grown, damaged = self._keep_ended(conn, jids, keep, settle)
        if grown:
            self._resize(SortedSet.COMPLETED, grown)
        if damaged:
            damage.report(damaged)
        return ended

    def _keep_ended(
        self,
        conn: sqlite3.Connection,
        jids: Sequence[str],
        keep: Mapping[str, SetEntry],
        settle: Settle | None,
    ) -> tuple[list[Reservation], int, list[Damaged]]:
        """Inside the ACK's savepoint: delete these reservations, put the entries of ``keep``
        whose reservation ended into the completed set, and store what ``settle`` asks for
        each reservation ended. Returns the reservations ended, how much the completed set
        grew, and the reservations found damaged: with ``settle`` (which copies payloads into
        what it stores) each payload is checked, and a damaged one is moved aside, neither
        settled nor counted (as a read of it would have: ``reservations_of``)."""
        ended: list[Reservation] = []
        damaged: list[Damaged] = []
        if settle is None:
            for jid in jids:
                row = conn.execute(_SQL["end_returning"], (jid,)).fetchone()
                if row is not None:
                    ended.append(Reservation(*row))
            kept = [keep[r.jid] for r in ended if r.jid in keep]
            grown = self._put_entries(conn, SortedSet.COMPLETED, kept) if kept else 0
            return ended, grown, damaged
        if len(jids) == 1:
            rows = conn.execute(_SQL["end_checked"], (jids[0],)).fetchall()
        else:  # one statement: a third of the cost of one per jid
            rows = conn.execute(_SQL["end_checked_many"], (json.dumps(list(jids)),)).fetchall()
            order = {jid: index for index, jid in enumerate(jids)}
            rows.sort(key=lambda row: order[row[0]])
        return self._settled(conn, rows, keep, settle)

    def _settle_one(
        self, jid: str, keep: Mapping[str, SetEntry], settle: Settle
    ) -> tuple[list[Reservation], int, list[Damaged]]:
        """``_keep_ended`` of one job's ACK (the usual ACK carrying a result) without a
        savepoint: the reservation ends by a statement of its own (atomic by itself), then
        what ``settle`` asks for is stored (``_settled``: the record's row, the completed
        entry). Should anything fail after the DELETE held (an insert, ``settle`` raising),
        the whole open transaction is rolled back as a failed commit is (``Database.abandon``:
        an outage starts): no commit holds the ACK without its result, and the ACK sent again
        once commits work finds the reservation and counts once. A savepoint cost as much as
        the record's insert (docs/design/results.md)."""
        db = self._db
        cursor = db.write(_SQL["end_checked"], (jid,))  # one statement: atomic
        try:
            rows = cursor.fetchall()
            return self._settled(db.conn, rows, keep, settle) if rows else ([], 0, [])
        except BaseException as exc:
            raise db.abandon(exc) from exc

    def _settled(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[Any, ...]],
        keep: Mapping[str, SetEntry],
        settle: Settle,
    ) -> tuple[list[Reservation], int, list[Damaged]]:
        """What ``_keep_ended`` stores for the rows its DELETE returned (``end_checked``)."""
        ended: list[Reservation] = []
        damaged: list[Damaged] = []
        records: list[tuple[str, str, float | None, bytes]] = []
        entries = dict(keep)
        space = settle.space
        for row in rows:
            if not intact(row[2], row[6]):
                damaged.append(Damaged("reservations", row[0], row[1], row[6], row[2]))
                continue
            reservation = Reservation(*row[:6])
            ended.append(reservation)
            record, entry = settle(reservation)
            if record is not None:
                records.append((space, record.key, record.expires_at, record.value))
            if entry is not None:
                entries[entry.jid] = entry
        if damaged:
            damage.move_aside(conn, damaged)
        if len(records) == 1:  # an ACK: execute costs less than executemany of one
            conn.execute(_PUT_RECORD, records[0])
        elif records:
            conn.executemany(_PUT_RECORD, records)
        kept = [entries[r.jid] for r in ended if r.jid in entries]
        grown = self._put_entries(conn, SortedSet.COMPLETED, kept) if kept else 0
        return ended, grown, damaged

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
