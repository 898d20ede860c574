"""FETCHes waiting for a job, and how a push reaches them at once.

Each waiting FETCH registers one ``Waiter`` under every queue it asked for. There are two ways
a new job reaches it:

* **Hand-off** (the fast path, ``Manager._hand_off``): a waiter that can answer by itself
  (``deliver``: its connection writes the reply) is given the pushed job directly. The store
  records the reservation without queueing the job, the reply is written in the same step as
  the PUSH, and the FETCH's task only wakes to move on. Stores that cannot do this in one
  synchronous step (Redis) and servers with fetch middleware skip it.
* **Reserve sent behind the push** (Redis, ``soon.push_soon``): the PUSH's enqueue goes out,
  and right behind it, on the same connection, the reserve the waiting FETCH would make once
  woken; Redis runs the two in order, so the FETCH is answered from the reserve's reply, one
  round trip sooner. The waiter is ``claimed`` meanwhile: ``notify`` and ``newest`` pass it by.
* **Wake-up** (``notify(queue)``): the waiter's future is resolved and its task reserves from
  the store itself. ``notify`` wakes one FETCH of that queue, not all of them (no thundering
  herd). A woken FETCH that gets a job calls ``notify`` again for its queue, so a burst of
  pushes wakes as many waiters as there are jobs, one after the other.

Either way the waiter chosen is the one that started waiting last (a stack, not a queue).
Under load every fetcher is busy and the order does not matter; when jobs trickle in, the
fetcher that just finished a job is the one whose process is running, with its caches warm,
while the others sleep on: waking the longest-idle one instead rotated every job through cold
processes (p50 enqueue->start 0.45 -> 0.40 ms with two worker processes). Nobody starves: a
FETCH left at the bottom answers "no job" when its wait ends, as any FETCH may, and asks again
on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

__all__ = ["Deliver", "QueueWaiters", "Waiter"]

Deliver = Callable[[list[bytes]], bool]
"""Writes the reply carrying these job payloads to the waiting FETCH's client, now; False
(and nothing written) when its connection is closing already."""


class Waiter:
    """One waiting FETCH: the queues it asked for, in order, and how many jobs it takes."""

    __slots__ = ("claimed", "count", "deliver", "delivered", "future", "queues", "wid")

    def __init__(self, queues: Sequence[str], wid: str, count: int) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queues = queues
        self.wid = wid
        self.count = count
        self.deliver: Deliver | None = None
        """Set (by the FETCH) only while it waits: until then it may still find jobs itself."""
        self.delivered = False
        """Jobs were handed off to it: its FETCH has been answered."""
        self.claimed = False
        """A reserve for it is on its way (``soon.push_soon``): no wake-up or hand-off meanwhile."""

    @property
    def open(self) -> bool:
        """Still waiting, and no reserve for it on its way: a job may go to it."""
        return not (self.claimed or self.future.done())

    def hand(self, payloads: list[bytes]) -> bool:
        """Answer the FETCH with ``payloads`` (which the manager then reserves for it) and let
        it finish; False, with nothing sent, when its connection is closing."""
        assert self.deliver is not None
        if not self.deliver(payloads):
            return False
        self.delivered = True
        self.future.set_result(None)
        return True


class QueueWaiters:
    def __init__(self) -> None:
        # queue -> waiters in arrival order (dict keeps insertion order; values unused)
        self._by_queue: dict[str, dict[Waiter, None]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_queue)

    def register(self, queues: Sequence[str], wid: str = "", count: int = 1) -> Waiter:
        waiter = Waiter(queues, wid, count)
        for queue in queues:
            self._by_queue.setdefault(queue, {})[waiter] = None
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        for queue in waiter.queues:
            waiting = self._by_queue.get(queue)
            if waiting is not None:
                waiting.pop(waiter, None)
                if not waiting:
                    del self._by_queue[queue]

    def newest(self, queue: str) -> Waiter | None:
        """The waiter a job of ``queue`` would go to (see the module docstring), if any."""
        waiting = self._by_queue.get(queue)
        if waiting:
            for waiter in reversed(waiting):
                if waiter.open:
                    return waiter
        return None

    def notify(self, queue: str) -> None:
        waiting = self._by_queue.get(queue)
        if not waiting:
            return
        for waiter in reversed(waiting):  # the newest waiter: see the module docstring
            if waiter.open:
                del waiting[waiter]
                waiter.future.set_result(None)
                break
        if not waiting:
            self._by_queue.pop(queue, None)

    def notify_all(self) -> None:
        for waiting in list(self._by_queue.values()):
            for waiter in list(waiting):
                if not waiter.future.done():
                    waiter.future.set_result(None)
        self._by_queue.clear()

    def waiting_on(self, queue: str) -> int:
        """How many FETCHes wait for ``queue`` (the dashboard's Throttles page)."""
        return sum(1 for w in self._by_queue.get(queue, ()) if not w.future.done())

    def waiting(self) -> int:
        return len({w for waiting in self._by_queue.values() for w in waiting})
