"""A value a store delivers from the event loop: for a command answered without a task.

The Redis store's writes wait for Redis, so they cannot be done in the step that read the
command the way the in-process stores' are; but they need no task either: the store sends the
script and calls ``settle`` from the step that reads the reply (``store/redis/soon.py``), and
the server's connection, which registered ``when_done``, writes the reply there and then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Later"]

T = TypeVar("T")


class Later(Generic[T]):
    """One value or error, settled once, delivered to one callback."""

    __slots__ = ("_callback", "done", "error", "value")

    def __init__(self) -> None:
        self._callback: Callable[[T | None, BaseException | None], Any] | None = None
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def when_done(self, callback: Callable[[T | None, BaseException | None], Any]) -> None:
        """Call ``callback(value, error)`` once settled (at once if it is already)."""
        if self.done:
            callback(self.value, self.error)
        else:
            self._callback = callback

    def settle(self, value: T | None, error: BaseException | None) -> bool:
        """Deliver; returns what the callback returned (for a FETCH: whether its client took
        the jobs), True when nobody waits yet (``when_done`` will get them)."""
        self.done, self.value, self.error = True, value, error
        callback, self._callback = self._callback, None
        return True if callback is None else bool(callback(value, error))
