"""What happens to a failed job: the ``failure`` bookkeeping and Faktory's backoff (§3.2).

* ``retry`` 0 (or null): discard. ``retry`` -1: dead on the first failure.
* otherwise retried while ``retry_count < retry``, after
  ``count**4 + 15 + rand(0..29) * (count + 1)`` seconds, where ``count`` is the
  ``retry_count`` after this failure (0 on the first). Then dead.

A worker may steer this with its FAIL (``RetryControl``, docs/protocol.md): ``skip_retry``
sends the job to the dead set at once (Asynq's ``SkipRetry``), ``retry_after`` puts it back in
the retry set for that long **without counting a retry** (kaptinlin's rate-limit errors), and
``backoff`` replaces Faktory's delay for this retry (a job type's own backoff).
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

__all__ = ["MAX_DELAY_SECONDS", "NO_CONTROL", "FailureReport", "RetryControl", "RetryPolicy"]

MAX_ERRTYPE_BYTES = 100
MAX_MESSAGE_BYTES = 1000
MAX_BACKTRACE_LINES = 50
MAX_DELAY_SECONDS = 366 * 86_400.0
"""The longest ``retry_after`` or ``backoff`` a FAIL may ask for."""


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


@dataclass(frozen=True, slots=True)
class RetryControl:
    """What the worker asked for with its FAIL; the default asks for nothing."""

    skip: bool = False
    """Dead at once, retries left or not (``retry`` 0 still discards)."""
    retry_after: float | None = None
    """Back to the retry set, due in this many seconds, without counting a retry."""
    backoff: float | None = None
    """If the job is retried, it is due in this many seconds (instead of Faktory's backoff)."""

    def __post_init__(self) -> None:
        for name in ("retry_after", "backoff"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and 0 <= value <= MAX_DELAY_SECONDS
            ):
                raise ValueError(
                    f"{name} must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f}"
                )
        if self.skip and self.retry_after is not None:
            raise ValueError("skip_retry and retry_after contradict each other")


NO_CONTROL = RetryControl()


def faktory_backoff(count: int) -> float:
    return float(count**4 + 15 + random.randint(0, 29) * (count + 1))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Decides where a failed job goes. ``backoff(count)`` gives the delay in seconds."""

    dead_ttl_seconds: float
    backoff: Callable[[int], float] = field(default=faktory_backoff)

    def record(
        self, job: Job, report: FailureReport, now: float, control: RetryControl = NO_CONTROL
    ) -> None:
        """Update ``job.failure`` in place, in Faktory's key order. A failure that does not
        count (``retry_after``) keeps the counts as they were: a job that never failed
        before gets a ``failure`` without ``retry_count`` and ``remaining``."""
        previous = job.failure
        counted_before = previous is not None and "retry_count" in previous
        failed_at = str((previous or {}).get("failed_at") or format_time(now))
        failure: dict[str, Any] = {}
        if control.retry_after is not None:
            if counted_before:
                assert previous is not None
                failure = {k: previous[k] for k in ("retry_count", "remaining") if k in previous}
        elif not counted_before:
            failure = {"retry_count": 0, "remaining": job.retry or 0}
        else:
            assert previous is not None
            failure = {
                "retry_count": _count(previous.get("retry_count"), -1) + 1,
                "remaining": max(0, _count(previous.get("remaining"), job.retry or 0) - 1),
            }
        failure.update(failed_at=failed_at, message=report.message, errtype=report.errtype)
        if report.backtrace:
            failure["backtrace"] = list(report.backtrace)
        job.failure = failure

    def outcome(
        self,
        job: Job,
        now: float,
        encode: Callable[[Job], bytes],
        control: RetryControl = NO_CONTROL,
    ) -> FailOutcome:
        """Where the job (with ``failure`` already recorded) goes next."""
        if control.retry_after is not None:  # whatever its retries: it used none
            return self._retry(job, now + control.retry_after, encode)
        retry = job.retry or 0
        if retry == 0:
            return FailOutcome(None)
        assert job.failure is not None
        count = _count(job.failure["retry_count"], 0)
        if count < retry and not control.skip:
            delay = self.backoff(count) if control.backoff is None else control.backoff
            return self._retry(job, now + delay, encode)
        score = now + self.dead_ttl_seconds
        return FailOutcome(SortedSet.DEAD, score, encode(job), job.queue, job.jobtype)

    @staticmethod
    def _retry(job: Job, due: float, encode: Callable[[Job], bytes]) -> FailOutcome:
        assert job.failure is not None
        failure = dict(job.failure)
        job.failure = {**_head(failure), "next_at": format_time(due), **_tail(failure)}
        return FailOutcome(SortedSet.RETRIES, due, encode(job), job.queue, job.jobtype)


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
