"""Counts (``conveyor.store.counts``) in Redis.

Keys (under the namespace's hash tag)::

    {ns}:n:<space>    HASH  key -> count
    {ns}:nspaces      SET   spaces with counts (for flush)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.store.counts import Counts
from conveyor.store.redis.spaces import RedisSpaces

__all__ = ["RedisCounts"]


class RedisCounts(RedisSpaces, Counts):
    """Mixed into ``RedisStore``."""

    async def add_counts(self, space: str, deltas: Mapping[str, int]) -> None:
        if not deltas:
            return
        args: list[Any] = [space]
        for key, delta in deltas.items():
            args += [key, int(delta)]
        keys = [self._keys.key(f"n:{space}"), self._keys.key("nspaces")]
        await self._write("counts_add", keys, args)

    async def get_counts(self, space: str, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        key = self._keys.key(f"n:{space}")
        values = await self._read(lambda: self._redis.hmget(key, list(keys)), "get_counts")
        return {key: int(value or 0) for key, value in zip(keys, values, strict=True)}

    async def _flush_counts(self) -> None:
        await self._flush_spaces("nspaces", ("n",))
