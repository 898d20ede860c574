"""PUSH, FETCH and ACK on a store whose writes wait for I/O (Redis), without a task each.

The in-process stores do these in the step that read the command (``Manager.push_now``,
``fetch_now``, ``ack_now``). A store that offers the callback forms (``Store.enqueue_soon``,
``reserve_soon``, ``ack_soon``) sends its write from that same step and settles a ``Later``
from the step that reads the answer; the server writes the reply there. The rules are the
long way's: validation, gates for the features that want a job, worker state, and
everything a store cannot take this way (it returns False) goes the long way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.manager import validation
from conveyor.manager.later import Later
from conveyor.manager.types import WorkerState
from conveyor.store.base import Reservation
from conveyor.timefmt import day_key, now_iso

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = ["ack_soon", "fetch_soon", "push_soon"]


def push_soon(manager: Manager, payload: bytes) -> Later[None] | None:
    """``push_now`` for such a store: the job validated here (raising for a bad one, with
    nothing stored), its enqueue sent; None for the long way (a feature wants the job, it is
    scheduled for later, the store cannot)."""
    job = validation.decode_pushed(payload, manager.config)
    if manager._push_gates and any(wants(job) for wants in manager._push_gates):
        return None
    stamp = now_iso()  # created_at (when the client left it out) and enqueued_at
    due = validation.prepare_job(job, manager.config, stamp)
    if due is not None and due > time.time():
        return None
    queued = [manager._queued(job, stamp, validation.reserve_seconds(job, manager.config))]
    later: Later[None] = Later()
    return later if manager.store.enqueue_soon(queued, later.settle) else None


def fetch_soon(
    manager: Manager, queues: Sequence[str], wid: str, count: int
) -> Later[list[bytes]] | None:
    """``fetch_now`` for such a store: the payloads it reserves, ``[]`` for none (the FETCH
    then waits, the long way); None when the FETCH must take the long way."""
    if wid and manager._worker_states.get(wid, WorkerState.RUNNING) != WorkerState.RUNNING:
        return None
    later: Later[list[bytes]] = Later()

    def reserved(reservations: list[Reservation] | None, error: BaseException | None) -> bool:
        if error is not None or reservations is None:
            return later.settle(None, error)
        if reservations:  # pass the baton: there may be more jobs for other waiting FETCHes
            manager.waiters.notify(reservations[-1].queue)
        return later.settle([r.payload for r in reservations], None)

    now = time.time()
    return later if manager.store.reserve_soon(queues, wid, now, count, reserved) else None


def ack_soon(manager: Manager, jid: str) -> Later[int] | None:
    """``ack_now`` for such a store (the manager checked the ack gates); None when the
    store cannot."""
    later: Later[int] = Later()
    return later if manager.store.ack_soon((jid,), day_key(time.time()), later.settle) else None
