"""Completed jobs (``conveyor.store.completed``) and signals (``conveyor.store.signals``) in
Redis: ``lua/endings_end.lua`` (``RedisEndings.ack_returning`` with ``keep``) ends
reservations and fills ``{ns}:s:completed`` in one step, freeing throttle slots and moving
batch marks as an ACK does (a token write, safe to resend after a lost reply: ``calls.py``);
signals are published on ``{ns}:signals`` (``lua/signal_publish.lua``) and received by the
store's subscriber (``wakeup.py``); a server waiting for a key registers it in
``{ns}:sw:<topic>`` (``lua/signal_expect.lua``), where an ACK's script looks before it
publishes its result signal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.store.base import Reservation
from conveyor.store.completed import Completions
from conveyor.store.redis.host import RedisHost
from conveyor.store.signals import SignalListener, Signals

__all__ = ["RedisCompletions", "RedisSignals", "decode_signal", "signal_message", "signal_start"]

_encode_keys = msgspec.json.Encoder().encode
_decode_keys = msgspec.json.Decoder(list[str]).decode


class RedisCompletions(Completions):
    """Mixed into ``RedisStore``, whose ``_reservations`` it uses (the ACK that keeps a job
    is ``RedisEndings.ack_returning`` with ``keep``)."""

    if TYPE_CHECKING:  # RedisStore's

        async def _reservations(self, *args: Any) -> tuple[int, list[Reservation]]: ...

    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        unique = list(dict.fromkeys(jids))
        if not unique:
            return []
        return (await self._reservations("jids", *unique))[1]


class RedisSignals(RedisHost, Signals):
    """Mixed into ``RedisStore``: publish with the store's origin, deliver locally at once."""

    _signal_listener: SignalListener | None = None

    def set_signal_listener(self, listener: SignalListener) -> None:
        self._signal_listener = listener

    async def signal(self, topic: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        if self._signal_listener is not None:
            self._signal_listener(topic, keys)
        message = signal_message(self._origin, topic, keys)
        # a PUBLISH sent twice after a lost reply only wakes waiters twice: not a token write
        await self._run("signal_publish", [self._keys.signals], [self._pub, message])

    async def expect(self, topic: str, key: str, seconds: float) -> None:
        # once more after a lost reply changes nothing more: not a token write
        args = [key, f"{seconds:.3f}"]
        await self._run("signal_expect", [self._keys.signal_waits(topic)], args)

    def _signalled(self, message: bytes | None) -> None:
        """A message of the signal channel (None: after a resubscription)."""
        listener = self._signal_listener
        if listener is None:
            return
        if message is None:
            listener("", None)
            return
        decoded = decode_signal(message)
        if decoded is not None:
            listener(*decoded)


def signal_message(origin: str, topic: str, keys: Sequence[str]) -> bytes:
    """What the signal channel carries: ``"<origin> <topic> <keys as a JSON array>"``."""
    return signal_start(origin, topic) + b" " + _encode_keys(list(keys))


def signal_start(origin: str, topic: str) -> bytes:
    """A signal message up to its keys (``origin`` ends with its space): what a script that
    picks the keys itself is given, and completes with ``" <keys JSON>"`` (endings_end.lua,
    endings_settle.lua)."""
    return (origin + topic).encode()


def decode_signal(message: bytes) -> tuple[str, list[str]] | None:
    """``(topic, keys)`` of a message without its origin; None for a malformed one."""
    topic, _, body = message.partition(b" ")
    try:
        return topic.decode(), _decode_keys(body)
    except (UnicodeDecodeError, msgspec.DecodeError):
        return None
