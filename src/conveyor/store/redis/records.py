"""Records (``conveyor.store.records``) in Redis: per space a hash of ``key -> lp(expires_at)
value`` and a sorted set of the keys that expire, both under the namespace's hash tag, so
every script below is atomic on Redis Cluster too (``lua/records_*.lua``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.store.records import Record, Records
from conveyor.store.redis.codec import decode_fields, score_arg
from conveyor.store.redis.host import RedisHost

__all__ = ["RedisRecords", "expiry_arg"]


def expiry_arg(record: Record) -> str:
    return "" if record.expires_at is None else score_arg(record.expires_at)


def _decode(key: str, stored: bytes) -> Record:
    (expires,), value = decode_fields(stored, 1)
    return Record(key, value, float(expires) if expires else None)


class RedisRecords(RedisHost, Records):
    """Mixed into ``RedisStore``, whose ``_write``/``_read``/``_redis``/``_keys`` it uses.
    Every script that writes takes a token, so a retry after a lost reply changes nothing
    (``calls.py``)."""

    def _record_keys(self, space: str) -> list[str]:
        keys = self._keys
        return [keys.records(space), keys.record_expiry(space), keys.record_spaces]

    async def claim_record(self, space: str, record: Record, now: float) -> bytes | None:
        args = [space, record.key, record.value, expiry_arg(record), score_arg(now)]
        holder = await self._write("records_claim", self._record_keys(space), args, durable=True)
        return None if holder is None else bytes(holder)

    async def put_records(self, space: str, records: Sequence[Record]) -> None:
        if not records:
            return
        args: list[Any] = [space]
        for record in records:
            args += [record.key, record.value, expiry_arg(record)]
        await self._write("records_put", self._record_keys(space), args, durable=True)

    async def get_records(self, space: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        key = self._keys.records(space)
        values = await self._read(lambda: self._redis.hmget(key, unique), "get")
        found = {}
        for key, stored in zip(unique, values, strict=True):
            if stored is not None:
                record = _decode(key, stored)
                if record.live(now):
                    found[key] = record
        return found

    async def delete_records(
        self, space: str, keys: Sequence[str], if_value: bytes | None = None
    ) -> int:
        if not keys:
            return 0
        conditional = ["0", b""] if if_value is None else ["1", if_value]
        args = [*conditional, *dict.fromkeys(keys)]
        keys = self._record_keys(space)[:2]
        return int(await self._write("records_delete", keys, args, durable=True))

    async def _all_records(self, space: str) -> list[Record]:
        key = self._keys.records(space)
        stored = await self._read(lambda: self._redis.hgetall(key), "list")
        return [_decode(key.decode(), value) for key, value in stored.items()]

    async def list_records(
        self, space: str, now: float, after: str = "", limit: int = 100
    ) -> list[Record]:
        live = [r for r in await self._all_records(space) if r.key > after and r.live(now)]
        live.sort(key=lambda record: record.key)
        return live[: max(limit, 0)]

    async def count_records(self, space: str, now: float) -> int:
        records, expiry = self._keys.records(space), self._keys.record_expiry(space)
        total, expired = await self._pipelined(
            "count", lambda pipe: pipe.hlen(records).zcount(expiry, "-inf", score_arg(now))
        )
        return int(total) - int(expired)

    async def _record_spaces(self) -> list[str]:
        spaces = await self._read(lambda: self._redis.smembers(self._keys.record_spaces), "spaces")
        return sorted(space.decode() for space in spaces)

    async def purge_records(self, now: float, limit: int) -> int:
        purged = 0
        for space in await self._record_spaces():
            if purged >= limit:
                break
            args = [score_arg(now), limit - purged, space]
            purged += int(await self._write("records_purge", self._record_keys(space), args))
        return purged

    async def _flush_records(self) -> None:
        spaces = await self._record_spaces()
        keys = [key for space in spaces for key in self._record_keys(space)[:2]]
        keys.append(self._keys.record_spaces)
        # One slot. A DEL sent again after a lost reply also deletes what was written in
        # between: as if it was written just before the FLUSH.
        await self._read(lambda: self._redis.delete(*keys), "flush")
