"""Counts (``conveyor.store.counts``) in SQLite: the ``counts`` table of ``sql/counts.sql``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.counts import Counts
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteCounts"]

_SQL = load_queries("counts.sql")


class SQLiteCounts(Counts):
    """Mixed into ``SQLiteStore``; writes join its shared transaction (group commit)."""

    if TYPE_CHECKING:  # SQLiteStore's
        _db: Database

    def _create_counts(self) -> None:
        self._db.conn.executescript(_SQL["create"])

    def _flush_counts(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SQL["flush"]):
                conn.execute(statement)

    async def add_counts(self, space: str, deltas: Mapping[str, int]) -> None:
        rows = [(space, key, delta) for key, delta in deltas.items()]
        with self._db.atomic() as conn:
            conn.executemany(_SQL["add_count"], rows)

    async def get_counts(self, space: str, keys: Sequence[str]) -> dict[str, int]:
        counts = {}
        for key in keys:
            rows = self._db.read(_SQL["get_count"], (space, key))
            counts[key] = int(rows[0][0]) if rows else 0
        return counts
