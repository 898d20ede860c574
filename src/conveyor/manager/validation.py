"""What makes a pushed job acceptable, and the defaults Faktory fills in (faktory.md §1.3, §2).

Checks run in Faktory's order so the first error a client sees is the one Faktory would send.
One deliberate difference: the queue name is checked for scheduled jobs too, at PUSH, instead of
silently dropping the job when it comes due (Faktory only logs a line then).
"""

from __future__ import annotations

import functools
import re

import msgspec

from conveyor.errors import InvalidJob
from conveyor.job import DEFAULT_QUEUE, Job, decode_job, decode_job_array, decode_jobs
from conveyor.manager.config import ManagerConfig
from conveyor.timefmt import now_iso, parse_time

__all__ = [
    "QUEUE_NAME",
    "check_queue_name",
    "decode_pushed",
    "decode_pushed_bulk",
    "prepare_job",
    "reserve_seconds",
]

QUEUE_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_MIN_JID_LENGTH = 8


def decode_pushed(payload: bytes | str | msgspec.Raw, config: ManagerConfig) -> Job:
    """Decode a pushed job, turning size, syntax and type errors into ``InvalidJob``."""
    data = payload if not isinstance(payload, msgspec.Raw) else bytes(payload)
    if len(data) > config.max_payload_bytes:
        raise InvalidJob(
            f"job payload is {len(data)} bytes; the limit is {config.max_payload_bytes}"
        )
    try:
        return decode_job(data)
    except msgspec.DecodeError as exc:
        raise InvalidJob(f"invalid JSON: {exc}") from None


def decode_pushed_bulk(payload: bytes, config: ManagerConfig) -> list[Job] | list[msgspec.Raw]:
    """Decode a PUSHB array: all jobs in one call when that is safe, else element by element.

    The one-call path needs the whole array to fit the per-job size limit (so no job can
    exceed it) and every element to be a valid job; otherwise the elements come back raw, for
    ``decode_pushed`` to give each bad one its own error while the others are accepted.
    """
    if len(payload) <= config.max_payload_bytes:
        try:
            return decode_job_array(payload)
        except msgspec.DecodeError:
            pass
    try:
        return decode_jobs(payload)
    except msgspec.DecodeError as exc:
        raise InvalidJob(f"invalid JSON: {exc}") from None


@functools.lru_cache(maxsize=1024)  # a server sees few distinct queues; PUSHB checks each job
def check_queue_name(name: str) -> None:
    if QUEUE_NAME.fullmatch(name) is None:
        raise InvalidJob(f'cannot get "{name}" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z')


def prepare_job(job: Job, config: ManagerConfig, now: str | None = None) -> float | None:
    """Validate ``job`` and fill in its defaults in place.

    Returns the time the job is due when ``at`` is in the future-or-past form (None when
    the job has no ``at``); the caller decides between queue and scheduled set. ``now`` is
    the ``created_at`` to give a job without one (``now_iso()`` when not given), so a PUSHB
    formats the time once for all its jobs.
    """
    if len(job.jid) < _MIN_JID_LENGTH:
        raise InvalidJob("jobs must have a reasonable jid parameter")
    if not job.jobtype:
        raise InvalidJob("jobs must have a jobtype parameter")
    if job.args is None:
        raise InvalidJob("jobs must have an args parameter")
    if job.reserve_for > config.max_reserve_for_seconds:
        raise InvalidJob("jobs cannot be reserved for more than one day")
    if job.retry is None:
        job.retry = config.default_retry
    if not job.created_at:
        job.created_at = now or now_iso()
    if not job.queue:
        job.queue = DEFAULT_QUEUE
    due: float | None = None
    if job.at:
        try:
            due = parse_time(job.at)
        except ValueError as exc:
            raise InvalidJob(f"invalid timestamp for 'at': \"{job.at}\": {exc}") from None
    check_queue_name(job.queue)
    return due


def reserve_seconds(job: Job, config: ManagerConfig) -> int:
    """How long a fetch of this job reserves it: default when 0, clamped to the limits."""
    seconds = job.reserve_for or config.default_reserve_for_seconds
    return max(config.min_reserve_for_seconds, min(seconds, config.max_reserve_for_seconds))
