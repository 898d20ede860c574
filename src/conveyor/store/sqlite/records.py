"""Records (``conveyor.store.records``) in SQLite: the ``records`` table of ``sql/records.sql``."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from conveyor.store.records import Record, Records
from conveyor.store.sqlite.claims import LOCK_SPACES, Claims
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteRecords"]

_SQL = load_queries("records.sql")
_CLAIM = _SQL["claim"]


class SQLiteRecords(Records):
    """Mixed into ``SQLiteStore``; writes join the store's shared transaction (group commit).
    The lock spaces (``claims.LOCK_SPACES``) are kept by ``Claims``."""

    _db: Database

    @functools.cached_property
    def _claims(self) -> Claims:  # an attribute once made (a unique PUSH reads it)
        return Claims(self._db)

    def _create_records(self) -> None:
        self._db.conn.executescript(_SQL["create"])
        self._claims.create()

    def _forget_claims(self) -> None:
        """After a failed commit: the locks are read again from what is committed."""
        self._claims.forget()

    def _flush_records(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SQL["flush"]):
                conn.execute(statement)
        self._claims.flush()

    async def claim_record(self, space: str, record: Record, now: float) -> bytes | None:
        return self.claim_record_now(space, record, now)

    def claim_record_now(self, space: str, record: Record, now: float) -> bytes | None:
        if space in LOCK_SPACES:
            return self._claims.claim(space, record, now)
        params = (space, record.key, record.expires_at, record.value, now)
        # one statement, atomic by itself: no savepoint (a PUSH with unique_for pays this)
        if self._db.write(_CLAIM, params).rowcount:
            return None
        rows = self._db.read(_SQL["get"], (space, record.key, now))
        row = rows[0] if rows else None
        # the record in the way (never None: only a live record of another value blocks)
        return bytes(row[1]) if row else None

    async def put_records(self, space: str, records: Sequence[Record]) -> None:
        if space in LOCK_SPACES:
            return self._claims.put(space, records)
        rows = [(space, r.key, r.expires_at, r.value) for r in records]
        if len(rows) == 1:  # one statement is atomic by itself: no savepoint
            self._db.write(_SQL["put"], rows[0])
            return
        with self._db.atomic() as conn:
            conn.executemany(_SQL["put"], rows)

    async def get_records(self, space: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        if space in LOCK_SPACES:
            return self._claims.get(space, keys, now)
        conn = self._db.conn
        found = {}
        for key in dict.fromkeys(keys):
            row = conn.execute(_SQL["get"], (space, key, now)).fetchone()
            if row is not None:
                found[key] = Record(row[0], bytes(row[1]), row[2])
        return found

    async def delete_records(
        self, space: str, keys: Sequence[str], if_value: bytes | None = None
    ) -> int:
        if space in LOCK_SPACES:
            return self._claims.delete(space, keys, if_value)
        unique = list(dict.fromkeys(keys))
        with self._db.atomic() as conn:
            if if_value is None:
                rows = [(space, key) for key in unique]
                before = conn.total_changes
                conn.executemany(_SQL["delete"], rows)
            else:
                rows_if = [(space, key, if_value) for key in unique]
                before = conn.total_changes
                conn.executemany(_SQL["delete_if"], rows_if)
            return conn.total_changes - before

    async def list_records(
        self, space: str, now: float, after: str = "", limit: int = 100
    ) -> list[Record]:
        if space in LOCK_SPACES:
            return self._claims.page(space, now, after, max(limit, 0))
        rows = self._db.conn.execute(_SQL["list"], (space, after, now, max(limit, 0)))
        return [Record(key, bytes(value), expires) for key, value, expires in rows]

    async def count_records(self, space: str, now: float) -> int:
        if space in LOCK_SPACES:
            return self._claims.count(space, now)
        (count,) = self._db.conn.execute(_SQL["count"], (space, now)).fetchone()
        return int(count)

    async def purge_records(self, now: float, limit: int) -> int:
        with self._db.atomic() as conn:
            purged: int = conn.execute(_SQL["purge"], (now, max(limit, 0))).rowcount
        return purged + self._claims.purge(now, max(limit - purged, 0))
