"""The job lifecycle as one table (faktory.md §3.1), and the one function that checks it.

::

    push ──────────────▶ queued ──fetch──▶ working ──ack──────────▶ done
    push (at later) ──▶ scheduled ─┐          ├──fail / expiry──▶ retries ─┐
                        retries ───┼─promote─▶ queued            └──▶ dead ─┤ (retry now)
                        dead ──────┘ requeue                     └──▶ discarded (retry 0)

Every manager transition names its source and target here; a move the table does not list is
a bug in the manager, not something a client can cause.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "JobState", "check_transition"]


class JobState(enum.StrEnum):
    NEW = "new"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    WORKING = "working"
    RETRIES = "retries"
    DEAD = "dead"
    DONE = "done"
    DISCARDED = "discarded"


S = JobState
TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (S.NEW, S.QUEUED): "push",
    (S.NEW, S.SCHEDULED): "push with a future 'at'",
    (S.QUEUED, S.WORKING): "fetch",
    (S.WORKING, S.DONE): "ack",
    (S.WORKING, S.RETRIES): "fail or reservation expiry, retries left",
    (S.WORKING, S.DEAD): "fail or reservation expiry, no retries left",
    (S.WORKING, S.DISCARDED): "fail with retry 0, or dropped by fetch middleware",
    (S.SCHEDULED, S.QUEUED): "due, or enqueued by hand",
    (S.RETRIES, S.QUEUED): "due, or retried by hand",
    (S.DEAD, S.QUEUED): "retried by hand",
    (S.SCHEDULED, S.DEAD): "killed by hand",
    (S.RETRIES, S.DEAD): "killed by hand",
    (S.DEAD, S.DEAD): "killed again: expiry refreshed",
    (S.SCHEDULED, S.DISCARDED): "deleted by hand",
    (S.RETRIES, S.DISCARDED): "deleted by hand",
    (S.DEAD, S.DISCARDED): "deleted by hand, or past retention",
    (S.QUEUED, S.DISCARDED): "deleted by hand, or its queue removed",
}


def check_transition(source: JobState | str, target: JobState | str) -> str:
    """Return why ``source -> target`` is allowed; raise ``ValueError`` if it is not."""
    reason = TRANSITIONS.get((JobState(source), JobState(target)))
    if reason is None:
        raise ValueError(f"a job cannot go from {source} to {target}")
    return reason
