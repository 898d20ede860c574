"""Completed jobs (``conveyor.store.completed``) in SQLite: the reservations read by the batch.
The ACK that keeps a job is ``SQLiteEndings.ack_returning`` with ``keep``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from conveyor.store.base import Reservation
from conveyor.store.completed import Completions
from conveyor.store.sqlite.db import Database, load_queries

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SQLiteCompletions"]

_RESERVATIONS = load_queries("reservations.sql")


class SQLiteCompletions(Completions):
    """Mixed into ``SQLiteStore``, whose database it reads."""

    _db: Database

    if TYPE_CHECKING:  # SQLiteStore's

        def _checked_reservations(self, rows: list[tuple[Any, ...]]) -> list[Reservation]: ...

    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        unique = list(dict.fromkeys(jids))
        if len(unique) <= 1:  # one ACK: the plain lookup costs a third of json_each's
            rows = self._db.read(_RESERVATIONS["get_reservation"], (unique[0],)) if unique else []
            return self._checked_reservations(rows)
        rows = self._db.read(_RESERVATIONS["reservations_of"], (json.dumps(unique),))
        order = {jid: index for index, jid in enumerate(unique)}
        rows.sort(key=lambda row: order[row[0]])
        return self._checked_reservations(rows)
