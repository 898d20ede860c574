"""Limits (``conveyor.store.limits``) in Redis: ``lua/limits_*.lua``.

Keys (beside those of ``store.py``, under the same hash tag)::

    {ns}:tq:<queue>          ZSET  jid by lease end: the queue's throttle slots
    {ns}:tw:<queue>:<wid>    ZSET  jid by lease end: one worker's slots of the queue (TTL)
    {ns}:tb:<queue>          HASH  tokens, at: the queue's token bucket
    {ns}:lkeys               SET   the keys above that exist (for flush)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.limits import Limited, Limits, LimitUsage, QueueLimit
from conveyor.store.redis.calls import OutcomeUnknown
from conveyor.store.redis.codec import encode_entry, score_arg
from conveyor.store.redis.host import RedisHost

__all__ = ["RedisLimits"]

_NO_LIMIT = QueueLimit()


def _limit_args(name: str, limit: QueueLimit) -> list[Any]:
    return [
        name,
        limit.concurrency,
        limit.per_worker,
        score_arg(limit.timeout),
        score_arg(limit.rate),
        score_arg(limit.burst),
    ]


class RedisLimits(RedisHost, Limits):
    """Mixed into ``RedisStore``, whose ``_run``/``_keys``/publishing it uses."""

    if TYPE_CHECKING:  # RedisStore's
        _calls: Any
        _releaser: Any
        _scripts: Any

    def _limit_key(self, kind: str, queue: str, wid: str | None = None) -> str:
        suffix = f"{kind}:{queue}" if wid is None else f"{kind}:{queue}:{wid}"
        return str(self._keys.key(suffix))

    async def enqueue_bounded(
        self, jobs: Sequence[QueuedJob], bounds: Mapping[str, int]
    ) -> list[QueuedJob]:
        by_queue: dict[str, list[QueuedJob]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, []).append(job)
        keys = [self._keys.queues, self._keys.ready]
        args: list[Any] = [self._pub, self._origin]
        for name, queued in by_queue.items():
            keys.append(self._keys.queue(name))
            args += [name, bounds.get(name, -1), len(queued), *map(encode_entry, queued)]
        try:
            stored = await self._write("limits_enqueue", keys, args, durable=True)
        finally:
            self._wake_all(list(by_queue))
        refused: list[QueuedJob] = []
        for (_name, queued), took in zip(by_queue.items(), stored, strict=True):
            refused += queued[int(took) :]
        return refused

    def _limited_call(
        self, names: list[str], wid: str, now: float, count: int, limits: Mapping[str, QueueLimit]
    ) -> tuple[list[str], list[Any]]:
        k = self._keys
        keys = [k.paused, k.res, k.exp, k.busy, k.key("lkeys")]
        args: list[Any] = [wid, score_arg(now), count]
        for name in names:
            keys += [
                k.queue(name),
                self._limit_key("tq", name),
                self._limit_key("tw", name, wid),
                self._limit_key("tb", name),
            ]
            args += _limit_args(name, limits.get(name, _NO_LIMIT))
        return keys, args

    @staticmethod
    def _limited(reply: Any, wid: str, now: float) -> Limited:
        flat, blocked = reply
        reservations = [
            Reservation(
                jid=flat[i + 1].decode(),
                queue=flat[i].decode(),
                payload=flat[i + 2],
                wid=wid,
                reserved_at=now,
                expires_at=float(flat[i + 3]),
            )
            for i in range(0, len(flat), 4)
        ]
        waits = {
            blocked[i].decode(): float(blocked[i + 1]) if blocked[i + 1] else None
            for i in range(0, len(blocked), 2)
        }
        return Limited(reservations, waits)

    async def reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        names = list(dict.fromkeys(queues))
        if not names or count <= 0:
            return Limited([])
        keys, args = self._limited_call(names, wid, now, count, limits)
        calls = self._calls
        token = calls.new_token()
        try:
            reply = await calls.write(self._scripts["limits_reserve"], keys, args, token=token)
        except (OutcomeUnknown, asyncio.CancelledError):
            # As reserve: jobs the caller will never get go back (release.lua reads the same
            # token); their slots are found ended when the queue looks full.
            self._releaser.add(token, wid, now, tuple(names))
            raise
        return self._limited(reply, wid, now)

    def reserve_limited_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
        done: Callable[[Limited | None, BaseException | None], bool],
    ) -> bool:
        names = list(dict.fromkeys(queues))
        if not names or count <= 0:
            return False
        keys, args = self._limited_call(names, wid, now, count, limits)
        calls = self._calls
        token = calls.new_token()

        def answered(reply: Any, error: BaseException | None) -> None:
            if error is not None:
                if isinstance(error, OutcomeUnknown):  # as reserve_limited: jobs go back
                    self._releaser.add(token, wid, now, tuple(names))
                done(None, error)
                return
            limited = self._limited(reply, wid, now)
            if not done(limited, None) and limited.reservations:  # its FETCH went away
                self._releaser.add(token, wid, now, tuple(names))

        sent: bool = calls.write_soon(
            self._scripts["limits_reserve"], keys, args, answered, token=token
        )
        return sent

    async def release_slots(self, ended: Sequence[Reservation]) -> None:
        if not ended:
            return
        keys = [self._keys.ready]
        args: list[Any] = [self._pub, self._origin]
        for r in ended:
            keys += [self._limit_key("tq", r.queue), self._limit_key("tw", r.queue, r.wid)]
            args += [r.queue, r.jid]
        try:
            await self._run("limits_free", keys, args)
        finally:
            self._wake_all({r.queue for r in ended})

    async def release_worker_slots(self, wid: str, queues: Collection[str]) -> list[str]:
        names = list(queues)
        if not names:
            return []
        keys = []
        for name in names:
            keys += [self._limit_key("tq", name), self._limit_key("tw", name, wid)]
        keys.append(self._keys.key("lkeys"))
        freed = await self._run("limits_release", keys)
        return [names[int(number) - 1] for number in freed]

    async def limit_usage(
        self, limits: Mapping[str, QueueLimit], now: float
    ) -> dict[str, LimitUsage]:
        names = list(limits)
        if not names:
            return {}
        keys = [self._keys.res]
        args: list[Any] = []
        for name in names:
            keys += [self._limit_key("tq", name), self._limit_key("tb", name)]
            args += [score_arg(limits[name].rate), score_arg(limits[name].burst)]
        flat = await self._run("limits_usage", keys, args)
        return {
            name: LimitUsage(int(flat[2 * i]), float(flat[2 * i + 1]) if flat[2 * i + 1] else None)
            for i, name in enumerate(names)
        }

    async def announce(self, queues: Collection[str]) -> None:
        names = list(queues)
        if not names:
            return
        try:
            args = [self._pub, self._origin, *names]
            await self._run("limits_announce", [self._keys.ready], args)
        finally:
            self._wake_all(names)

    async def _flush_limits(self) -> None:
        lkeys = self._keys.key("lkeys")
        keys = await self._read(lambda: self._redis.smembers(lkeys), "flush")
        await self._read(lambda: self._redis.delete(lkeys, *keys), "flush")
