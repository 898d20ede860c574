"""The job lifecycle as one table (faktory.md §3.1), and the one function that checks it.

::

    push ──────────────▶ queued ──fetch──▶ working ──ack──────────▶ done
    push (at later) ──▶ scheduled ─┐          ├──ack, kept────────▶ completed ──▶ discarded
                        retries ───┼─promote─▶ queued            (retention)   (expiry, delete)
                        dead ──────┘ requeue  ├──fail / expiry──▶ retries ─┐
                                              └──▶ dead ───────────────────┤ (retry now)
                                              └──▶ discarded (retry 0)
    push (aggregate) ──▶ aggregating ──due──▶ queued (with its group, as one job)
    push (after=) ─────▶ waiting ──its dependencies succeeded──▶ scheduled (due at its at, or now)
                                 └─one of them died, or removed──▶ dead
    queued, scheduled, retries, aggregating, working ──cancel──▶ cancelled

Every manager transition names its source and target here; a move the table does not list is
a bug in the manager, not something a client can cause.

The states are conveyor's (and Faktory's) names; ``ASYNQ_NAMES`` gives the name Asynq and
kaptinlin/queue use for each (pending, active, retry, archived, ...), so ``app.job_info`` and
the docs can say both. ``aggregating`` and ``cancelled`` are group aggregation's and
cancellation's (docs/aggregation.md, docs/cancellation.md); ``waiting`` is the dependencies'
(a job pushed with ``custom.after``, docs/batches.md), a state Asynq has no name for. A batch
adds no state of its own: a batch job is queued, working, done... as any job, and its
callbacks are pushed into the scheduled set, due now; ``job_info`` names the batch beside.
"""

from __future__ import annotations

import enum

__all__ = ["ASYNQ_NAMES", "TRANSITIONS", "JobState", "check_transition"]


class JobState(enum.StrEnum):
    NEW = "new"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    WORKING = "working"
    RETRIES = "retries"
    DEAD = "dead"
    DONE = "done"
    """Succeeded and not kept: known afterwards only from its result (docs/results.md)."""
    COMPLETED = "completed"
    """Succeeded and kept in the completed set for its retention."""
    AGGREGATING = "aggregating"
    """Waiting in a group to be processed with others as one job."""
    WAITING = "waiting"
    """Waiting for other jobs (``custom.after``) to succeed before it is scheduled."""
    CANCELLED = "cancelled"
    DISCARDED = "discarded"


S = JobState

ASYNQ_NAMES: dict[JobState, str] = {
    S.QUEUED: "pending",
    S.SCHEDULED: "scheduled",
    S.WORKING: "active",
    S.RETRIES: "retry",
    S.DEAD: "archived",
    S.COMPLETED: "completed",
    S.AGGREGATING: "aggregating",
    S.CANCELLED: "cancelled",
}
"""Asynq's (and kaptinlin/queue's) name of each state it has."""

TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (S.NEW, S.QUEUED): "push",
    (S.NEW, S.SCHEDULED): "push with a future 'at'",
    (S.QUEUED, S.WORKING): "fetch",
    (S.WORKING, S.DONE): "ack",
    (S.WORKING, S.COMPLETED): "ack of a job with a retention (custom.retain, or the default)",
    (S.WORKING, S.RETRIES): "fail or reservation expiry, retries left; or RetryAfter (uncounted)",
    (S.WORKING, S.DEAD): "fail or reservation expiry, no retries left; or SkipRetry",
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
    (S.COMPLETED, S.DISCARDED): "deleted by hand, or past its retention",
    (S.QUEUED, S.DISCARDED): "deleted by hand, or its queue removed",
    (S.NEW, S.AGGREGATING): "push of a job with custom.aggregate: it waits in its group",
    (S.AGGREGATING, S.QUEUED): "its group is due: enqueued with the others as one job",
    (S.QUEUED, S.CANCELLED): "cancelled: taken out of its queue",
    (S.SCHEDULED, S.CANCELLED): "cancelled: taken out of the scheduled set",
    (S.RETRIES, S.CANCELLED): "cancelled: taken out of the retry set",
    (S.AGGREGATING, S.CANCELLED): "cancelled: taken out of its group",
    (S.WORKING, S.CANCELLED): "cancelled while running: reservation ended, its worker told",
    (S.NEW, S.WAITING): "push with custom.after while some of those jobs have not succeeded",
    (S.NEW, S.DEAD): "push with custom.after naming a job that died (DependencyDied)",
    (S.WAITING, S.SCHEDULED): "the last job it waited for succeeded: due at its at, or now",
    (S.WAITING, S.DEAD): "a job it waited for died, or was removed (DependencyDied)",
}


def check_transition(source: JobState | str, target: JobState | str) -> str:
    """Return why ``source -> target`` is allowed; raise ``ValueError`` if it is not."""
    reason = TRANSITIONS.get((JobState(source), JobState(target)))
    if reason is None:
        raise ValueError(f"a job cannot go from {source} to {target}")
    return reason
