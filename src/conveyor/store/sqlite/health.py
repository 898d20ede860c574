"""Whether the SQLite store can commit, and what it tells the log about it.

A commit that fails (disk full, I/O error) starts an *outage*. While it lasts the store refuses
every write at once with ``StoreUnavailable`` (PUSH, FETCH, ACK and FAIL answer ``-ERR``), so
nothing is handed out that cannot be recorded, and a *probe* -- one small real write,
committed on its own -- is tried again with exponential backoff until one commits.

Until commits have worked for ``SETTLE_SECONDS`` in a row the outage is not over: the store
stays careful (every write, FETCH and ACK included, waits for its commit, and nothing is
handed off), since a disk that takes a little and then fills again (WAL space reused, then
exhausted) fails commits on and off.

The log hears of it once: an ERROR when the outage starts, one WARNING when commits work
again, and in between at most one line per reminder interval (30 s, doubling up to an hour)
saying how things stand, however often commits fail or work meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from conveyor.errors import StoreUnavailable

__all__ = ["CommitHealth"]

log = logging.getLogger("conveyor.store.sqlite")

PROBE_FIRST_SECONDS = 0.05
PROBE_MAX_SECONDS = 1.0
"""Probe backoff: 50 ms, doubling, then once a second: commits resume within a second of the
disk taking writes again, and a full disk costs one tiny write attempt per second."""
REMINDER_FIRST_SECONDS = 30.0
REMINDER_MAX_SECONDS = 3600.0
SETTLE_SECONDS = 30.0


class CommitHealth:
    """The outage state of one database. ``probe`` tries one small commit and reports back
    through ``failed`` or ``recovered``; it is scheduled on the running event loop."""

    def __init__(self, path: str, probe: Callable[[], None]) -> None:
        self.path = path
        self._probe = probe
        self.refusal: str | None = None  # what writes are told while commits fail
        self.failures = 0
        self._started: float | None = None  # monotonic start of the outage, None: no outage
        self._last_failure = 0.0
        self._last_error = ""
        self._delay = PROBE_FIRST_SECONDS
        self._remind_every = REMINDER_FIRST_SECONDS
        self._remind_at = 0.0
        self._told_failing = False  # what the log last said
        self._recovery_told = False
        self._probe_timer: asyncio.TimerHandle | None = None
        self._tell_timer: asyncio.TimerHandle | None = None

    @property
    def in_outage(self) -> bool:
        """True from a failed commit until commits have worked for ``SETTLE_SECONDS``: the
        store is careful meanwhile (every write waits for its commit, nothing is handed off)."""
        return self._started is not None

    def refuse(self) -> StoreUnavailable:
        """The error for a write refused now (a new one each time: each is raised once)."""
        return StoreUnavailable(self.refusal or "SQLite cannot commit")

    # ------------------------------------------------------------- events

    def failed(self, exc: BaseException) -> None:
        """A commit (or the probe) failed: start or continue the outage, schedule a probe."""
        now = time.monotonic()
        self._last_error = str(exc)
        if self._started is None:
            self._start(now, exc)
        else:
            again = self.refusal is None  # it failed again after a recovery
            if again:
                self.refusal = self._refusal(exc)
            if again or now >= self._remind_at:
                self._note(now)
        self.failures += 1
        self._last_failure = now
        self._schedule_probe()

    def recovered(self) -> None:
        """The probe committed: writes are accepted again."""
        self.refusal = None
        if self._started is None:
            return
        if self._recovery_told:
            self._note(time.monotonic())
        else:  # the first recovery is told at once: the operator is waiting for it
            self._recovery_told = True
            self._tell(time.monotonic())

    def committed(self) -> None:
        """A commit succeeded during an outage (only called then: the hot path pays one
        attribute test). The outage ends after ``SETTLE_SECONDS`` without a failure."""
        now = time.monotonic()
        if self.refusal is not None or now - self._last_failure < SETTLE_SECONDS:
            return
        if self._told_failing:
            self._tell(now)
        self._started = None
        self._cancel_timers()

    # ------------------------------------------------------------- the log

    def _refusal(self, exc: BaseException) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return f"SQLite cannot commit since {since}: {exc}; retrying by itself"

    def _start(self, now: float, exc: BaseException) -> None:
        self._started = now
        self.failures = 0
        self._delay = PROBE_FIRST_SECONDS
        self._remind_every = REMINDER_FIRST_SECONDS
        self._remind_at = now + self._remind_every
        self._told_failing = True
        self._recovery_told = False
        self.refusal = self._refusal(exc)
        log.error(
            "SQLite cannot commit to %s: %s. PUSH, FETCH, ACK and FAIL are refused until it"
            " can; retrying by itself (see 'When things fail' in docs/operations.md)",
            self.path,
            exc,
        )

    def _note(self, now: float) -> None:
        """The state changed, or a reminder is due: tell the log now if it has not been told
        anything for a while, else once the reminder interval is over."""
        if now >= self._remind_at:
            self._tell(now)
        elif self._tell_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # closing outside the loop
                return
            self._tell_timer = loop.call_later(self._remind_at - now, self._tell_due)

    def _tell_due(self) -> None:
        self._tell_timer = None
        failing = self.refusal is not None
        if self._started is not None and (failing or failing != self._told_failing):
            self._tell(time.monotonic())

    def _tell(self, now: float) -> None:
        assert self._started is not None
        failing = self.refusal is not None
        if failing:
            log.warning(
                "SQLite still cannot commit to %s, %.0f s after the first failure"
                " (%d failed attempts, the last: %s)",
                self.path,
                now - self._started,
                self.failures,
                self._last_error,
            )
        else:
            log.warning(
                "SQLite commits to %s again, %.1f s after the first failure (%d failed attempts)",
                self.path,
                now - self._started,
                self.failures,
            )
        self._told_failing = failing
        self._remind_every = min(self._remind_every * 2, REMINDER_MAX_SECONDS)
        self._remind_at = now + self._remind_every

    # ------------------------------------------------------------- the probe

    def _schedule_probe(self) -> None:
        if self._probe_timer is not None:
            return  # one probe at a time
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # closing outside the loop: nobody to recover for
            return
        self._probe_timer = loop.call_later(self._delay, self._run_probe)
        self._delay = min(self._delay * 2, PROBE_MAX_SECONDS)

    def _run_probe(self) -> None:
        self._probe_timer = None
        if self.refusal is not None:
            self._probe()

    def _cancel_timers(self) -> None:
        for timer in (self._probe_timer, self._tell_timer):
            if timer is not None:
                timer.cancel()
        self._probe_timer = self._tell_timer = None

    def close(self) -> None:
        self._cancel_timers()
