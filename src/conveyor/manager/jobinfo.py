"""``job_info``: everything known about jobs, wherever they are (``ADMIN job.show``,
``app.job_info``, ``conveyor job show``, the dashboard's job page).

A job is looked for where it can be (``AdminOps.locate_many``: the reservations, the sorted
sets, the queues, the jobs waiting for others), and its outcome (``results``: how it ended,
with its result) in the result records. Its state is the lifecycle table's
(``lifecycle.JobState``), with Asynq's name beside. The features add what they know of it
(``Feature.job_extras``: its batch and tracking, the jobs it waits for), also for a job known
only by its outcome (a batch job that is done: its batch is read from its mark).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.manager.admin import JobLocation
from conveyor.manager.features.base import Feature
from conveyor.manager.features.results import died_outcome
from conveyor.manager.features.results_model import SUCCEEDED, Outcome, completion_of
from conveyor.manager.lifecycle import ASYNQ_NAMES, JobState
from conveyor.manager.views import iso_time, job_row, location_view
from conveyor.store.base import SetEntry, SortedSet

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = ["SCORE_MEANINGS", "job_extras", "job_info", "job_infos"]

SCORE_MEANINGS = {
    SortedSet.SCHEDULED: "runs at",
    SortedSet.RETRIES: "retries at",
    SortedSet.DEAD: "expires at",
    SortedSet.COMPLETED: "expires at",
}
"""What a sorted-set entry's score is, per set."""

_SET_NAMES = frozenset(name.value for name in SortedSet)
_ENDED = {SUCCEEDED: JobState.DONE, "failed": JobState.DISCARDED, "cancelled": JobState.CANCELLED}


async def job_infos(manager: Manager, jids: Sequence[str]) -> list[dict[str, Any] | None]:
    """One view per jid, in order; None for a job nothing is known of."""
    located = await manager.locate_many(jids)
    records = await manager.results.recorded(jids) if manager.results is not None else {}
    views: list[dict[str, Any] | None] = []
    for jid in jids:
        location = located.get(jid)
        outcome = records.get(jid)
        if location is not None:
            views.append(
                await _with_extras(manager, _located(location, outcome or _told_by_set(location)))
            )
        elif outcome is not None:
            views.append(await _with_extras(manager, _ended(outcome)))
        else:
            views.append(None)
    return views


async def job_info(manager: Manager, jid: str, queue: str | None = None) -> dict[str, Any] | None:
    """``job_infos`` of one jid; ``queue`` narrows the search of the queues (a link from a
    queue's page knows it)."""
    location = await manager.locate(jid, queue)
    records = await manager.results.recorded([jid]) if manager.results is not None else {}
    outcome = records.get(jid)
    if location is not None:
        return await _with_extras(manager, _located(location, outcome or _told_by_set(location)))
    return None if outcome is None else await _with_extras(manager, _ended(outcome))


async def job_extras(manager: Manager, jid: str, job: Any) -> dict[str, Any]:
    """What the features know of job ``jid`` beside its place (``Feature.job_extras``);
    ``job``: its decoded payload, or None when only its outcome is known."""
    extras: dict[str, Any] = {}
    payload = job if isinstance(job, dict) else None
    for feature in manager.features:
        if type(feature).job_extras is not Feature.job_extras:
            extras.update(await feature.job_extras(jid, payload))
    return extras


async def _with_extras(manager: Manager, view: dict[str, Any]) -> dict[str, Any]:
    job = view.get("job") if view.get("where") else None
    view.update(await job_extras(manager, view["jid"], job))
    return view


def _told_by_set(location: JobLocation) -> Outcome | None:
    """The outcome a completed or dead entry tells by itself."""
    if location.where == SortedSet.COMPLETED:
        return completion_of(location.payload)
    if location.where == SortedSet.DEAD:
        entry = SetEntry(location.score, "", location.payload, location.queue)
        return died_outcome(entry)
    return None


def _located(location: JobLocation, outcome: Outcome | None) -> dict[str, Any]:
    view = location_view(location)
    view.update(state=location.where, asynq_state=_asynq(location.where))
    if location.group:
        view["group"] = location.group
    if location.reserved_at is not None:
        view["reservation"] = {
            "wid": location.wid,
            "reserved_at": iso_time(location.reserved_at),
            "expires_at": iso_time(location.expires_at),
        }
    if location.where in _SET_NAMES:
        name = SortedSet(location.where)
        view.update(score=location.score, at=iso_time(location.score))
        view["at_means"] = SCORE_MEANINGS[name]
    completed = view["job"].get("completed")
    if isinstance(completed, dict):
        view["completed"] = {k: v for k, v in completed.items() if k != "result"}
    _add_outcome(view, outcome)
    return view


def _ended(outcome: Outcome) -> dict[str, Any]:
    """A job that is nowhere any more, known by its outcome record."""
    state = _ENDED.get(outcome.state, JobState.DISCARDED)
    stub = msgspec.json.encode(
        {"jid": outcome.jid, "queue": outcome.queue, "jobtype": outcome.jobtype}
    )
    view = {**job_row(stub), "where": "", "state": state.value}
    view["asynq_state"] = _asynq(state.value)
    _add_outcome(view, outcome)
    return view


def _asynq(state: str) -> str:
    """Asynq's name of a lifecycle state (the state's own name where Asynq has none, and for
    a place a feature names that the table does not)."""
    try:
        return ASYNQ_NAMES.get(JobState(state), state)
    except ValueError:
        return state


def _add_outcome(view: dict[str, Any], outcome: Outcome | None) -> None:
    if outcome is None:
        return
    shown = msgspec.json.decode(msgspec.json.encode(outcome))
    view["outcome"] = shown
    if outcome.state == SUCCEEDED:
        view["result"] = shown.get("result")
