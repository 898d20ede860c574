"""Limits (``conveyor.store.limits``) in memory: throttle slots and buckets in dicts."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.limits import (
    InProcessSlots,
    Limited,
    Limits,
    LimitUsage,
    QueueLimit,
    SlotTable,
    bucket_tokens,
)

__all__ = ["MemoryLimits"]

_NO_SLOTS = SlotTable()
"""The slots of a queue without a throttle (a rate limit alone): always empty."""


class MemoryLimits(InProcessSlots, Limits):
    """Mixed into ``MemoryStore`` (whose queues and reservations it uses). Every method
    completes without awaiting, so each is atomic on the event loop."""

    if TYPE_CHECKING:  # MemoryStore's
        _queues: dict[str, deque[QueuedJob]]
        _paused: set[str]
        _reservations: dict[str, Reservation]

        def _push(self, job: QueuedJob) -> None: ...

        def _notify(self, queues: Iterable[str]) -> None: ...

    def _limit_slots(self, queue: str) -> SlotTable:
        every: dict[str, SlotTable] = self.__dict__.setdefault("_throttle_slots", {})
        table = every.get(queue)
        if table is None:
            table = every[queue] = SlotTable()
        return table

    def _limit_buckets(self) -> dict[str, tuple[float, float]]:
        buckets: dict[str, tuple[float, float]] = self.__dict__.setdefault("_rate_buckets", {})
        return buckets

    def _tokens(self, queue: str, limit: QueueLimit, now: float) -> float:
        tokens, updated_at = self._limit_buckets().get(queue, (None, now))
        return bucket_tokens(tokens, updated_at, now, limit)

    def _flush_limits(self) -> None:
        self.__dict__.pop("_throttle_slots", None)
        self.__dict__.pop("_rate_buckets", None)

    async def enqueue_bounded(
        self, jobs: Sequence[QueuedJob], bounds: Mapping[str, int]
    ) -> list[QueuedJob]:
        refused: list[QueuedJob] = []
        stored: list[str] = []
        for job in jobs:
            bound = bounds.get(job.queue)
            if bound is not None and len(self._queues.get(job.queue, ())) >= bound:
                refused.append(job)
            else:
                self._push(job)
                stored.append(job.queue)
        self._notify(stored)
        return refused

    def _limit_room(
        self, queue: str, limit: QueueLimit, wid: str, now: float
    ) -> tuple[int, float | None]:
        tokens = self._tokens(queue, limit, now) if limit.rate_limited else None
        slots = self._limit_slots(queue) if limit.throttled else _NO_SLOTS
        room, wait = slots.room(limit, wid, now, tokens)
        if room or not limit.throttled:
            return room, wait
        slots.expire(now)  # full: leases that ran out, reservations that ended, then again
        slots.keep(self._reservations.keys())
        return slots.room(limit, wid, now, tokens, full=True)

    def _take_limited(
        self, queue: str, limit: QueueLimit, taken: list[Reservation], now: float
    ) -> None:
        if limit.throttled:
            slots = self._limit_slots(queue)
            for r in taken:
                slots.add(r.jid, r.wid, now + limit.timeout if limit.timeout else r.expires_at)
        if limit.rate_limited:
            tokens = self._tokens(queue, limit, now)
            self._limit_buckets()[queue] = (tokens - len(taken), now)

    async def reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        return self.reserve_limited_now(queues, wid, now, count, limits)

    def reserve_limited_now(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        taken: list[Reservation] = []
        blocked: dict[str, float | None] = {}
        for name in dict.fromkeys(queues):
            want = count - len(taken)
            if want <= 0:
                break
            queue = self._queues.get(name)
            if not queue or name in self._paused:
                continue
            limit = limits.get(name)
            if limit is not None and limit.limits_fetch:
                room, wait = self._limit_room(name, limit, wid, now)
                if room < 1:
                    blocked[name] = wait
                    continue
                want = min(want, room)
            got: list[Reservation] = []
            while queue and len(got) < want:
                job = queue.popleft()
                reservation = Reservation(
                    job.jid, name, job.payload, wid, now, now + job.reserve_for
                )
                self._reservations[job.jid] = reservation
                got.append(reservation)
            if limit is not None and limit.limits_fetch:
                self._take_limited(name, limit, got, now)
            taken += got
        return Limited(taken, blocked)

    async def limit_usage(
        self, limits: Mapping[str, QueueLimit], now: float
    ) -> dict[str, LimitUsage]:
        usage = {}
        for queue, limit in limits.items():
            in_use = 0
            if limit.throttled:
                table = self._limit_slots(queue)
                table.expire(now)
                table.keep(self._reservations.keys())
                in_use = len(table.leases)
            tokens = self._tokens(queue, limit, now) if limit.rate_limited else None
            usage[queue] = LimitUsage(in_use, tokens)
        return usage

    async def announce(self, queues: Collection[str]) -> None:
        self._notify(queues)
