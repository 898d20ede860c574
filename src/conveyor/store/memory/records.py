"""Records (``conveyor.store.records``) in memory: one dict per space."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.store.records import Record, Records

__all__ = ["MemoryRecords"]


class MemoryRecords(Records):
    """Mixed into ``MemoryStore``. Every method completes without awaiting, so each is atomic
    on the event loop."""

    _record_spaces: dict[str, dict[str, Record]]

    def _space(self, space: str) -> dict[str, Record]:
        spaces = self.__dict__.setdefault("_record_spaces", {})
        found: dict[str, Record] | None = spaces.get(space)
        if found is None:
            found = spaces[space] = {}
        return found

    def _flush_records(self) -> None:
        self.__dict__.pop("_record_spaces", None)

    async def claim_record(self, space: str, record: Record, now: float) -> bytes | None:
        return self.claim_record_now(space, record, now)

    def claim_record_now(self, space: str, record: Record, now: float) -> bytes | None:
        records = self._space(space)
        current = records.get(record.key)
        if current is not None and current.live(now) and current.value != record.value:
            return current.value
        records[record.key] = record
        return None

    async def put_records(self, space: str, records: Sequence[Record]) -> None:
        stored = self._space(space)
        for record in records:
            stored[record.key] = record

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
        purged = 0
        for records in self.__dict__.get("_record_spaces", {}).values():
            for key in [k for k, r in records.items() if not r.live(now)][: limit - purged]:
                del records[key]
                purged += 1
            if purged >= limit:
                break
        return purged
