"""What the Redis capabilities kept per named space share (``counts.py``, ``deadlines.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.store.redis.host import RedisHost

__all__ = ["RedisSpaces"]


class RedisSpaces(RedisHost):
    """Keys per space, listed in a set so that flush finds them."""

    async def _flush_spaces(self, spaces_key: str, prefixes: Sequence[str]) -> None:
        key = self._keys.key(spaces_key)
        spaces = await self._read(lambda: self._redis.smembers(key), "flush")
        doomed = [self._keys.key(f"{p}:{s.decode()}") for s in spaces for p in prefixes]
        await self._read(lambda: self._redis.delete(key, *doomed), "flush")
