"""Backoff policies for a job type's retries: ``@app.job(backoff=conveyor.Exponential(...))``.

A policy is any callable ``(retry_count) -> seconds``: ``retry_count`` is how many times the job
failed before this failure (0 on its first). The worker computes the delay when the job fails
and sends it with the FAIL (``"backoff"``, docs/protocol.md); the server schedules the retry
then. Without a policy, the server's backoff applies (Faktory's ``count**4 + 15 + rand``);
against a plain Faktory server, always.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BackoffPolicy", "Exponential", "Fixed", "backoff_seconds"]

BackoffPolicy = Callable[[int], float]


@dataclass(frozen=True, slots=True)
class Exponential:
    """``base * factor**retry_count`` seconds, at most ``max``; ``jitter`` (0 to 1) takes up to
    that fraction off at random, so retries of many jobs that failed together spread out."""

    base: float = 1.0
    max: float = 3600.0
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.max >= self.base and self.factor >= 1):
            raise ValueError("Exponential needs base > 0, max >= base and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be from 0 to 1, got {self.jitter}")

    def __call__(self, retry_count: int) -> float:
        exponent = min(max(retry_count, 0), 1024)
        delay = min(self.max, self.base * self.factor**exponent)
        return delay * (1 - self.jitter * random.random())


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same delay before every retry."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError(f"Fixed needs seconds >= 0, got {self.seconds}")

    def __call__(self, retry_count: int) -> float:
        return self.seconds


def backoff_seconds(policy: BackoffPolicy, retry_count: int) -> float | None:
    """The policy's delay, or None (the server's backoff) when it gives no usable number."""
    delay = policy(retry_count)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        return None
    return min(max(float(delay), 0.0), 366 * 86_400.0)
