"""Cancels (``conveyor.store.cancels``) in SQLite: ``sql/cancels.sql``. The removal, the record
and the counts go into one savepoint of the shared transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

from conveyor.store.base import SetEntry, SortedSet
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
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteCancels"]

_SQL = load_queries("cancels.sql")
_RECORDS = load_queries("records.sql")


class SQLiteCancels(Cancels):
    """Mixed into ``SQLiteStore``, whose mirrors (queue and set sizes) it keeps right."""

    _db: Database
    _sizes: dict[str, int]

    if TYPE_CHECKING:  # SQLiteStore's and SQLiteGroups'

        def _take(
            self, conn: sqlite3.Connection, name: SortedSet, entry: SetEntry
        ) -> SetEntry | None: ...

        def _resize(self, name: SortedSet, delta: int) -> None: ...

        def _remove_members(
            self, conn: sqlite3.Connection, key: str, jids: Iterable[str]
        ) -> int: ...

    async def cancel_job(
        self,
        target: CancelTarget,
        record: Record,
        notice: Record | None,
        day: str,
        now: float,
    ) -> CancelOutcome:
        with self._db.atomic() as conn:
            if not self._take_target(conn, target):
                found = conn.execute(_RECORDS["get"], (CANCELLED_SPACE, target.jid, now))
                cancelled = found.fetchone() is not None
                return CancelOutcome.ALREADY if cancelled else CancelOutcome.MOVED
            rows = [(CANCELLED_SPACE, record.key, record.expires_at, record.value)]
            if notice is not None:
                rows.append((NOTICES_SPACE, notice.key, notice.expires_at, notice.value))
            for key in (TOTAL_KEY, day):
                current = conn.execute(_RECORDS["get"], (COUNTS_SPACE, key, now)).fetchone()
                count = decode_count(bytes(current[1]) if current else None) + 1
                rows.append((COUNTS_SPACE, key, None, encode_count(count)))
            conn.executemany(_RECORDS["put"], rows)
        committed = self._db.pending
        if target.where == "queued":
            self._sizes[target.queue] -= 1
        elif target.where in ("scheduled", "retries"):
            self._resize(SortedSet(target.where), -1)
        await committed
        return CancelOutcome.CANCELLED

    def _take_target(self, conn: sqlite3.Connection, target: CancelTarget) -> bool:
        """Remove the job from where ``target`` says, if it is still there."""
        jid = target.jid
        if target.where == "queued":
            if self._sizes.get(target.queue, 0) == 0:
                return False
            entry = target.entry
            if entry is None:
                deleted = conn.execute(_SQL["delete_queued_one"], (target.queue, jid))
            else:
                exact = (target.queue, jid, entry.reserve_for, entry.payload)
                deleted = conn.execute(_SQL["delete_queued_entry"], exact)
            return deleted.rowcount > 0
        if target.where == "working":
            return conn.execute(_SQL["end_reservation_of"], (jid, target.wid)).rowcount > 0
        if target.where == "aggregating":
            return self._remove_members(conn, target.group, [jid]) > 0
        seen = SetEntry(target.score, jid, b"")
        return self._take(conn, SortedSet(target.where), seen) is not None
