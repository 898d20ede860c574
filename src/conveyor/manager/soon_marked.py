"""A batch or tracked job's PUSH without a task, on a store whose writes wait for I/O (Redis).

``soon.push_soon`` answers a plain PUSH from the step that reads the store's reply. A job
that only the batches feature's ``push_many`` wants (``custom.bid`` or ``custom.track``, no
``after``, no other feature's key) is marked the same way: ``Feature.push_many_soon`` sends
its mark (``Store.mark_jobs_soon``, batches_mark.lua) and, from that reply's step, the enqueue
goes out (``Store.enqueue_soon``); the PUSH is answered from the enqueue's reply, with the
same durability as the long way's (the mark, then the job). Anything else the mark step says
(refused, waiting, dead, a PUSH sent again) is left to the long way, in a task: marking is
idempotent per jid, so the long way's ``push_many`` finds the mark and says the same.
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

    return later if feature.push_many_soon(job, marked) else None
