"""Worker records in Redis: ``{ns}:workers`` (a SET of wids) and ``{ns}:w:<wid>`` (the record's
msgspec JSON, with a TTL). Every change is one script (``lua/worker_update.lua``,
``lua/workers.lua``) that takes a token, so a retry after a lost reply changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.store.base import WorkerRecord
from conveyor.store.redis.codec import score_arg
from conveyor.store.redis.host import RedisHost

__all__ = ["RedisWorkers"]

_worker_encoder = msgspec.json.Encoder()
_worker_decoder = msgspec.json.Decoder(WorkerRecord)


class RedisWorkers(RedisHost):
    """Mixed into ``RedisStore``, whose ``_write``/``_read``/``_redis``/``_keys``/``_url`` it
    uses."""

    if TYPE_CHECKING:  # RedisStore's
        _url: Any

    async def save_worker(self, record: WorkerRecord) -> None:
        keys = [self._keys.workers, self._keys.worker(record.wid)]
        args = ["save", record.wid, _worker_encoder.encode(record), self._url.worker_ttl]
        await self._write("workers", keys, args)

    async def update_worker(
        self,
        wid: str,
        *,
        rss_kb: int | None = None,
        last_beat: float | None = None,
        state: str | None = None,
        connections_delta: int = 0,
        create: WorkerRecord | None = None,
    ) -> WorkerRecord | None:
        if create is not None and create.wid != wid:
            raise ValueError(f"update_worker({wid!r}) cannot create a record for {create.wid!r}")
        args: list[str | bytes | int] = [
            wid,
            self._url.worker_ttl,
            "" if rss_kb is None else int(rss_kb),
            "" if last_beat is None else score_arg(last_beat),
            state or "",
            int(connections_delta),
            b"" if create is None else _worker_encoder.encode(create),
        ]
        keys = [self._keys.workers, self._keys.worker(wid)]
        raw = await self._write("worker_update", keys, args)
        return None if raw is None else _worker_decoder.decode(raw)

    async def get_worker(self, wid: str) -> WorkerRecord | None:
        raw = await self._read(lambda: self._redis.get(self._keys.worker(wid)))
        return None if raw is None else _worker_decoder.decode(raw)

    async def list_workers(self) -> list[WorkerRecord]:
        members = await self._read(lambda: self._redis.smembers(self._keys.workers))
        wids = sorted(m.decode() for m in members)
        if not wids:
            return []
        keys = [self._keys.worker(wid) for wid in wids]
        raws = await self._read(lambda: self._redis.mget(keys))
        gone = [wid for wid, raw in zip(wids, raws, strict=True) if raw is None]
        if gone:
            prune_keys = [self._keys.workers, *(self._keys.worker(w) for w in gone)]
            await self._write("workers", prune_keys, ["prune", *gone])
        return [_worker_decoder.decode(raw) for raw in raws if raw is not None]

    async def delete_worker(self, wid: str, silent_before: float | None = None) -> bool:
        keys = [self._keys.workers, self._keys.worker(wid)]
        since = "" if silent_before is None else repr(silent_before)
        return bool(await self._write("workers", keys, ["delete", wid, since]))
