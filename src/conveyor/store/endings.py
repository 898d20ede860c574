"""Endings: transitions that end reservations and say what ended.

``Store.ack`` only counts what it ended; features need more. A unique job's lock is released
when its job succeeds, an expiring job's index entry goes with it, a throttle's waiting FETCHes
are woken when a job of its queue finishes: all of that needs the reservation's queue and
payload. ``ack_returning`` gives them in the same step as the ACK, so no ACK pays an extra
read (on Redis, a round trip) to learn what it acknowledged.

With ``ends`` (the batches capability's ``EndContext``), the same step ends the marks of the
jobs it acknowledges that have unfinished ones (``Batches.end_jobs`` with a success): a
batch's counters, its callbacks, the jobs waiting for them move with the reservation, so an
ACK answered ``+OK`` has counted in its batch under any fault, and no ACK pays a second step.
With ``keep`` (completed-set entries, ``store/completed.py``), the jobs that asked to be kept
go into the ``completed`` set in that same step. One ACK of a kept batch job in a throttled
queue thus ends its reservation, frees its slot, moves its batch and keeps it, all or nothing.
With ``settle`` (a ``Settle``: the results feature's), the ACK asks, for each reservation it
ends, what to store with it (an outcome record, a completed entry) and stores that in the same
step too: an in-process store asks with the reservations its own ``DELETE ... RETURNING`` gave,
reading nothing before; a shared one (Redis) asks with those it noted at their FETCH
(``settle_marks``) or reads them first, and its ACK's own script writes the records, only for
the very reservations it ends (docs/design/results.md).

``discard_reservations`` ends reservations without counting them as processed or failed: a
job dropped at FETCH (it expired) was never worked on. ``take_queued`` removes jobs from a
queue and returns them, so what removed them (the expiry sweep, an admin delete) can tell the
features which jobs are gone (a unique job's lock is released with it).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from conveyor.store.batches import EndContext, Fired

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import QueuedJob, Reservation, SetEntry
    from conveyor.store.records import Record

__all__ = ["Acked", "Endings", "Settle"]


class Settle(Protocol):
    """What an ACK stores with each reservation it ends (``Endings.ack_returning``): for the
    results feature, a job's outcome record (in ``space``) and its completed entry."""

    space: str
    """The records space of the records it returns."""
    topic: str
    """The signal (``store/signals.py``) announcing the jids it ``told``: a shared store that
    writes the records in the ACK's own step publishes it there, and says so
    (``signalled``), so the caller tells only its own server's listeners."""
    told: list[str]
    """The jids whose waiters the signal wakes (filled as it is called)."""
    signalled: bool
    """Set by a store that published the signal with its ACK (Redis)."""

    def wants(self, jid: str) -> bool:
        """Whether the reservation of ``jid`` may need something stored (a store that reads
        before its ACK reads only those)."""

    def __call__(self, reservation: Reservation) -> tuple[Record | None, SetEntry | None]:
        """What to store with this reservation, which the ACK ends: a record, a completed
        entry (for its jid), both or neither. Called inside the ACK's step: it must not
        suspend, and it may be called for a reservation ``wants`` did not ask for."""


@dataclass(slots=True)
class Acked:
    """What an ACK ended: ``ended``, the reservations (in ``jids`` order; each counted
    processed); ``fired``, what ending the marks of some of them set off (``Fired``: callbacks
    and released jobs scheduled, ...), empty without ``ends``."""

    ended: list[Reservation]
    fired: Fired = field(default_factory=Fired)


class Endings(abc.ABC):
    """The endings capability; every backend implements it (``Store`` includes it)."""

    settle_marks: tuple[bytes, ...] = ()
    """Bytes whose presence in a reserved job's payload says its ACK will come with a
    ``settle`` (the results feature sets its ``custom`` keys): a shared store may keep such
    reservations from their FETCH, so that their ACK need not read them back (Redis)."""

    @abc.abstractmethod
    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        keep: Sequence[SetEntry] = (),
        settle: Settle | None = None,
    ) -> Acked:
        """``ack`` (same counting), returning the reservations it ended, in ``jids`` order.
        Those of a queue in ``throttled`` free their throttle slot and their queue is
        announced (``Limits.release_slots``), in the same step: on Redis one round trip.
        With ``marks``, a store may leave out (as ``b""``) the payloads that hold none of
        them: the caller needs no other (Redis does, to send less back). With ``ends``, the
        jobs with an unfinished mark end it in the same step, as ``Batches.end_jobs`` does for
        a success, and ``Acked.fired`` says what that set off. ``keep``: entries of some of
        ``jids``; a job whose reservation ends is put into the ``completed`` set with its
        entry (replacing one of the same jid) in the same step; an entry whose reservation
        did not end changes nothing. ``settle``: what to store with each reservation that
        ends, asked in the step (a record, an entry as of ``keep``), stored in it: all of
        it, with the ACK, or none (a shared store notes the reservations at FETCH,
        ``settle_marks``, or reads them first, and writes the records in its step). (On
        Redis a batch's key must be declared: a job whose batch is found only in the step is
        acknowledged by a second one, with its batch declared and its entry; each job is
        still ended, kept and counted in exactly one step.)"""

    def ack_returning_soon(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        done: Callable[[list[Reservation] | None, BaseException | None], object],
    ) -> bool:
        """``ack_returning`` without ``ends`` or ``keep`` (jobs known to carry no marks, none
        kept) with a callback, for a store whose writes wait for I/O but need no task (as
        ``Store.ack_soon``): False, with nothing done, when it cannot now (the caller then
        awaits ``ack_returning``); else ``done`` gets the reservations ``ack_returning``
        would have ended (``Acked.ended``) or what it raised, from the event loop."""
        return False

    def ack_settled_soon(
        self,
        jid: str,
        day: str,
        settle: Settle,
        done: Callable[[Acked | None, BaseException | None], object],
    ) -> bool:
        """``ack_returning`` of one job with ``settle`` (no ``throttled``, ``marks``, ``ends``
        or ``keep``: a job no feature watches) with a callback, for a store whose writes wait
        for I/O (as ``ack_returning_soon``): ``done`` gets the ``Acked`` ``ack_returning``
        would have returned, or what it raised. False, with nothing done, when it cannot now
        (on Redis: the reservation was not noted at its FETCH); the caller then awaits
        ``ack_returning``."""
        return False

    def ack_returning_now(
        self,
        jids: Sequence[str],
        day: str,
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        settle: Settle | None = None,
    ) -> Acked | None:
        """``ack_returning`` without ``throttled`` or ``keep``, done in the caller's step (an
        ACK answered without a task: a watched job's, whose marks end in it, or a results
        job's, whose outcome ``settle`` stores in it); only for ``in_process`` stores. None,
        with nothing done, when it would have to wait (as ``ack_now``), and on every shared
        store."""
        return None

    def ack_ending_soon(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        ends: EndContext,
        done: Callable[[Acked | None, BaseException | None], object],
    ) -> bool:
        """``ack_returning`` with ``ends`` (no ``keep``) with a callback, for a store whose
        writes wait for I/O (as ``ack_returning_soon``): ``done`` gets the ``Acked``
        ``ack_returning`` would have returned, or what it raised. False, with nothing done,
        when it cannot now."""
        return False

    @abc.abstractmethod
    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        """End these reservations without counting anything; returns those that existed."""

    @abc.abstractmethod
    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        """Remove the jobs of these jids from ``queue`` and return them, oldest first.
        Durable as ``delete_queued``."""
