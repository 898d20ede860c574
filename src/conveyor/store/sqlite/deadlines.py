"""Deadlines (``conveyor.store.deadlines``) in SQLite: ``sql/deadlines.sql``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.store.deadlines import Deadline, Deadlines
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteDeadlines"]

_SQL = load_queries("deadlines.sql")


class SQLiteDeadlines(Deadlines):
    """Mixed into ``SQLiteStore``; writes join its shared transaction (group commit)."""

    if TYPE_CHECKING:  # SQLiteStore's
        _db: Database

    def _create_deadlines(self) -> None:
        self._db.conn.executescript(_SQL["create"])

    def _flush_deadlines(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SQL["flush"]):
                conn.execute(statement)

    async def set_deadlines(self, space: str, deadlines: Sequence[Deadline]) -> None:
        rows = [(space, d.key, d.at, d.value) for d in deadlines]
        with self._db.atomic() as conn:
            conn.executemany(_SQL["set_deadline"], rows)

    async def due_deadlines(self, space: str, before: float, limit: int) -> list[Deadline]:
        rows = self._db.read(_SQL["due_deadlines"], (space, before, max(limit, 0)))
        return [Deadline(key, at, bytes(value)) for key, at, value in rows]

    async def delete_deadlines(self, space: str, keys: Sequence[str]) -> int:
        with self._db.atomic() as conn:
            before = conn.total_changes
            conn.executemany(_SQL["delete_deadline"], [(space, key) for key in dict.fromkeys(keys)])
            return conn.total_changes - before

    async def count_deadlines(self, space: str) -> int:
        ((count,),) = self._db.read(_SQL["count_deadlines"], (space,))
        return int(count)
