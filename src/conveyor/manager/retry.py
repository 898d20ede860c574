"""What happens to a failed job: the ``failure`` bookkeeping and Faktory's backoff (§3.2).

* ``retry`` 0 (or null): discard. ``retry`` -1: dead on the first failure.
* otherwise retried while ``retry_count < retry``, after
  ``count**4 + 15 + rand(0..29) * (count + 1)`` seconds, where ``count`` is the
  ``retry_count`` after this failure (0 on the first). Then dead.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.job import Job
from conveyor.store.base import FailOutcome, SortedSet
from conveyor.timefmt import format_time

__all__ = ["FailureReport", "RetryPolicy"]

MAX_ERRTYPE_BYTES = 100
MAX_MESSAGE_BYTES = 1000
MAX_BACKTRACE_LINES = 50


def _clip(text: str, limit: int) -> str:
    text = text.strip() or "unknown"
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class FailureReport:
    """A failure as a worker (or the reservation reaper) reports it, already cleaned."""

    errtype: str
    message: str
    backtrace: tuple[str, ...]

    @classmethod
    def clean(cls, errtype: str, message: str, backtrace: Sequence[str]) -> FailureReport:
        return cls(
            _clip(errtype, MAX_ERRTYPE_BYTES),
            _clip(message, MAX_MESSAGE_BYTES),
            tuple(str(line) for line in backtrace[:MAX_BACKTRACE_LINES]),
        )


def faktory_backoff(count: int) -> float:
    return float(count**4 + 15 + random.randint(0, 29) * (count + 1))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Decides where a failed job goes. ``backoff(count)`` gives the delay in seconds."""

    dead_ttl_seconds: float
    backoff: Callable[[int], float] = field(default=faktory_backoff)

    def record(self, job: Job, report: FailureReport, now: float) -> None:
        """Update ``job.failure`` in place, in Faktory's key order."""
        previous = job.failure
        if previous is None:
            retry_count, remaining = 0, job.retry or 0
            failed_at = format_time(now)
        else:
            retry_count = _count(previous.get("retry_count"), -1) + 1
            remaining = max(0, _count(previous.get("remaining"), job.retry or 0) - 1)
            failed_at = str(previous.get("failed_at") or format_time(now))
        failure: dict[str, Any] = {
            "retry_count": retry_count,
            "remaining": remaining,
            "failed_at": failed_at,
            "message": report.message,
            "errtype": report.errtype,
        }
        if report.backtrace:
            failure["backtrace"] = list(report.backtrace)
        job.failure = failure

    def outcome(self, job: Job, now: float, encode: Callable[[Job], bytes]) -> FailOutcome:
        """Where the job (with ``failure`` already recorded) goes next."""
        retry = job.retry or 0
        if retry == 0:
            return FailOutcome(None)
        assert job.failure is not None
        count = _count(job.failure["retry_count"], 0)
        if count < retry:
            due = now + self.backoff(count)
            failure = dict(job.failure)
            failure = {**_head(failure), "next_at": format_time(due), **_tail(failure)}
            job.failure = failure
            target, score = SortedSet.RETRIES, due
        else:
            target, score = SortedSet.DEAD, now + self.dead_ttl_seconds
        return FailOutcome(target, score, encode(job), job.queue, job.jobtype)


_HEAD_KEYS = ("retry_count", "remaining", "failed_at")


def _head(failure: dict[str, Any]) -> dict[str, Any]:
    return {key: failure[key] for key in _HEAD_KEYS if key in failure}


def _tail(failure: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in failure.items() if k not in _HEAD_KEYS and k != "next_at"}


def _count(value: Any, default: int) -> int:
    """A count from a pushed job's ``failure``: clients may send anything there (Faktory's
    typed decoder would refuse the PUSH; we keep the job and ignore what is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return int(value)
