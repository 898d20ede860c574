"""Limits (``conveyor.store.limits``) in memory: throttle slots and buckets in dicts."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.limits import (
    Limited,
    Limits,
    LimitUsage,
    QueueLimit,
    bucket_tokens,
    room_for,
)

__all__ = ["MemoryLimits"]

_Slots = dict[str, tuple[str, float]]  # jid -> (wid, lease end)


class MemoryLimits(Limits):
    """Mixed into ``MemoryStore`` (whose queues and reservations it uses). Every method
    completes without awaiting, so each is atomic on the event loop."""

    if TYPE_CHECKING:  # MemoryStore's
        _queues: dict[str, deque[QueuedJob]]
        _paused: set[str]
        _reservations: dict[str, Reservation]

        def _push(self, job: QueuedJob) -> None: ...

        def _notify(self, queues: Iterable[str]) -> None: ...

    def _limit_slots(self, queue: str) -> _Slots:
        slots: dict[str, _Slots] = self.__dict__.setdefault("_throttle_slots", {})
        return slots.setdefault(queue, {})

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

    def _limit_live_slots(self, queue: str, now: float, prune_gone: bool) -> _Slots:
        slots = self._limit_slots(queue)
        for jid in [j for j, (_w, lease) in slots.items() if lease <= now]:
            del slots[jid]
        if prune_gone:
            for jid in [j for j in slots if j not in self._reservations]:
                del slots[jid]
        return slots

    def _limit_room(
        self, queue: str, limit: QueueLimit, wid: str, now: float
    ) -> tuple[int, float | None]:
        slots: _Slots = {}
        tokens = None
        if limit.rate_limited:
            tokens = self._tokens(queue, limit, now)
        room, wait = 0, None
        for prune_gone in (False, True):  # gone reservations are looked for only when full
            if limit.throttled:
                slots = self._limit_live_slots(queue, now, prune_gone)
            mine = [lease for w, lease in slots.values() if w == wid]
            room, wait = room_for(
                limit,
                now,
                in_use=len(slots),
                mine=len(mine),
                soonest_lease=min((lease for _w, lease in slots.values()), default=None),
                soonest_mine=min(mine, default=None),
                tokens=tokens,
            )
            if room or not limit.throttled:
                break
        return room, wait

    def _take_limited(
        self, queue: str, limit: QueueLimit, taken: list[Reservation], now: float
    ) -> None:
        if limit.throttled:
            slots = self._limit_slots(queue)
            for r in taken:
                slots[r.jid] = (r.wid, now + limit.timeout if limit.timeout else r.expires_at)
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

    async def release_slots(self, ended: Sequence[Reservation]) -> None:
        every: dict[str, _Slots] = self.__dict__.get("_throttle_slots", {})
        for reservation in ended:
            every.get(reservation.queue, {}).pop(reservation.jid, None)
        self._notify(r.queue for r in ended)

    async def release_worker_slots(self, wid: str, queues: Collection[str]) -> list[str]:
        freed = []
        for queue in queues:
            slots = self._limit_slots(queue)
            mine = [jid for jid, (w, _lease) in slots.items() if w == wid]
            for jid in mine:
                del slots[jid]
            if mine:
                freed.append(queue)
        return freed

    async def limit_usage(
        self, limits: Mapping[str, QueueLimit], now: float
    ) -> dict[str, LimitUsage]:
        usage = {}
        for queue, limit in limits.items():
            live = [
                jid
                for jid, (_w, lease) in self._limit_slots(queue).items()
                if lease > now and jid in self._reservations
            ]
            tokens = None
            if limit.rate_limited:
                tokens = self._tokens(queue, limit, now)
            usage[queue] = LimitUsage(len(live), tokens)
        return usage

    async def announce(self, queues: Collection[str]) -> None:
        self._notify(queues)
