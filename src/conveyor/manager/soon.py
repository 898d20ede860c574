"""PUSH, FETCH and ACK in the step that read them, without a task each.

The server answers these three at an idle connection from ``data_received`` (``Manager``'s
``push_now``, ``fetch_now``, ``ack_now``). On an in-process store (memory, SQLite) the write is
made right there; on a store whose writes wait for I/O (Redis), one that offers the callback
forms (``Store.enqueue_soon``, ``reserve_soon``, ``ack_soon``, ``ack_returning_soon``) sends
its write from that same step and settles a ``Later`` from the step that reads the answer,
where the server writes the reply. The rules are the long way's: validation, the features'
gates, worker state, flow control, metrics; what a feature must see goes through the same
hooks (``FeatureCalls``), in a task of its own that settles the ``Later`` once they are done
(only for the jobs some feature wants); and everything else that cannot be done this way
returns None, with nothing done, and takes the long way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from conveyor.manager import validation
from conveyor.manager.later import Later
from conveyor.store.base import Reservation
from conveyor.store.endings import Acked
from conveyor.store.limits import Limited
from conveyor.timefmt import day_key, now_iso

if TYPE_CHECKING:
    from conveyor.manager.core import Manager
    from conveyor.manager.features.results import ResultsFeature

__all__ = [
    "ack_in_process",
    "ack_settled",
    "ack_soon",
    "fetch_in_process",
    "fetch_limited_in_process",
    "fetch_limited_soon",
    "fetch_soon",
    "push_soon",
]

T = TypeVar("T")

_NO_DURATIONS: Mapping[str, float] = MappingProxyType({})
_going_on: set[asyncio.Task[None]] = set()  # hooks run for a command answered later


def _durations(jid: str, duration: float | None) -> Mapping[str, float]:
    return _NO_DURATIONS if duration is None else {jid: duration}


def _settle_after(later: Later[T], work: Callable[[], Awaitable[T]]) -> None:
    """Run ``work`` in a task and settle ``later`` with what it returns or raises."""

    async def run() -> None:
        try:
            value = await work()
        except BaseException as exc:  # a cancelled one too: its command must be answered
            later.settle(None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            later.settle(value, None)

    task = asyncio.get_running_loop().create_task(run())
    _going_on.add(task)
    task.add_done_callback(_going_on.discard)


def _told(manager: Manager, acked: Acked) -> Later[int]:
    """How many reservations ``acked`` ended, once the features' ``acked`` has heard of it
    (in a task: a feature may wait, e.g. to release a unique lock)."""
    told: Later[int] = Later()

    async def tell() -> int:
        await manager._acked(acked)
        return len(acked.ended)

    _settle_after(told, tell)
    return told


# ---------------------------------------------------------------------- PUSH


def push_soon(manager: Manager, payload: bytes) -> Later[None] | None:
    """``push_now`` for a store that is not in process: the job validated here (raising for
    a bad one, with nothing stored), its enqueue sent; None for the long way (a feature's
    push hook wants the job, it is scheduled for later, its queue is bounded, the store
    cannot take it this way)."""
    job = validation.decode_pushed(payload, manager.config)
    marker = None
    if manager._admits(job):
        marker = manager._marks_only(job)  # a batch or tracked job: soon_marked.py
        if marker is None:
            return None
    stamp = now_iso()  # created_at (when the client left it out) and enqueued_at
    due = validation.prepare_job(job, manager.config, stamp, shallow=validation.fits_depth(payload))
    flow = manager.flow
    if (due is not None and due > time.time()) or (flow.bounding and flow.bound(job.queue)):
        return None
    queued = [manager._queued(job, stamp, validation.reserve_seconds(job, manager.config))]
    if marker is not None:
        from conveyor.manager.soon_marked import push_marked  # it builds on this module

        return push_marked(manager, marker, job, queued, payload)
    later: Later[None] = Later()
    metrics = manager.metrics

    def stored(_value: None, error: BaseException | None) -> bool:
        if error is None and metrics is not None:
            metrics.on_push(job)
        return later.settle(None, error)

    if not manager.store.enqueue_soon(queued, stored):
        return None
    if manager.waiters:
        _reserve_behind(manager, job.queue)
    return later


def _reserve_behind(manager: Manager, queue: str) -> None:
    """A FETCH waits for ``queue`` (idle workers): send its reserve right behind the enqueue
    just sent, on the same connection, instead of after the enqueue's reply has woken it.
    Redis runs the two in order, so the reserve finds the job (unless another server's
    FETCH took it first) and the FETCH is answered one round trip sooner. The reserve is the
    one the woken FETCH would have made (``Manager.fetch_now``: the same checks, metrics and
    fetch hooks); the waiter is claimed until its reply (``Waiter.claimed``)."""
    waiter = manager.waiters.newest(queue)
    if waiter is None or waiter.deliver is None:
        return
    found = manager.fetch_now(waiter.queues, waiter.wid, waiter.count)
    if not isinstance(found, Later):  # the long way, or a store that does it in process
        return
    waiter.claimed = True

    def answered(payloads: list[bytes] | None, error: BaseException | None) -> bool:
        waiter.claimed = False
        if waiter.future.done():  # woken, timed out or cancelled meanwhile: it looked itself
            return False  # the store gives the jobs back
        if error is None and payloads and waiter.hand(payloads):
            return True
        # Nothing found (another server's FETCH was first), an error, or a closing
        # connection: wake it, to look for itself or to end.
        waiter.future.set_result(None)
        return False

    found.when_done(answered)


# ---------------------------------------------------------------------- FETCH


def _taken(manager: Manager, reservations: list[Reservation]) -> list[bytes] | Later[list[bytes]]:
    """What ``Manager._reserve`` does with the jobs a store reserved: metrics, the baton,
    the ACKs to watch; the payloads, or a ``Later`` for them when some feature's fetch hook
    must see one of the jobs (the hooks run in a task)."""
    if manager.metrics is not None:
        manager.metrics.on_reserve(reservations)
    # Pass the baton: there may be more jobs for other waiting FETCHes.
    manager.waiters.notify(reservations[-1].queue)
    if not manager._taken(reservations):
        return [r.payload for r in reservations]
    # What is kept may be [] (every job dropped: expired): the server then sends the FETCH
    # the long way, which goes on with the next jobs, as Manager._reserve does.
    later: Later[list[bytes]] = Later()
    _settle_after(later, lambda: manager._fetch_chain(reservations))
    return later


def fetch_in_process(
    manager: Manager, queues: Sequence[str], wid: str, count: int
) -> list[bytes] | Later[list[bytes]] | None:
    """``fetch_now`` on an in-process store (the manager checked worker state and limits)."""
    reservations = manager.store.reserve_now(queues, wid, time.time(), count)
    if reservations is None:
        return None  # the long way
    return _taken(manager, reservations) if reservations else []


def fetch_limited_in_process(
    manager: Manager, queues: Sequence[str], wid: str, count: int
) -> list[bytes] | Later[list[bytes]] | None:
    """``fetch_now`` of a FETCH naming a throttled or rate-limited queue, on an in-process
    store: as ``Manager._reserve``, the queues found full are left out (``passable``), the
    slots and tokens are taken in the reserving step (``reserve_limited_now``), and the
    queues it found full are held back until something may make room."""
    flow = manager.flow
    passable = flow.passable(queues)
    if not passable:
        return []  # every queue named is held back: the FETCH waits, the long way
    limits = flow.limits_for(passable)
    now = time.time()
    if limits is None:  # the limited queues among them are held back
        reservations = manager.store.reserve_now(passable, wid, now, count)
    else:
        wakes = flow.wakes()
        limited = manager.store.reserve_limited_now(passable, wid, now, count, limits)
        if limited is None:
            return None  # the long way: the store must wait for its commit
        reservations = limited.reservations
        if limited.blocked:
            flow.held_back(limited.blocked, wakes)
    if reservations is None:
        return None
    return _taken(manager, reservations) if reservations else []


def fetch_soon(
    manager: Manager, queues: Sequence[str], wid: str, count: int
) -> Later[list[bytes]] | None:
    """``fetch_now`` for a store that is not in process: the payloads it reserves, ``[]``
    for none (the FETCH then waits, the long way); None when the store cannot take it."""
    later: Later[list[bytes]] = Later()

    def reserved(reservations: list[Reservation] | None, error: BaseException | None) -> bool:
        return _deliver(manager, later, reservations, error)

    now = time.time()
    return later if manager.store.reserve_soon(queues, wid, now, count, reserved) else None


def fetch_limited_soon(
    manager: Manager, queues: Sequence[str], wid: str, count: int
) -> Later[list[bytes]] | None:
    """``fetch_soon`` of a FETCH naming a throttled or rate-limited queue: the slots and
    tokens taken by the script that reserves (``Store.reserve_limited_soon``), the queues it
    found full held back from the step that reads its reply. None for the long way (every
    queue named is held back: the FETCH waits; or the store cannot take it)."""
    flow = manager.flow
    passable = flow.passable(queues)
    if not passable:
        return None
    limits = flow.limits_for(passable)
    if limits is None:  # the limited queues among them are held back
        return fetch_soon(manager, passable, wid, count)
    later: Later[list[bytes]] = Later()
    wakes = flow.wakes()

    def reserved(limited: Limited | None, error: BaseException | None) -> bool:
        if error is not None or limited is None:
            return later.settle(None, error)
        if limited.blocked:
            flow.held_back(limited.blocked, wakes)
        return _deliver(manager, later, limited.reservations, None)

    now = time.time()
    taken = manager.store.reserve_limited_soon(passable, wid, now, count, limits, reserved)
    return later if taken else None


def _deliver(
    manager: Manager,
    later: Later[list[bytes]],
    reservations: list[Reservation] | None,
    error: BaseException | None,
) -> bool:
    """Settle a FETCH's ``later`` with what the store reserved for it (``[]``: none, it
    waits the long way); whether its client took the jobs (False: the store gives them
    back, and the metrics forget them)."""
    if error is not None or reservations is None:
        return later.settle(None, error)
    if not reservations:
        return later.settle([], None)
    found = _taken(manager, reservations)
    if isinstance(found, Later):  # the fetch hooks run; a lost reply keeps its jobs
        found.when_done(later.settle)
        return True
    if later.settle(found, None):
        return True
    if manager.metrics is not None:  # given back by the store: they run elsewhere
        for reservation in reservations:
            manager.metrics.forget(reservation.jid)
    return False


# ---------------------------------------------------------------------- ACK


def ack_in_process(manager: Manager, jid: str, duration: float | None) -> int | Later[int] | None:
    """``ack_now`` on an in-process store (the manager checked the ack gates). A job of a
    throttled queue that no feature wants frees its slot in the ACK's own step
    (``ack_throttled_now``), as ``ack_returning`` would. Any other job some feature must
    hear of (watched: a batch or tracked job, a unique one...) is acknowledged by the step
    that returns what it ended, its marks ended in it (``ack_returning_now``); the features'
    ``acked`` then runs in a task, before the reply, only when one has something to do (a
    callback or a released job to promote, a lock to release). None when the store must
    wait for its commit, or when such a job may hold a throttle slot (the long way)."""
    watched = manager._watched
    jids = (jid,)
    if watched and jid in watched:
        queue = manager._slotted.get(jid)
        if queue is None:
            if manager.flow.throttled:
                return None  # freeing a slot awaits (Limits.release_slots): the long way
            return _ack_watched(manager, jids, duration)
        done = manager.store.ack_throttled_now(jid, queue, day_key(time.time()))
        if done is None:
            return None  # the long way: the store must wait for its commit
        watched.discard(jid)
        del manager._slotted[jid]
    else:
        done = manager.store.ack_now(jids, day_key(time.time()))
    if done is not None and manager.metrics is not None:
        manager.metrics.on_ack(jids, done, _durations(jid, duration))
    return done


def ack_settled(
    manager: Manager,
    feature: ResultsFeature,
    jid: str,
    duration: float | None,
    result: bytes | None,
) -> int | Later[int] | None:
    """``ack_now`` of an ACK the results feature must see (it carries a result, or a default
    is on; the manager checked the ack gates), on an in-process store: the reservation ends
    and the outcome record and completed entry its job asked for are stored in one step
    (``Store.ack_returning_now`` with the feature's ``settle``, as the long way's
    ``ack_returning``), then the ``RESULT`` waiting for it is woken. A bad result raises
    ``CommandError`` with nothing done. On a shared store, ``_ack_settled_soon``. None for
    the long way: a job a feature must hear of (watched: a throttled queue, batch marks), a
    store that must wait for its commit."""
    watched = manager._watched
    if watched is None:
        return _ack_settled_soon(manager, feature, jid, duration, result)
    if jid in watched:
        return None
    settle = feature.settle_one(jid, result)
    jids = (jid,)
    acked = manager.store.ack_returning_now(jids, day_key(settle.now), settle=settle)
    if acked is None:
        return None
    done = len(acked.ended)
    if manager.metrics is not None:
        manager.metrics.on_ack(jids, done, _durations(jid, duration))
    if settle.told:
        feature.told(settle)
    return done


def _ack_settled_soon(
    manager: Manager,
    feature: ResultsFeature,
    jid: str,
    duration: float | None,
    result: bytes | None,
) -> Later[int] | None:
    """``ack_settled`` on a shared store (Redis), without a task: the reservation noted at
    the job's FETCH is settled and ended with its records in one script run
    (``Store.ack_settled_soon``), whose reply answers the ACK and the ``RESULT`` waiting here
    (the script published the signal for the other servers). None for the long way: a job
    some feature must hear of (as ``ack_soon``: a throttled queue, a feature's ACK gate,
    batch marks to end), a reservation not noted here, a store that cannot send now."""
    if not manager._soon:
        return None
    jids = (jid,)
    if manager._ack_ender is not None and manager._needs_ends(jids):
        return None
    if (manager._ack_watchers or manager.flow.throttled) and not manager._all_plain(jids):
        return None
    settle = feature.settle_one(jid, result)
    later: Later[int] = Later()
    metrics = manager.metrics

    def ended(acked: Acked | None, error: BaseException | None) -> bool:
        if error is not None or acked is None:
            return later.settle(None, error)
        unmarked = manager._unmarked
        if unmarked:
            unmarked.discard(jid)
        done = len(acked.ended)
        if metrics is not None:
            metrics.on_ack(jids, done, _durations(jid, duration))
        if settle.signalled:  # published by the ACK's run: only this server is told here
            feature.told(settle)
        return later.settle(done, None)

    day = day_key(time.time())
    return later if manager.store.ack_settled_soon(jid, day, settle, ended) else None


def _ack_watched(
    manager: Manager, jids: tuple[str], duration: float | None
) -> int | Later[int] | None:
    """The ACK of a watched job on an in-process store, in the caller's step (above)."""
    ends = manager._ends_for(jids)
    acked = manager.store.ack_returning_now(jids, day_key(time.time()), manager._acked_marks, ends)
    if acked is None:
        return None
    done = len(acked.ended)
    if manager.metrics is not None:
        manager.metrics.on_ack(jids, done, _durations(jids[0], duration))
    if manager._acked_idle(acked):
        return done
    return _told(manager, acked)


def ack_soon(manager: Manager, jid: str, duration: float | None) -> Later[int] | None:
    """``ack_now`` for a store that is not in process (the manager checked the ack gates).
    Where features watch ACKs or queues are throttled, the ACK says what it ended, as
    ``Manager._ack_returning``; the features' ``acked`` runs in a task, before the reply,
    only when a job some feature wants ended. None when the store cannot take it, or when
    the job may carry marks the ACK must end in its own step (batches: a job not noted at
    FETCH as carrying none, ``FeatureCalls._needs_ends``): the long way does that step."""
    later: Later[int] = Later()
    jids = (jid,)
    metrics = manager.metrics

    def acked(done: int | None, error: BaseException | None) -> bool:
        if error is None and metrics is not None:
            metrics.on_ack(jids, done or 0, _durations(jid, duration))
        return later.settle(done, error)

    store = manager.store
    day = day_key(time.time())
    flow = manager.flow
    if not (manager._ack_watchers or flow.throttled) or manager._all_plain(jids):
        return later if store.ack_soon(jids, day, acked) else None
    if manager._ack_ender is not None and manager._needs_ends(jids):
        # the job's marks (batch, tracking) end in the ACK's own step, its batch declared
        return _ack_ending(manager, jids, day, later, acked)
    gates = manager._acked_gates
    unmarked = manager._unmarked

    def ended(reservations: list[Reservation] | None, error: BaseException | None) -> bool:
        if error is not None or reservations is None:
            return acked(None, error)
        if unmarked:
            unmarked.discard(jid)
        if not any(manager._wanted(r.payload, gates) for r in reservations):
            return acked(len(reservations), None)
        _told(manager, Acked(reservations)).when_done(acked)
        return True

    marks = manager._acked_marks
    return later if store.ack_returning_soon(jids, day, flow.throttled, marks, ended) else None


def _ack_ending(
    manager: Manager,
    jids: tuple[str],
    day: str,
    later: Later[int],
    acked: Callable[[int | None, BaseException | None], bool],
) -> Later[int] | None:
    """``ack_soon`` for a job that may carry marks: the store's step ends them with the
    reservation (``ack_ending_soon``: on Redis one script run when the job's batch was noted
    at its FETCH), then the features' ``acked`` runs in a task only when one has something to
    do (``Manager._acked_idle``). None when the store cannot take it now."""
    ends = manager._ends_for(jids)
    if ends is None:
        return None
    unmarked = manager._unmarked

    def ended(result: Acked | None, error: BaseException | None) -> bool:
        if error is not None or result is None:
            return acked(None, error)
        if unmarked:
            unmarked.difference_update(jids)
        if manager._acked_idle(result):
            return acked(len(result.ended), None)
        _told(manager, result).when_done(acked)
        return True

    store = manager.store
    marks = manager._acked_marks
    if store.ack_ending_soon(jids, day, manager.flow.throttled, marks, ends, ended):
        return later
    return None
