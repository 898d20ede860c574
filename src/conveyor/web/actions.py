"""The state-changing operations of the dashboard, shared by HTML forms and the JSON API.

Each function checks its input first (a bad action or an empty selection is a ``ValueError``
with a message for the user, and nothing changes), then makes one manager call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

from conveyor.manager.features.cancellation import CancelFeature, CancelReport
from conveyor.manager.types import WorkerState
from conveyor.store.base import JobFilter, SortedSet

if TYPE_CHECKING:
    from conveyor.manager import Manager

__all__ = [
    "QUEUE_ACTIONS",
    "SET_ACTIONS",
    "WORKER_SIGNALS",
    "cancel_jobs",
    "queue_action",
    "run",
    "set_action",
    "signal_workers",
]

SET_ACTIONS: dict[SortedSet, tuple[str, ...]] = {
    SortedSet.RETRIES: ("retry", "delete", "kill", "cancel"),
    SortedSet.SCHEDULED: ("add_to_queue", "delete", "kill", "cancel"),
    SortedSet.DEAD: ("retry", "delete"),
    SortedSet.COMPLETED: ("delete",),
}
"""Faktory's actions per set; ``retry`` and ``add_to_queue`` both enqueue now. ``cancel``
(ours) removes the job as delete does, and records and counts it as cancelled. A completed
job ran and succeeded: it can only be deleted."""
_CANCEL_PAGE = 1000

QUEUE_ACTIONS = ("pause", "resume", "clear", "delete_jobs")
WORKER_SIGNALS = (WorkerState.QUIET, WorkerState.TERMINATE)


def _selection(jids: Sequence[str], everything: bool) -> list[str] | None:
    if everything:
        return None
    chosen = [jid for jid in dict.fromkeys(jids) if jid]
    if not chosen:
        raise ValueError("select at least one job (or use the 'all' action)")
    return chosen


async def set_action(
    manager: Manager, name: SortedSet, action: str, jids: Sequence[str], *, everything: bool
) -> int:
    """Apply ``action`` to the chosen entries of a sorted set (all of them when
    ``everything``). Returns how many entries it changed."""
    if action not in SET_ACTIONS[name]:
        allowed = ", ".join(SET_ACTIONS[name])
        raise ValueError(f"unknown action {action!r} for {name.value}: use one of {allowed}")
    selection = _selection(jids, everything)
    if action in ("retry", "add_to_queue"):
        return await manager.requeue(name, selection)
    if action == "delete":
        return await manager.delete(name, selection)
    if action == "cancel":
        if selection is None:
            listed = await manager.list_set(name, JobFilter(), 0, 10**9)
            selection = [entry.jid for entry in listed.items]
        return sum(r.outcome == "cancelled" for r in await cancel_jobs(manager, selection))
    return await manager.kill(name, selection)


async def cancel_jobs(manager: Manager, jids: Sequence[str]) -> list[CancelReport]:
    """Cancel these jobs wherever they are (docs/cancellation.md); a report per job."""
    chosen = _selection(jids, everything=False)
    assert chosen is not None
    feature = manager.feature(CancelFeature)
    reports: list[CancelReport] = []
    for start in range(0, len(chosen), _CANCEL_PAGE):
        reports += await feature.cancel(chosen[start : start + _CANCEL_PAGE])
    return reports


async def queue_action(manager: Manager, name: str, action: str, jids: Sequence[str] = ()) -> int:
    """Pause, resume or clear a queue, or delete some of its jobs. Returns how many jobs were
    deleted (0 for pause/resume)."""
    if action not in QUEUE_ACTIONS:
        raise ValueError(f"unknown queue action {action!r}: use one of {', '.join(QUEUE_ACTIONS)}")
    known = {info.name for info in await manager.queues()}
    if name not in known:
        raise LookupError(f"no queue named {name!r}")
    if action == "pause":
        await manager.pause_queues([name])
        return 0
    if action == "resume":
        await manager.resume_queues([name])
        return 0
    if action == "clear":
        size = next(info.size for info in await manager.queues() if info.name == name)
        await manager.remove_queues([name])
        return size
    chosen = _selection(jids, everything=False)
    assert chosen is not None
    return await manager.delete_queued(name, chosen)


async def signal_workers(
    manager: Manager, signal: str, wids: Sequence[str], *, everything: bool
) -> int:
    """Quiet or terminate the chosen workers (all when ``everything``). Returns how many."""
    if signal not in WORKER_SIGNALS:
        raise ValueError(f"unknown signal {signal!r}: use quiet or terminate")
    chosen = None if everything else [wid for wid in dict.fromkeys(wids) if wid]
    if chosen is not None and not chosen:
        raise ValueError("select at least one worker (or use 'all')")
    return await manager.signal_workers(chosen, signal)


async def run(call: Any) -> Any:
    """Await an action, turning bad input into 400 and unknown things into 404."""
    try:
        return await call
    except LookupError as exc:
        raise HTTPException(404, str(exc.args[0] if exc.args else exc)) from None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
