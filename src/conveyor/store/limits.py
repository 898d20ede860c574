"""Limits: what may enter a queue and how fast it may leave, checked and applied atomically.

The capability behind queue backpressure, throttles and rate limits
(``manager/features/{backpressure,throttles,rate_limits}.py``). Each check-and-act is one step
of the store -- one Lua script on Redis -- so servers sharing a store never exceed a limit
together:

* ``enqueue_bounded``: ``enqueue``, refusing the jobs of a queue that holds its bound already;
* ``reserve_limited``: ``reserve``, taking from a limited queue no more than its limit allows,
  and in the same step taking the throttle slots and rate-limit tokens of what it reserved.

**Throttle slots.** A job reserved from a throttled queue holds a slot, with the worker (wid)
that reserved it and a lease (``timeout`` seconds, or the reservation's own length). A slot
is free again when its reservation ends (an ACK frees it in its own step, given the throttled
queues: ``Endings.ack_returning``; FAIL and expiry through ``release_slots``; either way the
FETCHes waiting for the queue are woken on every server), when its lease runs out, or when
``release_worker_slots`` says its worker is gone. ``ack`` and ``fail`` themselves know nothing
of throttles; should a release be missed (a server killed between the two), a queue that
looks full is checked for slots whose reservation has ended.

**Rate limits** are token buckets, one per queue, shared by every server on the store: up to
``burst`` tokens, refilled at ``rate`` per second, one token per job reserved. The Redis store
counts time with Redis's own clock, so servers whose clocks disagree still share one rate.

An unlimited queue never comes here: the manager calls plain ``reserve``/``enqueue`` for it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import QueuedJob, Reservation

__all__ = [
    "InProcessSlots",
    "LimitUsage",
    "Limited",
    "Limits",
    "QueueLimit",
    "SlotTable",
    "bucket_tokens",
    "room_for",
    "token_wait",
]


@dataclass(frozen=True, slots=True)
class QueueLimit:
    """The limits of one queue; 0 means "no such limit"."""

    concurrency: int = 0
    """Throttle: at most this many jobs of the queue reserved at once, over every server."""
    per_worker: int = 0
    """Throttle: at most this many reserved at once by one worker process (wid)."""
    timeout: float = 0.0
    """Seconds a throttle slot is held at most (0: as long as the reservation)."""
    rate: float = 0.0
    """Rate limit: jobs per second (tokens added per second)."""
    burst: float = 0.0
    """Rate limit: the bucket's size (tokens it holds when full); at least 1 when ``rate``."""
    backpressure: int | None = None
    """PUSH refuses jobs while the queue holds this many (``enqueue_bounded``); 0 says "no
    bound" where a default would apply, None says nothing."""

    @property
    def throttled(self) -> bool:
        return self.concurrency > 0 or self.per_worker > 0

    @property
    def rate_limited(self) -> bool:
        return self.rate > 0

    @property
    def limits_fetch(self) -> bool:
        return self.throttled or self.rate_limited


@dataclass(frozen=True, slots=True)
class Limited:
    """What ``reserve_limited`` did: the reservations, and the queues it skipped."""

    reservations: list[Reservation]
    blocked: dict[str, float | None] = field(default_factory=dict)
    """Queues that had jobs but were skipped for their limit, with the seconds until a
    lease ends or a token is due (then they may have room); None when only a release (ACK,
    FAIL, expiry, a worker gone) will make room."""


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A limited queue now: throttle slots held, and the tokens of its bucket."""

    in_use: int = 0
    tokens: float | None = None
    """None when the queue has no rate limit."""


def bucket_tokens(tokens: float | None, updated_at: float, now: float, limit: QueueLimit) -> float:
    """A bucket's tokens at ``now``: refilled since ``updated_at``, at most ``burst``. A bucket
    never seen (``tokens`` None) is full."""
    if tokens is None:
        return limit.burst
    return min(limit.burst, tokens + max(0.0, now - updated_at) * limit.rate)


def token_wait(tokens: float, limit: QueueLimit) -> float:
    """Seconds until a bucket holding ``tokens`` (< 1) has one token."""
    return max(0.0, (1.0 - tokens) / limit.rate)


def room_for(
    limit: QueueLimit,
    now: float,
    *,
    in_use: int = 0,
    mine: int = 0,
    soonest_lease: float | None = None,
    soonest_mine: float | None = None,
    tokens: float | None = None,
) -> tuple[int, float | None]:
    """How many jobs ``limit`` lets one worker reserve now, given the live throttle slots
    (``in_use``; ``mine`` of them its own, with the soonest lease of each kind) and the
    bucket's refilled ``tokens``. When that is 0, also the seconds until a lease ends or a
    token is due, after which there may be room (None: only a release will make room)."""
    room = math.inf
    waits: list[float | None] = []  # per binding limit: when it may lift (None: a release)
    if limit.concurrency:
        room = min(room, limit.concurrency - in_use)
        if in_use >= limit.concurrency:
            waits.append(None if soonest_lease is None else soonest_lease - now)
    if limit.per_worker:
        room = min(room, limit.per_worker - mine)
        if mine >= limit.per_worker:
            waits.append(None if soonest_mine is None else soonest_mine - now)
    if limit.rate_limited:
        have = limit.burst if tokens is None else tokens
        room = min(room, math.floor(have + 1e-9))
        if have + 1e-9 < 1:
            waits.append(token_wait(have, limit))
    if room >= 1:
        return (UNLIMITED if room == math.inf else int(room)), None
    if not waits or any(wait is None for wait in waits):
        return 0, None
    return 0, max(0.0, *(wait for wait in waits if wait is not None))


UNLIMITED = 1 << 62
"""``room_for`` of a queue none of whose limits apply."""


class SlotTable:
    """One throttled queue's slots, kept in this process (the memory and SQLite stores):
    ``jid -> (wid, lease end)`` and the count per worker, so that asking for room is O(1);
    leases that ran out and reservations that ended are looked for only when the queue looks
    full (``room``'s caller then ``expire``s and ``keep``s, and asks again)."""

    __slots__ = ("leases", "per_worker")

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, float]] = {}
        self.per_worker: dict[str, int] = {}

    def add(self, jid: str, wid: str, lease: float) -> None:
        if jid in self.leases:
            self.remove(jid)
        self.leases[jid] = (wid, lease)
        self.per_worker[wid] = self.per_worker.get(wid, 0) + 1

    def remove(self, jid: str) -> bool:
        held = self.leases.pop(jid, None)
        if held is None:
            return False
        left = self.per_worker[held[0]] - 1
        if left:
            self.per_worker[held[0]] = left
        else:
            del self.per_worker[held[0]]
        return True

    def remove_worker(self, wid: str) -> bool:
        mine = [jid for jid, (w, _lease) in self.leases.items() if w == wid]
        for jid in mine:
            self.remove(jid)
        return bool(mine)

    def expire(self, now: float) -> None:
        for jid in [jid for jid, (_w, lease) in self.leases.items() if lease <= now]:
            self.remove(jid)

    def keep(self, reserved: Collection[str]) -> None:
        """Drop the slots whose jid is not in ``reserved`` (their reservation ended)."""
        for jid in [jid for jid in self.leases if jid not in reserved]:
            self.remove(jid)

    def room(
        self, limit: QueueLimit, wid: str, now: float, tokens: float | None, full: bool = False
    ) -> tuple[int, float | None]:
        """``room_for`` with these slots; ``full``: also work out the soonest leases (when
        the queue was found full, to say how long until one ends)."""
        if not full:  # asked before every FETCH of the queue: room_for's answer when >= 1
            room = UNLIMITED
            if limit.concurrency:
                room = limit.concurrency - len(self.leases)
            if limit.per_worker:
                room = min(room, limit.per_worker - self.per_worker.get(wid, 0))
            if tokens is not None:  # a rate limit (the bucket's tokens, refilled)
                room = min(room, math.floor(tokens + 1e-9))
            if room >= 1:
                return room, None
        soonest = soonest_mine = None
        if full and self.leases:
            soonest = min(lease for _w, lease in self.leases.values())
            mine = [lease for w, lease in self.leases.values() if w == wid]
            soonest_mine = min(mine, default=None)
        return room_for(
            limit,
            now,
            in_use=len(self.leases),
            mine=self.per_worker.get(wid, 0),
            soonest_lease=soonest,
            soonest_mine=soonest_mine,
            tokens=tokens,
        )


class Limits(abc.ABC):
    """The limits capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def enqueue_bounded(
        self, jobs: Sequence[QueuedJob], bounds: Mapping[str, int]
    ) -> list[QueuedJob]:
        """``enqueue`` the jobs, in order, except those whose queue holds its bound (its
        ``bounds`` entry; unbounded queues are not in ``bounds``) when their turn comes;
        return those refused, having stored nothing of them. Durable as ``enqueue``."""

    @abc.abstractmethod
    async def reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        """``reserve``, except that a queue with an entry in ``limits`` gives no more jobs
        than its throttle and its bucket allow, taking a slot and a token for each in the same
        atomic step. A queue with no room is skipped (and reported in ``blocked`` if it has
        jobs): the next queue is served."""

    def reserve_limited_now(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited | None:
        """``reserve_limited`` done in the caller's step, for a FETCH answered without a task;
        only for ``in_process`` stores (as ``Store.reserve_now``). None, with nothing done,
        when it would have to wait (SQLite while commits fail); the caller then awaits
        ``reserve_limited``."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    def reserve_limited_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
        done: Callable[[Limited | None, BaseException | None], bool],
    ) -> bool:
        """``reserve_limited`` with a callback, for a store whose writes wait for I/O but
        need no task (as ``Store.reserve_soon``): False, with nothing done, when it cannot
        now; else ``done`` gets what ``reserve_limited`` returns or raises, from the event
        loop, and says whether its FETCH took the jobs (those it did not take go back)."""
        return False

    def ack_throttled_now(self, jid: str, queue: str, day: str) -> int | None:
        """``Store.ack_now`` of a job reserved from the throttled ``queue`` (a job that
        carries no marks, none kept), freeing its slot and announcing the queue in the same
        step, as ``Endings.ack_returning`` would; only for ``in_process`` stores, None with
        nothing done when it would have to wait."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    @abc.abstractmethod
    async def release_slots(self, ended: Sequence[Reservation]) -> None:
        """These reservations ended (ACK, FAIL, expiry, dropped): free the throttle slots
        they held, if any, and ``announce`` their queues."""

    @abc.abstractmethod
    async def release_worker_slots(self, wid: str, queues: Collection[str]) -> list[str]:
        """Free the throttle slots worker ``wid`` holds in these queues (it is gone); returns
        the queues where slots were freed."""

    @abc.abstractmethod
    async def limit_usage(
        self, limits: Mapping[str, QueueLimit], now: float
    ) -> dict[str, LimitUsage]:
        """For each queue of ``limits``: the live throttle slots and the bucket's tokens."""

    @abc.abstractmethod
    async def announce(self, queues: Collection[str]) -> None:
        """Wake the FETCHes waiting for these queues on every server sharing the store (the
        ready listener of each): a slot was freed or a limit raised."""


_NO_TABLES: dict[str, SlotTable] = {}
_NO_SLOTS = SlotTable()
"""The slots of a queue without a throttle (a rate limit alone): always empty."""


class InProcessSlots:
    """Throttle slots and token buckets kept in memory (``_throttle_slots``: queue ->
    ``SlotTable``; ``_rate_buckets``: queue -> (tokens, updated at)), for the stores one
    server owns (memory, SQLite): how much room a queue has, taking and freeing slots and
    tokens, and their usage are the same for both. Each store says where a queue's slots come
    from (``_limit_slots``) and how the reservations that ended are pruned (``_prune``)."""

    if TYPE_CHECKING:

        def _notify(self, queues: Iterable[str]) -> None: ...

        def ack_now(self, jids: Sequence[str], day: str) -> int | None: ...

        def _limit_slots(self, queue: str, limit: QueueLimit) -> SlotTable: ...

        def _prune(self, slots: SlotTable, now: float) -> None: ...

    def _limit_buckets(self) -> dict[str, tuple[float, float]]:
        buckets: dict[str, tuple[float, float]] = self.__dict__.setdefault("_rate_buckets", {})
        return buckets

    def _tokens(self, queue: str, limit: QueueLimit, now: float) -> float:
        tokens, updated_at = self._limit_buckets().get(queue, (None, now))
        return bucket_tokens(tokens, updated_at, now, limit)

    def _flush_limits(self) -> None:
        self.__dict__.pop("_throttle_slots", None)
        self.__dict__.pop("_rate_buckets", None)

    def _limit_room(
        self, queue: str, limit: QueueLimit, wid: str, now: float
    ) -> tuple[int, float | None]:
        """How many jobs ``queue`` may give now, and when it may have room if none."""
        tokens = self._tokens(queue, limit, now) if limit.rate_limited else None
        slots = self._limit_slots(queue, limit) if limit.throttled else _NO_SLOTS
        room, wait = slots.room(limit, wid, now, tokens)
        if room or not limit.throttled:
            return room, wait
        self._prune(slots, now)  # full: leases that ran out, reservations that ended, again
        return slots.room(limit, wid, now, tokens, full=True)

    def _take_limited(
        self, queue: str, limit: QueueLimit, taken: list[Reservation], now: float
    ) -> None:
        """The slots and tokens of the jobs ``taken`` from ``queue``, in their step."""
        if limit.throttled:
            slots = self._limit_slots(queue, limit)
            for r in taken:
                slots.add(r.jid, r.wid, now + limit.timeout if limit.timeout else r.expires_at)
        if limit.rate_limited:
            self._limit_buckets()[queue] = (self._tokens(queue, limit, now) - len(taken), now)

    async def limit_usage(
        self, limits: Mapping[str, QueueLimit], now: float
    ) -> dict[str, LimitUsage]:
        usage = {}
        for queue, limit in limits.items():
            in_use = 0
            if limit.throttled:
                table = self._limit_slots(queue, limit)
                self._prune(table, now)
                in_use = len(table.leases)
            tokens = self._tokens(queue, limit, now) if limit.rate_limited else None
            usage[queue] = LimitUsage(in_use, tokens)
        return usage

    async def announce(self, queues: Collection[str]) -> None:
        self._notify(queues)

    async def release_slots(self, ended: Sequence[Reservation]) -> None:
        self._free_slots(ended)

    def _free_slots(self, ended: Sequence[Reservation]) -> None:
        """``release_slots`` in this step (an ACK's, without a coroutine of its own)."""
        every: dict[str, SlotTable] = self.__dict__.get("_throttle_slots", _NO_TABLES)
        for reservation in ended:
            table = every.get(reservation.queue)
            if table is not None:
                table.remove(reservation.jid)
        self._notify([ended[0].queue] if len(ended) == 1 else [r.queue for r in ended])

    def ack_throttled_now(self, jid: str, queue: str, day: str) -> int | None:
        """``Store.ack_now`` of a job reserved from the throttled ``queue``, freeing its slot
        and announcing the queue in the same step (as ``ack_returning`` does, without reading
        back the reservation: the caller knows its queue). None, with nothing done, when the
        ACK would have to wait (SQLite while commits fail)."""
        done = self.ack_now((jid,), day)
        if done:
            every: dict[str, SlotTable] = self.__dict__.get("_throttle_slots", _NO_TABLES)
            table = every.get(queue)
            if table is not None:
                table.remove(jid)
            self._notify((queue,))
        return done

    async def release_worker_slots(self, wid: str, queues: Collection[str]) -> list[str]:
        every: dict[str, SlotTable] = self.__dict__.get("_throttle_slots", _NO_TABLES)
        return [q for q in queues if q in every and every[q].remove_worker(wid)]
