"""What the Redis store's capability mixins (``records.py``, ``limits.py``, ...) use of the
``RedisStore`` they are mixed into: its keys, connection, wake-up publishing and the three ways
it sends a command (``_run`` a script, ``_write`` with a token, ``_read`` retried).

``RedisHost`` declares them for the type checker only; at run time it is an empty class, so it
adds nothing to a mixin's method resolution. A mixin inherits it and declares only what it
uses beyond these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

__all__ = ["RedisHost"]


class RedisHost:
    """The ``RedisStore`` members every capability mixin may use (see the module docstring)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _keys: Any
        _redis: Any
        _pub: str
        _origin: str

        def _wake(self, name: str) -> None: ...

        def _wake_all(self, names: Iterable[str]) -> None: ...

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

        async def _pipelined(self, op: str, fill: Callable[[Any], object]) -> Any: ...
