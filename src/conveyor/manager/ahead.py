"""The next FETCH's reserve, sent with the ACK before it (Redis).

A Faktory client's processor works one job at a time on its connection: FETCH, run, ACK,
FETCH, ... On Redis each of those is a round trip from conveyor to Redis, so a busy worker's
job costs two (the reserve and the ACK) between one reply and the next. When a connection
has kept that rhythm (an ACK, then a FETCH of the same queues as the FETCH before, in any
order, which found a job: ``server/rhythm.py``), the ACK's step also sends the next FETCH's
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

__all__ = ["Ahead", "same_queues"]


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
