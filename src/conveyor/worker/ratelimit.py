"""Local rate limits: at most N jobs per period in one worker process (as kaptinlin/queue has).

``conveyor worker --rate-limit 100/s`` limits every job of the process, ``@app.job(
rate_limit="10/s")`` the jobs of one type. A job over the limit is not run: it fails with
``RetryAfter``, so the server retries it when its turn comes **without using a retry**.

Each limit is a GCRA (a token bucket kept as one time): at most ``burst`` jobs at once, then
one every ``1/rate`` seconds. A job turned away is given the next free slot (it is taken for
it), so a crowd of jobs comes back spread at the rate, not all at once; when it comes back at
its slot, it runs without taking another. The limit is per process and per limiter: several
processes each allow the rate (docs/results.md, "Local rate limits"). Not the server's
per-queue rate limits (``[queues.NAME] rate_limit``, ``manager/features/rate_limits.py``),
which hold over every worker.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<every>\d+(?:\.\d+)?)?\s*"
    r"(?P<unit>s|sec|second|m|min|minute|h|hour|d|day)s?\s*$",
    re.IGNORECASE,
)
EARLY_SECONDS = 0.05
"""A job back this much before its slot (the server's promotion runs every 50 ms) runs."""
FORGET_SECONDS = 300.0
"""A slot not claimed this long after its time is forgotten (the job went elsewhere)."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` jobs per ``per_seconds``, at most ``burst`` at once, in one worker process
    (local; the server's per-queue rate limits are ``[queues.NAME] rate_limit``,
    docs/admission.md)."""

    count: float
    per_seconds: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        if not (self.count > 0 and self.per_seconds > 0 and self.burst >= 1):
            raise ValueError("a rate limit needs count > 0, a period > 0 and burst >= 1")

    @classmethod
    def parse(cls, text: str, burst: int = 1) -> RateLimit:
        """``"10/s"``, ``"100/m"``, ``"5/h"``, ``"1000/d"``, ``"3/10s"``."""
        match = _PATTERN.match(text)
        if match is None:
            raise ValueError(
                f"invalid rate limit {text!r}: write COUNT/UNIT, e.g. 10/s, 100/m, 5/h or 3/10s"
            )
        every = float(match["every"] or 1)
        return cls(float(match["count"]), every * _UNITS[match["unit"][0].lower()], burst)

    @classmethod
    def of(cls, value: str | RateLimit) -> RateLimit:
        return value if isinstance(value, RateLimit) else cls.parse(value)

    @property
    def interval(self) -> float:
        return self.per_seconds / self.count

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per_seconds:g}s"


class RateLimiter:
    """One limit's state in this process. ``admit(jid)``: 0 when the job may run now, else
    the seconds until its slot."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._next = 0.0  # when the next slot is free (the GCRA's "theoretical arrival time")
        self._slots: OrderedDict[str, float] = OrderedDict()  # jid -> its slot, in slot order

    def admit(self, jid: str) -> float:
        now = self._clock()
        slot = self._slots.get(jid)
        if slot is not None:
            if now >= slot - EARLY_SECONDS:
                del self._slots[jid]
                return 0.0
            return slot - now
        self._forget(now)
        interval = self.limit.interval
        earliest = max(self._next, now)
        allowed_at = earliest - (self.limit.burst - 1) * interval
        self._next = earliest + interval
        if allowed_at <= now:
            return 0.0
        self._slots[jid] = allowed_at
        return allowed_at - now

    def _forget(self, now: float) -> None:
        while self._slots:
            jid, slot = next(iter(self._slots.items()))
            if slot > now - FORGET_SECONDS:
                return
            del self._slots[jid]
