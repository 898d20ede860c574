"""The next FETCH's reserve, sent with the ACK before it (Redis).

A Faktory client's processor works one job at a time on its connection: FETCH, run, ACK,
FETCH, ... On Redis each of those is a round trip from conveyor to Redis, so a busy worker's
job costs two (the reserve and the ACK) between one reply and the next. When a connection
has kept that rhythm (an ACK, then a FETCH of the same queues as the FETCH before, in any
order, which found a job: ``Rhythm``), the ACK's step also sends the next FETCH's
reserve, right behind the ACK's script on the same Redis connection (``Ahead``). Redis
answers both in one round trip; the FETCH that follows finds its job already reserved and is
answered without waiting for Redis.

The rules of a FETCH stay the FETCH's: the job is handed over (fetch hooks, metrics, the
ACKs to watch) only when a FETCH of the same queues, by a running worker, comes to take it.
Anything else gives it back to the head of its queue (``Store.reserve_ahead_soon``), in
order, unless something else ended its reservation meanwhile: a FETCH of other queues, no
FETCH within ``ManagerConfig.fetch_ahead_seconds``, the connection closing. A reserve that
comes back empty, or a job given back, stops the rhythm until a FETCH finds a job again and
makes the connection pass the next chances by (``Rhythm._missed``), so an idle queue or a
pooled client (its next FETCH on another connection) rarely costs a reserve.
docs/design/hand-off.md says more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.manager.later import Later
from conveyor.manager.soon import _deliver, _taken
from conveyor.store.base import Reservation

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = ["Ahead", "Rhythm", "same_queues"]


def same_queues(a: Sequence[str], b: Sequence[str] | None) -> bool:
    """Whether two FETCHes name the same queues, in any order: clients that weigh their
    queues shuffle them for each FETCH, so the order of the FETCH before is as good a draw
    as this one's; a client with a strict order sends the same list every time."""
    return b is not None and (a == b or (len(a) == len(b) and set(a) == set(b)))


class Ahead:
    """One reserve sent for a FETCH that has not come yet: its jobs are held until a FETCH
    takes them (``take``) or they are given back (``give_back``)."""

    __slots__ = ("_give_back", "_later", "_manager", "_reply", "_timer", "over", "queues")

    def __init__(self, manager: Manager, queues: Sequence[str]) -> None:
        self._manager = manager
        self.queues = queues
        self._reply: list[Reservation] | None = None  # what the reserve found, once answered
        self._later: Later[list[bytes]] | None = None  # the FETCH that came meanwhile
        self._give_back: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.over = False  # taken or given back: nothing more to do

    def send(self, wid: str, hold: float) -> bool:
        """Send the reserve; False, with nothing sent, where the store cannot."""
        store = self._manager.store
        give_back = store.reserve_ahead_soon(self.queues, wid, time.time(), 1, self._reserved)
        if give_back is None:
            return False
        self._give_back = give_back
        self._timer = asyncio.get_running_loop().call_later(hold, self.give_back)
        return True

    def _reserved(
        self, reservations: list[Reservation] | None, error: BaseException | None
    ) -> bool:
        """The store's answer: whether the jobs are kept (False: the store gives them back)."""
        if self._later is not None:  # a FETCH waits for this reply: it is that FETCH's now
            later, self._later = self._later, None
            if error is not None or not reservations:
                # nothing found, or the reserve failed (a lost reply is given back by the
                # store): the FETCH goes the long way
                return later.settle([], None)
            return _deliver(self._manager, later, reservations, None)
        if self.over or error is not None:
            return False
        self._reply = reservations or []
        if not reservations and self._timer is not None:  # nothing to give back
            self._timer.cancel()
            self._timer = None
        return True

    def take(self, queues: Sequence[str], wid: str) -> list[bytes] | Later[list[bytes]] | None:
        """A FETCH of ``queues`` came: its jobs (``[]``: none, the FETCH waits the long way),
        a ``Later`` for them while the reply is on its way or fetch hooks run, or None when
        they are not for it (given back; the FETCH goes on as usual)."""
        if self.over:
            return None
        manager = self._manager
        # what the ACK checked may have changed since: the worker told to quiet, a throttle
        # or fetch middleware loaded (a job reserved ahead is taken only as a FETCH's would be)
        if not same_queues(queues, self.queues) or not manager.fetches_ahead(queues, wid):
            self.give_back()
            return None
        self._end()
        reply = self._reply
        if reply is None:  # still on its way: this FETCH takes the reply
            later: Later[list[bytes]] = Later()
            self._later = later
            return later
        return _taken(manager, reply) if reply else []

    def give_back(self) -> None:
        """Nobody takes these jobs: back to the head of their queues (or, while the reply is
        on its way, when it comes: ``_reserved`` returns False)."""
        if self.over:
            return
        self._end()
        if self._reply:
            self._release()

    def _release(self) -> None:
        if self._give_back is not None:
            self._give_back()
            self._give_back = None

    def _end(self) -> None:
        self.over = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_MAX_MISSES = 6


class Rhythm:
    """One connection's FETCH and ACK pattern: whether its ACK may reserve for the FETCH
    that should follow (module docstring). The server keeps one per connection and tells it
    of each ACK and FETCH."""

    __slots__ = ("_acked", "_candidate", "_misses", "_skips", "_used", "ahead", "queues", "steady")

    def __init__(self) -> None:
        self.queues: Sequence[str] | None = None  # the last FETCH's
        self.steady = False  # the last FETCH followed an ACK, named the same queues, found a job
        self.ahead: Ahead | None = None
        self._acked = False  # an ACK came since the last FETCH
        self._candidate = False  # this FETCH followed an ACK and named the same queues
        self._used = False  # this FETCH was given the jobs reserved ahead
        self._misses = 0  # reserves ahead in a row that no FETCH took a job from
        self._skips = 0  # steady ACKs still to pass by without a reserve (after misses)

    def acked(self, manager: Manager, wid: str) -> None:
        """An ACK was sent to a store that is not in process: reserve for the next FETCH."""
        self._acked = True
        queues = self.queues
        if not self.steady or queues is None or self.ahead is not None:
            return
        if self._skips:  # the last ones were wasted: fewer, until one finds a job again
            self._skips -= 1
            return
        hold = manager.config.fetch_ahead_seconds
        if hold <= 0 or not manager.fetches_ahead(queues, wid):
            return
        ahead = Ahead(manager, queues)
        if ahead.send(wid, hold):
            self.ahead = ahead

    def fetch(self, queues: Sequence[str], wid: str) -> list[bytes] | Later[list[bytes]] | None:
        """A FETCH answered at once came: the jobs reserved ahead for it, or None (the usual
        FETCH). ``found`` then says what it got."""
        self._candidate = self._acked and same_queues(queues, self.queues)
        self._acked = False
        self.queues = queues
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            self._used = False
            return None
        taken = ahead.take(queues, wid)
        self._used = taken is not None
        if taken is None:  # given back: not for this FETCH, or held too long
            self._missed()
        return taken

    def found(self, jobs: list[bytes] | None) -> None:
        """What that FETCH got at once (None or ``[]``: nothing, it waits the long way). A
        job found at once, after an ACK, keeps the rhythm."""
        if self._used:
            self._used = False
            if jobs:
                self._misses = 0
            else:
                self._missed()
        self.steady = bool(jobs) and self._candidate

    def _missed(self) -> None:
        """A reserve ahead was wasted (it found nothing, or no FETCH took its job): pass the
        next 1, 3, 7 ... 63 chances by, so a connection that pushes before it fetches (each
        ACK finding its queue empty) or asks elsewhere sends a reserve ahead rarely."""
        self._misses = min(self._misses + 1, _MAX_MISSES)
        self._skips = (1 << self._misses) - 1

    def broken(self) -> None:
        """Anything else that FETCHes (one that waits in the runner, FETCHB): no rhythm, and
        what was reserved ahead goes back."""
        self.steady = self._acked = False
        self.queues = None
        self.close()

    def close(self) -> None:
        """The connection closed: give back what was reserved for it."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead.give_back()
