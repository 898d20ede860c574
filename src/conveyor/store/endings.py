"""Endings: transitions that end reservations and say what ended.

``Store.ack`` only counts what it ended; features need more. A unique job's lock is released
when its job succeeds, an expiring job's index entry goes with it, a throttle's waiting FETCHes
are woken when a job of its queue finishes: all of that needs the reservation's queue and
payload. ``ack_returning`` gives them in the same step as the ACK, so no ACK pays an extra
read (on Redis, a round trip) to learn what it acknowledged.

``discard_reservations`` ends reservations without counting them as processed or failed: a
job dropped at FETCH (it expired) was never worked on. ``take_queued`` removes jobs from a
queue and returns them, so what removed them (the expiry sweep, an admin delete) can tell the
features which jobs are gone (a unique job's lock is released with it).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import QueuedJob, Reservation

__all__ = ["Endings"]


class Endings(abc.ABC):
    """The endings capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        """``ack`` (same counting), returning the reservations it ended, in ``jids`` order.
        Those of a queue in ``throttled`` free their throttle slot and their queue is
        announced (``Limits.release_slots``), in the same step: on Redis one round trip.
        With ``marks``, a store may leave out (as ``b""``) the payloads that hold none of
        them: the caller needs no other (Redis does, to send less back)."""

    def ack_returning_soon(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        done: Callable[[list[Reservation] | None, BaseException | None], object],
    ) -> bool:
        """``ack_returning`` with a callback, for a store whose writes wait for I/O but need
        no task (as ``Store.ack_soon``): False, with nothing done, when it cannot now (the
        caller then awaits ``ack_returning``); else ``done`` gets what ``ack_returning``
        would have returned or raised, from the event loop."""
        return False

    @abc.abstractmethod
    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        """End these reservations without counting anything; returns those that existed."""

    @abc.abstractmethod
    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        """Remove the jobs of these jids from ``queue`` and return them, oldest first.
        Durable as ``delete_queued``."""
