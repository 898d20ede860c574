"""Every timing constant and limit of the job lifecycle, in one place, all configurable.

Defaults match Faktory 1.10 where Faktory's value is a promise clients rely on (fetch wait,
reservation length, retry default, dead-set retention) and are better where Faktory's value is
just slow (promotion of due jobs every 5 s, reservation reaping every 15 s).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ManagerConfig"]

DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    fetch_wait_seconds: float = 2.0
    """How long an empty FETCH waits for a job before answering ``$-1`` (Faktory: 2 s)."""

    default_retry: int = 25
    """Retries for a job that does not say (Faktory: 25)."""

    default_reserve_for_seconds: int = 1800
    min_reserve_for_seconds: int = 60
    max_reserve_for_seconds: int = DAY_SECONDS
    """A job's ``reserve_for`` is defaulted, then clamped to [min, max] at enqueue time; PUSH
    rejects values above max as Faktory does."""

    fetch_ahead_seconds: float = 0.2
    """Redis: a connection that FETCHes one job after each ACK has its next job reserved in
    the ACK's round trip, held this long for its FETCH, then given back (0: never;
    docs/design/hand-off.md)."""

    scheduler_interval_seconds: float = 0.05
    """How often due scheduled jobs and retries are promoted (Faktory: 5 s)."""

    scheduler_batch: int = 500

    reaper_interval_seconds: float = 1.0
    """How often expired reservations are sent down the failure path (Faktory: 15 s)."""

    worker_reaper_interval_seconds: float = 15.0
    worker_timeout_seconds: float = 60.0
    """Workers silent for longer than this are forgotten and their connections closed."""

    dead_ttl_seconds: float = 180 * DAY_SECONDS
    """How long a dead job is kept (Faktory: 180 days)."""

    dead_max_jobs: int = 0
    """Keep at most this many dead jobs, dropping the oldest (0 = no limit, as Faktory)."""

    dead_purge_interval_seconds: float = 60.0

    records_purge_interval_seconds: float = 10.0
    """How often expired records (unique locks, tracking, results, ...) are deleted; readers
    ignore them from the moment they expire, so this only reclaims space."""

    max_payload_bytes: int = 10 * 1024 * 1024
    """Largest accepted job payload; larger PUSHes are refused with a clear error."""
