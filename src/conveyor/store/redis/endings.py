"""Endings (``conveyor.store.endings``) in Redis: ``lua/endings_end.lua``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.endings import Endings
from conveyor.store.redis.codec import decode_entry, decode_fields

__all__ = ["RedisEndings"]


class RedisEndings(Endings):
    """Mixed into ``RedisStore``, whose ``_run``/``_keys`` it uses."""

    if TYPE_CHECKING:  # RedisStore's
        _keys: Any

        async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

    async def _end(self, mode: str, jids: Sequence[str], day: str) -> list[Reservation]:
        if not jids:
            return []
        k = self._keys
        flat = await self._run("endings_end", [k.res, k.exp, k.busy, k.stats], [mode, day, *jids])
        ended = []
        for i in range(0, len(flat), 4):
            (queue, wid), payload = decode_fields(flat[i + 1], 2)
            ended.append(
                Reservation(
                    jid=flat[i].decode(),
                    queue=queue,
                    payload=payload,
                    wid=wid,
                    reserved_at=float(flat[i + 3]),
                    expires_at=float(flat[i + 2]),
                )
            )
        return ended

    async def ack_returning(self, jids: Sequence[str], day: str) -> list[Reservation]:
        return await self._end("ack", jids, day)

    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        return await self._end("discard", jids, "")

    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        if not jids:
            return []
        taken = await self._run("endings_take", [self._keys.queue(queue)], list(jids))
        return [decode_entry(queue, entry) for entry in taken]
