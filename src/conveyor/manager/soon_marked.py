"""A batch or tracked job's PUSH without a task, on a store whose writes wait for I/O (Redis).

``soon.push_soon`` answers a plain PUSH from the step that reads the store's reply. A job
that only the batches feature's ``push_many`` wants (``custom.bid`` or ``custom.track``, no
``after``, no other feature's key) is marked and queued the same way, in one store step:
``Feature.push_many_soon`` with the job's entry sends ``Store.mark_enqueue_soon``
(batches_mark.lua, which queues the job when its mark comes out ready: one round trip, as a
plain PUSH) and the PUSH is answered from its reply. Where the store cannot do both at once
(a PUSH that waits for replicas) the mark goes alone (``Store.mark_jobs_soon``) and, from
that reply's step, the enqueue (``Store.enqueue_soon``), with the long way's durability.
Anything else the mark step says (refused, waiting, dead) is left to the long way, in a
task, with nothing queued: marking is idempotent per jid, so the long way's ``push_many``
finds the mark and says the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.manager.later import Later
from conveyor.manager.soon import _settle_after
from conveyor.store.base import QueuedJob
from conveyor.store.batches import MarkResult

if TYPE_CHECKING:
    from conveyor.job import Job
    from conveyor.manager.core import Manager
    from conveyor.manager.features.base import Feature

__all__ = ["push_marked"]


def push_marked(
    manager: Manager, feature: Feature, job: Job, queued: list[QueuedJob], payload: bytes
) -> Later[None] | None:
    """Mark ``job`` and enqueue it (``queued``) from the replies' steps; None, with nothing
    done, when the store cannot take it this way."""
    later: Later[None] = Later()
    store = manager.store
    metrics = manager.metrics

    def stored(_value: None, error: BaseException | None) -> bool:
        if error is None and metrics is not None:
            metrics.on_push(job)
        return later.settle(None, error)

    async def enqueue() -> None:
        await store.enqueue(queued)
        if metrics is not None:
            metrics.on_push(job)

    def marked(result: MarkResult | None, error: BaseException | None) -> None:
        if error is not None:
            later.settle(None, error)
        elif result is not MarkResult.READY:
            _settle_after(later, lambda: manager.push(payload))  # it says why, or where
        elif not store.enqueue_soon(queued, stored):
            _settle_after(later, enqueue)

    def marked_and_queued(result: MarkResult | None, error: BaseException | None) -> None:
        if error is not None or result is MarkResult.READY:
            stored(None, error)
        else:
            _settle_after(later, lambda: manager.push(payload))  # it says why, or where

    if feature.push_many_soon(job, marked_and_queued, queued):
        return later
    return later if feature.push_many_soon(job, marked) else None
