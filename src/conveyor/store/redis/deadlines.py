"""Deadlines (``conveyor.store.deadlines``) in Redis.

Keys (under the namespace's hash tag)::

    {ns}:dl:<space>   ZSET  key by time
    {ns}:dv:<space>   HASH  key -> value
    {ns}:dspaces      SET   spaces with deadlines (for flush)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.store.deadlines import Deadline, Deadlines
from conveyor.store.redis.codec import score_arg
from conveyor.store.redis.spaces import RedisSpaces

__all__ = ["RedisDeadlines"]


class RedisDeadlines(RedisSpaces, Deadlines):
    """Mixed into ``RedisStore``."""

    def _deadline_keys(self, space: str) -> list[str]:
        return [self._keys.key(f"dl:{space}"), self._keys.key(f"dv:{space}")]

    async def set_deadlines(self, space: str, deadlines: Sequence[Deadline]) -> None:
        if not deadlines:
            return
        args: list[Any] = [space]
        for deadline in deadlines:
            args += [deadline.key, score_arg(deadline.at), deadline.value]
        keys = [*self._deadline_keys(space), self._keys.key("dspaces")]
        await self._run("deadlines_set", keys, args)

    async def due_deadlines(self, space: str, before: float, limit: int) -> list[Deadline]:
        if limit <= 0:
            return []
        flat = await self._run(
            "deadlines_read", self._deadline_keys(space), [score_arg(before), limit]
        )
        return [
            Deadline(flat[i].decode(), float(flat[i + 1]), bytes(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def delete_deadlines(self, space: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        unique = list(dict.fromkeys(keys))
        return int(await self._write("deadlines_delete", self._deadline_keys(space), unique))

    async def count_deadlines(self, space: str) -> int:
        key = self._keys.key(f"dl:{space}")
        return int(await self._read(lambda: self._redis.zcard(key), "count_deadlines"))

    async def _flush_deadlines(self) -> None:
        await self._flush_spaces("dspaces", ("dl", "dv"))
