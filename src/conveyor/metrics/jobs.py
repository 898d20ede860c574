"""What the manager counts about jobs, by queue and jobtype, for ``/metrics`` and statsd.

The manager calls these methods (only when it was given a ``JobMetrics``) at the points where it
already holds what they need, so counting adds no store round trip:

* a push knows the decoded job;
* a reservation (``reserve`` or a hand-off) knows the queue and the payload: kept under the jid
  until the job ends on this server;
* an ACK knows only jids: the kept reservation gives the queue, and its payload the jobtype
  (decoded then, once, into a one-field struct). A job reserved by another server sharing the
  store (Redis) and acknowledged here is counted with empty labels;
* a FAIL or a reservation expiry decodes the job anyway.

Job run times are what workers report (``docs/protocol.md``: the ``duration`` key of ACK, ACKB
and FAIL); a standard Faktory client reports none and is simply not in the histogram.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence

import msgspec
from prometheus_client.core import Metric

from conveyor.job import Job
from conveyor.metrics.stats import Counters, Histograms
from conveyor.store.base import FailOutcome, QueuedJob, Reservation, SortedSet

__all__ = ["JOB_LABELS", "JobMetrics", "parse_duration"]

JOB_LABELS = ("queue", "jobtype")
MAX_DURATION_SECONDS = 7 * 86_400.0
"""A reported run time above this (or negative, or not a number) is ignored, not observed."""
STALE_GRACE_SECONDS = 3600.0
"""A kept reservation this long past its expiry ended elsewhere (another server): dropped."""


class _JobType(msgspec.Struct, gc=False):
    jobtype: str = ""


_decode_jobtype = msgspec.json.Decoder(_JobType).decode
_decode_jobtypes = msgspec.json.Decoder(list[_JobType]).decode

SETTLE_EVERY = 1024
"""Acknowledged jobs noted before they are counted (and at every scrape)."""


def jobtype_of(payload: bytes) -> str:
    """The jobtype of a stored payload (one msgspec call into a one-field struct: as fast as
    a single ``bytes.find``, and it undoes JSON escapes)."""
    try:
        return _decode_jobtype(payload).jobtype
    except msgspec.DecodeError:
        return ""


def parse_duration(value: object) -> float | None:
    """A worker's reported run time in seconds (a number, or a string of one), or None."""
    if type(value) is float:  # the usual case (ACKB items): no more to check
        return value if 0.0 <= value <= MAX_DURATION_SECONDS else None
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if 0.0 <= seconds <= MAX_DURATION_SECONDS else None


class JobMetrics:
    """Counters and run-time histograms of the jobs that pass through one manager."""

    def __init__(self) -> None:
        self.pushed = Counters()
        self.fetched = Counters()
        self.processed = Counters()
        self.failed = Counters()
        self.expired = Counters()
        self.dead = Counters()
        self.durations = Histograms()
        # jid -> (queue, payload, expires_at) of jobs reserved by this server and not yet ended
        self._acked: list[tuple[str, bytes, float | None]] = []
        """(queue, payload, run time) of jobs acknowledged but not yet counted (``settle``)."""
        self._running: dict[str, tuple[str, bytes, float]] = {}

    # -- called by the manager -------------------------------------------------------------------

    def on_push(self, job: Job) -> None:
        key = (job.queue, job.jobtype)
        values = self.pushed.values
        if key in values:  # the usual case, inlined: this runs for every job
            values[key] += 1
        else:
            self.pushed.add(key)

    def on_reserve(self, reservations: Sequence[Reservation]) -> None:
        running = self._running
        queue, count = reservations[0].queue, 0
        for r in reservations:  # a FETCHB may take from several queues, one after the other
            running[r.jid] = (r.queue, r.payload, r.expires_at)
            if r.queue != queue:
                self.fetched.add((queue,), count)
                queue, count = r.queue, 0
            count += 1
        self.fetched.add((queue,), count)

    def on_hand_off(self, jobs: Sequence[QueuedJob], now: float) -> None:
        running = self._running
        for job in jobs:
            running[job.jid] = (job.queue, job.payload, now + job.reserve_for)
        self.fetched.add((jobs[0].queue,), len(jobs))

    def on_ack(self, jids: Sequence[str], done: int, durations: Mapping[str, float]) -> None:
        """``done``: how many reservations the store ended (the others were gone already).

        The jobs are only noted here; ``settle`` counts them, many at a time (one msgspec call
        reads the jobtypes of all of them), before anything reads the counters."""
        pop = self._running.pop
        note = self._acked.append
        known = 0
        for jid in jids:
            kept = pop(jid, None)
            if kept is not None:
                known += 1
                note((kept[0], kept[1], durations.get(jid) if durations else None))
        if done > known:  # reserved through another server sharing the store
            self.processed.add(("", ""), done - known)
        if len(self._acked) >= SETTLE_EVERY:
            self.settle()

    def settle(self) -> None:
        """Count the acknowledged jobs noted since the last time."""
        acked, self._acked = self._acked, []
        if not acked:
            return
        try:
            found = _decode_jobtypes(b"[" + b",".join([a[1] for a in acked]) + b"]")
            jobtypes = [f.jobtype for f in found]
        except msgspec.DecodeError:  # not one of our payloads: each on its own
            jobtypes = [jobtype_of(a[1]) for a in acked]
        processed = self.processed.values
        rows, buckets = self.durations.values, self.durations.buckets
        for (queue, _, seconds), jobtype in zip(acked, jobtypes, strict=True):
            labels = (queue, jobtype)
            if labels in processed:  # Counters.add and Histograms.observe, inlined
                processed[labels] += 1
            else:
                self.processed.add(labels)
            if seconds is not None:
                row = rows.get(labels)
                if row is not None:
                    row[bisect_left(buckets, seconds)] += 1
                    row[-1] += seconds
                else:
                    self.durations.observe(labels, seconds)

    def on_fail(
        self, job: Job, outcome: FailOutcome, *, expired: bool, duration: float | None
    ) -> None:
        self._running.pop(job.jid, None)
        labels = (job.queue, job.jobtype)
        self.processed.add(labels)
        self.failed.add(labels)
        if expired:
            self.expired.add(labels)
        if outcome.target is SortedSet.DEAD:
            self.dead.add(labels)
        if duration is not None:
            self.durations.observe(labels, duration)

    def forget(self, jid: str) -> None:
        """A reservation that ended without a job outcome (discarded at fetch)."""
        self._running.pop(jid, None)

    def on_flush(self) -> None:
        self._running.clear()
        self._acked.clear()

    # -- housekeeping and export -----------------------------------------------------------------

    @property
    def running(self) -> int:
        """Reservations this server made that have not ended here (yet)."""
        return len(self._running)

    def drop_stale(self, now: float | None = None) -> int:
        """Forget kept reservations long past their expiry: they ended on another server."""
        cutoff = (time.time() if now is None else now) - STALE_GRACE_SECONDS
        stale = [jid for jid, kept in list(self._running.items()) if kept[2] < cutoff]
        for jid in stale:
            self._running.pop(jid, None)
        return len(stale)

    def families(self) -> Iterator[Metric]:
        self.settle()
        yield self.pushed.family(
            "conveyor_jobs_pushed", "Jobs accepted by PUSH/PUSHB on this server.", JOB_LABELS
        )
        yield self.fetched.family(
            "conveyor_jobs_fetched", "Jobs handed to workers by this server.", ("queue",)
        )
        yield self.processed.family(
            "conveyor_jobs_processed",
            "Jobs that ended on this server: acknowledged, failed or expired (as Faktory's "
            "processed counter).",
            JOB_LABELS,
        )
        yield self.failed.family(
            "conveyor_jobs_failed",
            "Jobs that failed on this server (FAIL or reservation expiry).",
            JOB_LABELS,
        )
        yield self.expired.family(
            "conveyor_jobs_expired",
            "Jobs whose reservation expired before the worker reported.",
            JOB_LABELS,
        )
        yield self.dead.family(
            "conveyor_jobs_dead", "Failed jobs moved to the dead set (retries used up).", JOB_LABELS
        )
        yield self.durations.family(
            "conveyor_job_run_duration_seconds",
            "How long jobs ran, as reported by the workers that ran them.",
            JOB_LABELS,
        )
