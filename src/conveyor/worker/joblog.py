"""One log line per job the worker ran, on the ``conveyor.worker.jobs`` logger::

    [send_email 3f2a9c...] done in 12.3ms (queue default)
    [send_email 3f2a9c...] failed: SMTPError: timeout (queue default, 2.01s); retry 3/25 in ~1m56s
    [resize 77b1e0...] failed: PayloadError: ... (queue images, 0.4ms); moved to the dead set
    [geocode 0c4d2e...] failed: conveyor.RetryAfter: rate limit 10/1s reached (queue default,
        0.0ms); retry in 100.0ms, not counted

Successes go at INFO, failures that will be retried at WARNING, the others at ERROR (with the
traceback); a ``RetryAfter`` (asked for, not an accident: a rate limit) at INFO without one.
Each record carries ``jid``, ``jobtype``, ``queue``, ``duration_ms``, ``outcome`` (``done``,
``retry``, ``later``, ``dead``, ``discarded``, ``interrupted``) and, for a retry, ``retry``,
``retries`` and ``retry_in_seconds`` (``later``: ``retry_in_seconds``) as ``extra`` fields:
``--log-format json`` shows them as keys. Silence the successes with
``logging.getLogger("conveyor.worker.jobs")``'s level.

The retry time is the job type's backoff when it has one, else the middle of the server's
backoff window (Faktory's formula, the server adds a random part); the server decides, the
worker only says what to expect.
"""

from __future__ import annotations

import logging
from typing import Any

from conveyor.worker.execute import Outcome

__all__ = ["describe_failure", "log_cancelled", "log_outcome"]

logger = logging.getLogger("conveyor.worker.jobs")


def _human(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.3f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def describe_failure(outcome: Outcome, *, interrupted: bool = False) -> dict[str, Any]:
    """What happens next to a failed job, as the server will decide it (fields for the log)."""
    job = outcome.job
    if interrupted:
        return {"outcome": "interrupted"}
    if outcome.retry_after is not None:
        return {"outcome": "later", "retry_in_seconds": outcome.retry_after}
    if outcome.dead:
        return {"outcome": "dead"}
    retry = job.retry if job.retry is not None else 25
    if retry == 0:
        return {"outcome": "discarded"}
    previous = job.failure.get("retry_count") if job.failure else None
    count = int(previous) + 1 if isinstance(previous, int) else 0
    if retry < 0 or count >= retry:
        return {"outcome": "dead"}
    expected = (
        outcome.backoff if outcome.backoff is not None else count**4 + 15 + 14.5 * (count + 1)
    )
    return {
        "outcome": "retry",
        "retry": count + 1,
        "retries": retry,
        "retry_in_seconds": expected,
    }


_NEXT = {
    "dead": "moved to the dead set",
    "discarded": "discarded (retry 0)",
    "interrupted": "the worker stopped; the server retries it",
}


def log_outcome(outcome: Outcome, *, interrupted: bool = False) -> None:
    """The job's one line (nothing when the ``conveyor.worker.jobs`` logger is off)."""
    ok = outcome.error is None
    if not logger.isEnabledFor(logging.INFO if ok else logging.ERROR):
        return
    job = outcome.job
    took = outcome.duration or 0.0
    extra: dict[str, Any] = {
        "jid": job.jid,
        "jobtype": job.jobtype,
        "queue": job.queue,
        "duration_ms": round(took * 1000, 3),
    }
    head = f"[{job.jobtype} {job.jid}]"
    if ok:
        extra["outcome"] = "done"
        logger.info("%s done in %s (queue %s)", head, _human(took), job.queue, extra=extra)
        return
    extra.update(describe_failure(outcome, interrupted=interrupted))
    what = extra["outcome"]
    if what == "retry":
        after = f"retry {extra['retry']}/{extra['retries']} in ~{_human(extra['retry_in_seconds'])}"
        level = logging.WARNING
    elif what == "later":
        after = f"retry in {_human(extra['retry_in_seconds'])}, not counted"
        level = logging.INFO
    else:
        after = _NEXT[what]
        level = logging.WARNING if what == "interrupted" else logging.ERROR
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "%s failed: %s: %s (queue %s, %s); %s",
        head, outcome.errtype, outcome.message, job.queue, _human(took), after,
        extra=extra,
        exc_info=outcome.error if not interrupted and what != "later" else None,
    )  # fmt: skip


def log_cancelled(outcome: Outcome) -> None:
    """The line of a job the worker stopped because it was cancelled (docs/cancellation.md):
    INFO, ``outcome`` ``cancelled``; it is neither retried nor dead."""
    if not logger.isEnabledFor(logging.INFO):
        return
    job = outcome.job
    took = outcome.duration or 0.0
    extra = {
        "jid": job.jid,
        "jobtype": job.jobtype,
        "queue": job.queue,
        "duration_ms": round(took * 1000, 3),
        "outcome": "cancelled",
    }
    head = f"[{job.jobtype} {job.jid}]"
    logger.info("%s cancelled after %s (queue %s)", head, _human(took), job.queue, extra=extra)
