"""Records (``conveyor.store.records``) in memory: one dict per space."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from conveyor.store.records import Record, Records

__all__ = ["MemoryRecords"]


class MemoryRecords(Records):
    """Mixed into ``MemoryStore``. Every method completes without awaiting, so each is atomic
    on the event loop.

    Every record stored with an expiry is noted in a heap of ``(expires_at, space, key)``
    (``_keep``), so ``purge_records`` pops what has expired instead of scanning every record:
    results kept an hour at thousands of ACKs a second are millions of records, which a scan
    every 10 seconds would read in full. A note whose record was replaced (a later expiry,
    none) or deleted since is dropped when popped."""

    _record_spaces: dict[str, dict[str, Record]]
    _record_expiries: list[tuple[float, str, str]]

    def _space(self, space: str) -> dict[str, Record]:
        spaces = self.__dict__.setdefault("_record_spaces", {})
        found: dict[str, Record] | None = spaces.get(space)
        if found is None:
            found = spaces[space] = {}
        return found

    def _keep(self, stored: dict[str, Record], space: str, record: Record) -> None:
        """Store ``record`` in ``stored`` (``_space(space)``), its expiry noted for the purge:
        every write of a record goes through here or ``_keep_many``."""
        stored[record.key] = record
        if record.expires_at is not None:
            heapq.heappush(self._expiries(), (record.expires_at, space, record.key))

    def _keep_many(self, space: str, records: Sequence[Record]) -> None:
        """``_keep`` of each of ``records`` (an ACKB's results, ``put_records``)."""
        stored, expiries, push = self._space(space), self._expiries(), heapq.heappush
        for record in records:
            stored[record.key] = record
            if record.expires_at is not None:
                push(expiries, (record.expires_at, space, record.key))

    def _expiries(self) -> list[tuple[float, str, str]]:
        found: list[tuple[float, str, str]] | None = self.__dict__.get("_record_expiries")
        if found is None:
            found = self.__dict__["_record_expiries"] = []
        return found

    def _flush_records(self) -> None:
        self.__dict__.pop("_record_spaces", None)
        self.__dict__.pop("_record_expiries", None)

    async def claim_record(self, space: str, record: Record, now: float) -> bytes | None:
        return self.claim_record_now(space, record, now)

    def claim_record_now(self, space: str, record: Record, now: float) -> bytes | None:
        records = self._space(space)
        current = records.get(record.key)
        if current is not None and current.live(now) and current.value != record.value:
            return current.value
        self._keep(records, space, record)
        return None

    async def put_records(self, space: str, records: Sequence[Record]) -> None:
        self._keep_many(space, records)

    async def get_records(self, space: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        stored = self._space(space)
        found = {}
        for key in keys:
            record = stored.get(key)
            if record is not None and record.live(now):
                found[key] = record
        return found

    async def delete_records(
        self, space: str, keys: Sequence[str], if_value: bytes | None = None
    ) -> int:
        stored = self._space(space)
        deleted = 0
        for key in dict.fromkeys(keys):
            record = stored.get(key)
            if record is not None and (if_value is None or record.value == if_value):
                del stored[key]
                deleted += 1
        return deleted

    async def list_records(
        self, space: str, now: float, after: str = "", limit: int = 100
    ) -> list[Record]:
        keys = sorted(key for key, r in self._space(space).items() if key > after and r.live(now))
        stored = self._space(space)
        return [stored[key] for key in keys[: max(limit, 0)]]

    async def count_records(self, space: str, now: float) -> int:
        return sum(1 for record in self._space(space).values() if record.live(now))

    async def purge_records(self, now: float, limit: int) -> int:
        expiries = self.__dict__.get("_record_expiries")
        spaces: dict[str, dict[str, Record]] = self.__dict__.get("_record_spaces", {})
        purged = 0
        while expiries and expiries[0][0] <= now and purged < limit:
            _expires_at, space, key = heapq.heappop(expiries)
            stored = spaces.get(space)
            record = stored.get(key) if stored is not None else None
            if stored is not None and record is not None and not record.live(now):
                del stored[key]
                purged += 1
        return purged
