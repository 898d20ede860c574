"""The wake-up channel read on a connection of the store's own (``wakeup.Subscriber``).

Every PUSH publishes its queue's name on the channel, and every server subscribed, the one
that pushed included, receives it; a server drops its own messages. Through redis-py's PubSub
each message took a parse, a dict and a coroutine wake-up before it could be dropped: about
as much as the rest of the job's Redis work. Here a message is parsed by hiredis inside
``data_received`` and, when it is our own, dropped there. The signal channel
(``store/signals.py``) is read on the same connection. Used where ``pipe.Pipe`` is (a plain
``redis://``); Sentinel, Cluster and TLS keep redis-py's PubSub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from conveyor.store.redis.codec import RedisURL

__all__ = ["Channel", "Signals", "listen"]

_MESSAGES = (b"message", b"smessage")
_CONFIRMED = (b"subscribe", b"ssubscribe")
_DROPPED = (b"unsubscribe", b"sunsubscribe")


Signals = tuple[str, Callable[[bytes], None]]
"""The signal channel and what receives its messages (without their origin)."""


class Channel(asyncio.Protocol):
    """The subscription to the wake-up channel, and to the signal channel when ``signals``
    names it. ``subscribed`` is set once Redis confirms them all; ``closed`` is done when the
    connection is gone (with the reason as its exception, or None when we closed it)."""

    def __init__(
        self, origin: bytes, deliver: Callable[[str], None], signals: Signals | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.heard = 0  # replies received: a PING's answer counts
        self._origin = origin
        self._deliver = deliver
        self._signal_channel = None if signals is None else signals[0].encode()
        self._signalled = None if signals is None else signals[1]
        self._unconfirmed = 1 if signals is None else 2
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, *command: Any) -> None:
        if self._transport is not None:
            self._transport.write(hiredis.pack_command(command))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                self.heard += 1
                self._reply(reply)
        except (hiredis.ProtocolError, RedisError) as exc:
            self._end(exc)

    def _reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise RedisError(f"the wake-up subscription failed: {reply}")
        if not isinstance(reply, list) or not reply:
            return  # AUTH's +OK
        kind = reply[0]
        if kind in _MESSAGES:
            data: bytes = reply[2]
            origin, _, body = data.partition(b" ")
            if not body or origin == self._origin:
                return  # our own: delivered when it was sent
            if self._signalled is not None and reply[1] == self._signal_channel:
                self._signalled(body)
            else:
                self._deliver(body.decode())
        elif kind in _CONFIRMED:
            self._unconfirmed -= 1
            if self._unconfirmed <= 0 and not self.subscribed.done():
                self.subscribed.set_result(None)
        elif kind in _DROPPED:
            # Redis drops shard subscriptions when the slot moves: start over.
            raise RedisError("unsubscribed from the wake-up channel")

    def _end(self, exc: BaseException) -> None:
        if self._transport is not None:
            self._transport.abort()
        if not self.closed.done():
            self.closed.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.closed.done():
            reason = exc or RedisConnectionError("the wake-up connection was closed by Redis")
            self.closed.set_exception(reason)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if not self.closed.done():
            self.closed.set_result(None)


async def listen(
    url: RedisURL,
    channel: str,
    sharded: bool,
    origin: str,
    deliver: Callable[[str], None],
    within: float,
    signals: Signals | None = None,
) -> Channel:
    """Connect, authenticate and subscribe (to the signal channel too, with ``signals``);
    returns the channel once Redis confirmed."""
    mine = origin.encode().rstrip(b" ")
    try:
        _, conn = await asyncio.wait_for(
            url.open_connection(lambda: Channel(mine, deliver, signals)), within
        )
    except (OSError, TimeoutError) as exc:
        raise RedisConnectionError(f"cannot connect to Redis at {url.where}: {exc}") from exc
    auth = [a for a in (url.username, url.password) if a]
    if auth:
        conn.send("AUTH", *auth)
    channels = [channel] if signals is None else [channel, signals[0]]
    conn.send("SSUBSCRIBE" if sharded else "SUBSCRIBE", *channels)
    try:
        await asyncio.wait(
            (conn.subscribed, conn.closed), timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        if conn.closed.done():
            conn.closed.result()  # the reason it ended before the confirmation
            raise RedisConnectionError("the wake-up connection closed before it subscribed")
        if not conn.subscribed.done():
            raise RedisError("no confirmation of the wake-up subscription")
    except BaseException:
        conn.close()
        raise
    return conn
