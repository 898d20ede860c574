"""Flow control: the queue limits the features declare, applied to PUSH and FETCH.

Features declare limits (``Feature.queue_limits``): backpressure, throttles, rate limits. This
object merges them into two lookups the hot paths consult:

* ``bound(queue)`` at PUSH: a bounded queue's jobs go through ``Store.enqueue_bounded``;
* ``limits_for(queues)`` at FETCH: a FETCH naming a limited queue goes through
  ``Store.reserve_limited``. Both are one dict lookup, and nothing at all while no limit is
  configured, so unlimited queues keep the plain paths (and the PUSH hand-off).

It also wakes the FETCHes a limit holds back, without polling: a release (the end of a
throttled job's reservation, a worker gone) is announced through the store to every server,
and a time-based one (a lease running out, the next token) by a timer set for exactly then.
Until one of those comes, a queue found full is left out of the FETCHes that name it
(``passable``): a FETCH held back costs no store call, however often workers ask. Anything
that may make room wakes the queue (the store's ready listener: ``ready``), and a queue is
looked at again after ``MAX_HELD_SECONDS`` whatever happens, should a wake-up be lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import Reservation
from conveyor.store.limits import QueueLimit

if TYPE_CHECKING:
    from conveyor.manager.core import Manager
    from conveyor.manager.features import Feature

__all__ = ["ALL_QUEUES", "FlowControl", "merge_limits"]

ALL_QUEUES = "*"
"""The key of a limit that applies to every queue not named (backpressure only)."""

WAKE_MARGIN_SECONDS = 0.002
"""A timer fires this much after a lease ends or a token is due: never a hair too early."""

MAX_HELD_SECONDS = 2.0
"""A queue found full is looked at again after this long at most, wake-up or not."""

_LIMITS_CACHE_SIZE = 1024
"""FETCH queue lists whose limits ``limits_for`` remembers (workers repeat theirs)."""


_UNSET = QueueLimit()


def merge_limits(declared: Iterable[Mapping[str, QueueLimit]]) -> dict[str, QueueLimit]:
    """Every feature's limits, merged field by field (a field no feature sets keeps its
    default)."""
    merged: dict[str, QueueLimit] = {}
    for limits in declared:
        for queue, limit in limits.items():
            current = merged.get(queue)
            if current is None:
                merged[queue] = limit
                continue
            changes = {
                f.name: getattr(limit, f.name)
                for f in dataclasses.fields(limit)
                if getattr(limit, f.name) != getattr(_UNSET, f.name)
            }
            merged[queue] = dataclasses.replace(current, **changes)
    return merged


class FlowControl:
    """Owned by the manager; ``refresh`` takes the features' limits (at start, on SIGHUP)."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.fetch_limits: dict[str, QueueLimit] = {}
        """Queues with a throttle or a rate limit."""
        self.throttled: frozenset[str] = frozenset()
        """Queues with a throttle: the end of their reservations frees slots."""
        self.bounds: dict[str, int] = {}
        """Queues with a backpressure bound of their own (0: none, whatever the default)."""
        self.default_bound = 0
        self.bounding = False
        """Whether any queue has a bound: PUSHes check ``bound`` only then."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._held: dict[str, float] = {}
        """Queues found full -> the loop time until which FETCHes leave them out."""
        self._wake_count = 0
        """Wake-ups of limited queues so far, all queues together."""
        self._woken: dict[str, int] = {}
        """Limited queue -> ``_wake_count`` at its last wake-up: a FETCH that found it full
        holds it back only if no wake-up came while the store was answering."""
        self._limits_of: dict[tuple[str, ...], dict[str, QueueLimit] | None] = {}
        """``limits_for`` by FETCH queue list (each worker asks with the same list)."""

    def refresh(self, features: Sequence[Feature]) -> set[str]:
        """Take the features' current limits; returns the queues whose FETCH limits changed
        (the FETCHes waiting for them may have room now)."""
        merged = merge_limits(feature.queue_limits() for feature in features)
        default = merged.pop(ALL_QUEUES, QueueLimit())
        fetch = {q: limit for q, limit in merged.items() if limit.limits_fetch}
        changed = {
            q for q in fetch.keys() | self.fetch_limits.keys()
            if fetch.get(q) != self.fetch_limits.get(q)
        }  # fmt: skip
        self.fetch_limits = fetch
        self._limits_of = {}
        manager = self.manager
        # the store's ready listener: the waiters' own while no queue is limited (a PUSH's
        # wake-up costs what it did without the features)
        manager.store.set_ready_listener(self.ready if fetch else manager.waiters.notify)
        self.throttled = frozenset(q for q, limit in fetch.items() if limit.throttled)
        for queue in changed:
            self._held.pop(queue, None)
        self.bounds = {
            q: limit.backpressure for q, limit in merged.items() if limit.backpressure is not None
        }
        self.default_bound = default.backpressure or 0
        self.bounding = bool(self.default_bound or any(self.bounds.values()))
        return changed

    # ------------------------------------------------------------------ PUSH

    def bound(self, queue: str) -> int:
        """The backpressure bound of ``queue`` (0: none)."""
        return self.bounds.get(queue, self.default_bound)

    def bounds_for(self, queues: Iterable[str]) -> dict[str, int]:
        """The bounds of those of ``queues`` that have one."""
        if not self.bounding:
            return {}
        found = {}
        for queue in queues:
            if bound := self.bound(queue):
                found[queue] = bound
        return found

    # ------------------------------------------------------------------ FETCH

    def limits_for(self, queues: Sequence[str]) -> dict[str, QueueLimit] | None:
        """The limits of the limited queues among ``queues``; None when there are none.
        Shared between FETCHes with the same list: not to be changed."""
        limits = self.fetch_limits
        if not limits:
            return None
        key = tuple(queues)
        cache = self._limits_of
        try:
            return cache[key]
        except KeyError:
            pass
        found = {q: limits[q] for q in queues if q in limits} or None
        if len(cache) >= _LIMITS_CACHE_SIZE:
            cache.clear()
        cache[key] = found
        return found

    def limited(self, queue: str) -> bool:
        return queue in self.fetch_limits

    def passable(self, queues: Sequence[str]) -> Sequence[str]:
        """``queues`` without those found full that nothing has made room in since."""
        held = self._held
        if not held:
            return queues
        now = asyncio.get_running_loop().time()
        return [q for q in queues if held.get(q, 0.0) <= now]

    def ready(self, queue: str) -> None:
        """The store's ready listener: ``queue`` may have jobs, or room, now."""
        if queue in self.fetch_limits:
            self._wake_count += 1
            self._woken[queue] = self._wake_count
            if self._held:
                self._held.pop(queue, None)
        self.manager.waiters.notify(queue)

    def wakes(self) -> int:
        """What ``held_back`` is given: the wake-ups counted so far (one number, not a copy of
        every queue's: this is taken before each limited FETCH)."""
        return self._wake_count

    def held_back(self, blocked: Mapping[str, float | None], wakes: int) -> None:
        """Queues a FETCH found full: leave them out until something may make room, and wake
        their waiters when a lease ends or a token is due (a release announces itself). One
        timer per queue, the soonest. ``wakes`` is ``wakes()`` from before the store call: a
        queue woken since is not held back (the store may have answered before the wake)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for queue, wait in blocked.items():
            if self._woken.get(queue, 0) <= wakes:
                self._held[queue] = now + min(MAX_HELD_SECONDS, wait or MAX_HELD_SECONDS)
            if wait is None:
                continue
            when = now + wait + WAKE_MARGIN_SECONDS
            timer = self._timers.get(queue)
            if timer is not None and not timer.cancelled() and timer.when() <= when:
                continue
            if timer is not None:
                timer.cancel()
            self._timers[queue] = loop.call_at(when, self._wake, queue)

    def _wake(self, queue: str) -> None:
        self._timers.pop(queue, None)
        self.ready(queue)

    async def ended(self, ended: Iterable[Reservation]) -> None:
        """These reservations ended (FAIL, expiry, dropped; an ACK frees its slots itself):
        those of throttled queues free their slots, and the FETCHes waiting for them, here
        and on every server, wake."""
        throttled = self.throttled
        if not throttled:
            return
        freed = [r for r in ended if r.queue in throttled]
        if freed:
            await self.manager.store.release_slots(freed)

    async def worker_gone(self, wid: str) -> None:
        """A worker is gone (its last connection closed, or it was reaped): its slots free."""
        throttled = [queue for queue, limit in self.fetch_limits.items() if limit.throttled]
        if not throttled:
            return
        freed = await self.manager.store.release_worker_slots(wid, throttled)
        if freed:
            await self.manager.store.announce(freed)

    def forget_held(self) -> None:
        """Everything may have changed (FLUSH): look at every queue again."""
        self._held.clear()

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._held.clear()
