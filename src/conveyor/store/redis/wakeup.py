"""Cross-server wake-ups: a pub/sub subscriber that calls the store's ready listener (and,
on a second channel, its signal listener: ``store/signals.py``).

Every script that puts jobs into a queue also publishes the queue name on ``{ns}:ready`` in
the same atomic step. On Redis 7 that is a *sharded* channel (SPUBLISH): on a Cluster the
message stays on the shard that owns the namespace's slot instead of being broadcast to every
node, and the subscriber connects to that node. Older Redis gets a plain PUBLISH channel.

A message is ``b"<origin> <queue>"``; a store skips its own messages, having already called
its listener when the script returned (or failed). Messages published while the subscriber is
disconnected are lost, so after every (re)subscribe the subscriber calls the listener for every
known queue: spurious calls are allowed, missed ones are not. Signals (``{ns}:signals``,
``"<origin> <topic> <keys>"``) follow the same rules; after a resubscription the signal
listener is told that anything may have changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from conveyor.store.redis.channel import listen
from conveyor.store.redis.codec import RedisURL

__all__ = ["Subscriber"]

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0
PING_EVERY_SECONDS = 5.0
STOP_WAIT_SECONDS = 2.0


class Subscriber:
    """Runs one background task that listens on the ready channel until ``stop``."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Redis]],
        channel: str,
        sharded: bool,
        origin: str,
        deliver: Callable[[str], None],
        known_queues: Callable[[], Awaitable[set[str]]],
        lean: RedisURL | None = None,
        signals: tuple[str, Callable[[bytes | None], None]] | None = None,
    ) -> None:
        """``signals``: the signal channel and what receives its messages (without their
        origin; None after a resubscription)."""
        self._connect = connect
        self._lean = lean  # read the channel on a connection of our own (channel.py)
        self._channel = channel
        self._signals = signals
        self._sharded = sharded
        self._origin = origin.encode()
        self._deliver = deliver
        self._known_queues = known_queues
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-wakeups")

    async def stop(self) -> None:
        # Python 3.11's wait_for (used by redis-py) can swallow a CancelledError, so the loops check
        # ``_stopping``; the bounded wait keeps close() prompt whatever happens.
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_SECONDS)
            if not task.done():
                log.warning("Redis wake-up task did not stop in %.1fs", STOP_WAIT_SECONDS)

    async def _run(self) -> None:
        delay = RETRY_MIN_SECONDS
        while not self._stopping:
            try:
                await self._listen()
                delay = RETRY_MIN_SECONDS
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("Redis wake-up channel lost (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _listen(self) -> None:
        if self._lean is not None:
            await self._listen_lean(self._lean)
            return
        client = await self._connect()
        pubsub = client.pubsub()
        channels = [self._channel]
        if self._signals is not None:
            channels.append(self._signals[0])
        try:
            if self._sharded:
                await pubsub.ssubscribe(*channels)
            else:
                await pubsub.subscribe(*channels)
            for _ in channels:
                await self._wait_confirmed(pubsub)
            # Anything published while we were not listening is lost: wake every queue.
            for name in await self._known_queues():
                self._deliver(name)
            if self._signals is not None:
                self._signals[1](None)
            self.subscribed.set()  # and caught up: a later wake-up is a message's
            while not self._stopping:
                message = await pubsub.get_message(timeout=PING_EVERY_SECONDS)
                if message is None:
                    # A quiet channel or a dead connection: a PING tells them apart.
                    await pubsub.ping()
                    continue
                if message["type"] in ("message", "smessage"):
                    self._received(message)
                elif message["type"] in ("unsubscribe", "sunsubscribe"):
                    # Redis drops shard subscriptions when the slot moves: start over.
                    raise RedisError("unsubscribed from the wake-up channel")
        finally:
            self.subscribed.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen_lean(self, url: RedisURL) -> None:
        origin = self._origin.decode()
        conn = await listen(
            url,
            self._channel,
            self._sharded,
            origin,
            self._deliver,
            PING_EVERY_SECONDS,
            self._signals,
        )
        try:
            # Anything published while we were not listening is lost: wake every queue.
            for name in await self._known_queues():
                self._deliver(name)
            if self._signals is not None:
                self._signals[1](None)
            self.subscribed.set()  # and caught up: a later wake-up is a message's
            heard = conn.heard
            pinged = False
            while not self._stopping:
                done, _ = await asyncio.wait({conn.closed}, timeout=PING_EVERY_SECONDS)
                if done:
                    conn.closed.result()  # raises why it ended
                    return
                if conn.heard != heard:
                    heard, pinged = conn.heard, False
                elif pinged:  # nothing, not even the PING's answer: a dead connection
                    raise RedisError("the wake-up connection stopped answering")
                else:  # a quiet channel or a dead connection: a PING tells them apart
                    conn.send("PING")
                    pinged = True
        finally:
            self.subscribed.clear()
            conn.close()

    def _received(self, message: dict[str, Any]) -> None:
        origin, _, body = message["data"].partition(b" ")
        if not body or origin + b" " == self._origin:
            return  # our own: delivered when it was sent
        channel = message.get("channel")
        if self._signals is not None and channel in (self._signals[0], self._signals[0].encode()):
            self._signals[1](body)
        else:
            self._deliver(body.decode())

    @staticmethod
    async def _wait_confirmed(pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=PING_EVERY_SECONDS)
            if message is None:
                raise RedisError("no confirmation of the wake-up subscription")
            if message["type"] in ("subscribe", "ssubscribe"):
                return
