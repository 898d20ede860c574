"""Completed jobs (``conveyor.store.completed``) in SQLite: the reservation's row ends and the
entry is written into ``set_entries`` (name ``completed``) in one savepoint of the shared
transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
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

    async def complete(self, entries: Sequence[SetEntry], day: str) -> int:
        if not entries:
            return 0
        unique = {entry.jid: entry for entry in entries}
        with self._db.atomic() as conn:
            if len(unique) == 1:  # one ACK: the plain DELETE costs a third of json_each's
                (entry,) = unique.values()
                ended = conn.execute(_RESERVATIONS["end_reservation"], (entry.jid,)).rowcount
                kept = [entry] if ended else []
            else:
                args = (json.dumps(list(unique)),)
                rows = conn.execute(_RESERVATIONS["end_reservations"], args).fetchall()
                kept = [unique[jid] for (jid,) in rows]
            grown = self._put_entries(conn, SortedSet.COMPLETED, kept) if kept else 0
        committed = self._db.pending
        if kept:
            self._resize(SortedSet.COMPLETED, grown)
            self._count(day, len(kept), 0)
        if self._db.careful:
            await committed  # during an outage, +OK only once it is recorded
        return len(kept)

    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        unique = list(dict.fromkeys(jids))
        if len(unique) <= 1:  # one ACK: the plain lookup costs a third of json_each's
            rows = self._db.read(_RESERVATIONS["get_reservation"], (unique[0],)) if unique else []
            return self._checked_reservations(rows)
        rows = self._db.read(_RESERVATIONS["reservations_of"], (json.dumps(unique),))
        order = {jid: index for index, jid in enumerate(unique)}
        rows.sort(key=lambda row: order[row[0]])
        return self._checked_reservations(rows)
