"""What the Redis capabilities kept per named space share (``counts.py``, ``deadlines.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

__all__ = ["RedisSpaces"]


class RedisSpaces:
    """Keys per space, listed in a set so that flush finds them."""

    if TYPE_CHECKING:  # RedisStore's
        _keys: Any
        _redis: Any

        async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

        async def _write(
            self,
            name: str,
            keys: Sequence[str],
            args: Sequence[Any] = (),
            *,
            token: str | None = None,
            durable: bool = False,
        ) -> Any: ...

        async def _read(self, make: Callable[[], Awaitable[Any]], op: str = "a command") -> Any: ...

    async def _flush_spaces(self, spaces_key: str, prefixes: Sequence[str]) -> None:
        key = self._keys.key(spaces_key)
        spaces = await self._read(lambda: self._redis.smembers(key), "flush")
        doomed = [self._keys.key(f"{p}:{s.decode()}") for s in spaces for p in prefixes]
        await self._read(lambda: self._redis.delete(key, *doomed), "flush")
