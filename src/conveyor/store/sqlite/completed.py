"""Completed jobs (``conveyor.store.completed``) in SQLite: the reservation's row ends and the
entry is written into ``set_entries`` (name ``completed``) in one savepoint of the shared
transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import Reservation, SetEntry, SortedSet
from conveyor.store.completed import Completions
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteCompletions"]

_RESERVATIONS = load_queries("reservations.sql")


class SQLiteCompletions(Completions):
    """Mixed into ``SQLiteStore``, whose database, set mirrors and counters it uses."""

    _db: Database

    if TYPE_CHECKING:  # SQLiteStore's

        def _put_entries(
            self, conn: sqlite3.Connection, name: SortedSet, entries: list[SetEntry]
        ) -> int: ...

        def _resize(self, name: SortedSet, delta: int) -> None: ...

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        def _checked_reservations(self, rows: list[tuple[Any, ...]]) -> list[Reservation]: ...

        async def release_slots(self, ended: Sequence[Reservation]) -> None: ...

    async def complete(
        self,
        entries: Sequence[SetEntry],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        if not entries:
            return []
        unique = {entry.jid: entry for entry in entries}
        with self._db.atomic() as conn:
            if len(unique) == 1:  # one ACK: the plain DELETE costs a third of json_each's
                (entry,) = unique.values()
                query, args = _RESERVATIONS["end_reservation_returning"], (entry.jid,)
            else:
                query, args = _RESERVATIONS["end_reservations"], (json.dumps(list(unique)),)
            ended = [Reservation(*row) for row in conn.execute(query, args).fetchall()]
            kept = [unique[r.jid] for r in ended]
            grown = self._put_entries(conn, SortedSet.COMPLETED, kept) if kept else 0
        committed = self._db.pending
        if ended:
            self._resize(SortedSet.COMPLETED, grown)
            self._count(day, len(ended), 0)
            freed = [r for r in ended if r.queue in throttled]
            if freed:
                await self.release_slots(freed)
        if self._db.careful:
            await committed  # during an outage, +OK only once it is recorded
        if len(ended) > 1:  # in jids order, as ack_returning
            order = {jid: index for index, jid in enumerate(unique)}
            ended.sort(key=lambda r: order[r.jid])
        return ended

    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        unique = list(dict.fromkeys(jids))
        if len(unique) <= 1:  # one ACK: the plain lookup costs a third of json_each's
            rows = self._db.read(_RESERVATIONS["get_reservation"], (unique[0],)) if unique else []
            return self._checked_reservations(rows)
        rows = self._db.read(_RESERVATIONS["reservations_of"], (json.dumps(unique),))
        order = {jid: index for index, jid in enumerate(unique)}
        rows.sort(key=lambda row: order[row[0]])
        return self._checked_reservations(rows)
