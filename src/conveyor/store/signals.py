"""Signals: "this changed" told to every server sharing the store.

A job's result is written on the server that took its ACK; the client waiting for it may be
connected to another server of the same Redis (docs/results.md). A feature that needs such a
wake-up sends a *signal*: a topic (``"result"``, ``"cancel"``, ...) and the keys it is about
(jids). The store calls the listener of every server with them, this server's included, so a
feature has one code path whatever the backend:

* memory and SQLite (one server per store): the listener is called at once, before
  ``signal`` returns;
* Redis: the signal is published on the namespace's signal channel (``SPUBLISH`` on Redis 7,
  hash-tagged like every key), and every server's subscriber calls its listener; the sender
  calls its own listener at once and skips its echo.

Signals are wake-ups, not data: the listener reads the store to learn what changed. They can be
lost (a subscriber reconnecting misses what was published meanwhile), so after every
(re)subscription the listener is called with ``keys=None``: "anything may have changed, look
again". Spurious calls are allowed, missed ones are not.

A store may send a signal only to where it is awaited: a server that waits for a key says so
first (``expect``), then looks; a write that signals in the same step as it stores (Redis: an
ACK's result, ``lua/endings_end.lua``) publishes only the keys some server expects. Either the
write ran before the registration (the look that follows finds what it stored) or after it
(then it signals), so nothing is missed, and a write nobody waits for publishes nothing.
``signal`` itself always sends.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

__all__ = ["LocalSignals", "SignalListener", "Signals"]

SignalListener = Callable[[str, Sequence[str] | None], None]
"""``listener(topic, keys)``; ``keys`` None: signals may have been lost, look at everything."""


class Signals(abc.ABC):
    """The signals capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    def set_signal_listener(self, listener: SignalListener) -> None:
        """The callback (run in the event loop) that receives every signal."""

    @abc.abstractmethod
    async def signal(self, topic: str, keys: Sequence[str]) -> None:
        """Send ``keys`` of ``topic`` to the listener of every server, this one's first.
        ``topic`` is a short word without spaces; keys may hold any character."""

    async def expect(self, topic: str, key: str, seconds: float) -> None:  # noqa: B027
        """This server waits up to ``seconds`` for a signal of ``key``: call it before the
        look that precedes the wait (see the module docstring). The registration lasts that
        long (a server that dies while waiting leaves nothing past it). Nothing to do where
        every signal is sent (memory, SQLite: one server, called at once)."""


class LocalSignals(Signals):
    """Signals of a store only one server uses (memory, SQLite): straight to the listener."""

    _signal_listener: SignalListener | None = None

    def set_signal_listener(self, listener: SignalListener) -> None:
        self._signal_listener = listener

    async def signal(self, topic: str, keys: Sequence[str]) -> None:
        if self._signal_listener is not None and keys:
            self._signal_listener(topic, keys)
