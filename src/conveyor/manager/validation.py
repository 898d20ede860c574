"""What makes a pushed job acceptable, and the defaults Faktory fills in (faktory.md §1.3, §2).

Checks run in Faktory's order so the first error a client sees is the one Faktory would send.
Deliberate differences: the queue name is checked for scheduled jobs too, at PUSH, instead of
silently dropping the job when it comes due (Faktory only logs a line then); and a job may nest
arrays and objects at most ``MAX_NESTING_DEPTH`` levels deep (Faktory has no limit).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from conveyor.errors import InvalidJob
from conveyor.job import DEFAULT_QUEUE, Job, decode_job, decode_job_array, decode_jobs
from conveyor.manager.config import ManagerConfig
from conveyor.timefmt import now_iso, parse_time

__all__ = [
    "MAX_NESTING_DEPTH",
    "QUEUE_NAME",
    "check_queue_name",
    "decode_pushed",
    "decode_pushed_bulk",
    "fits_depth",
    "prepare_job",
    "reserve_seconds",
]

QUEUE_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_MIN_JID_LENGTH = 8

MAX_NESTING_DEPTH = 64
"""Levels of arrays and objects a job may nest, the job object itself being the first.

msgspec has no limit of its own: it stops at Python's recursion limit (~1000 levels, fewer the
deeper the caller's stack) with a ``RecursionError``. Ruby's JSON parser refuses more than 100
levels by default, so deeper jobs would not reach Ruby workers either."""
TOO_DEEP = f"jobs cannot nest arrays and objects more than {MAX_NESTING_DEPTH} levels deep"
_CONTAINER_TYPES = frozenset({list, dict, tuple})
_is_container = _CONTAINER_TYPES.__contains__


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
    except RecursionError:  # far deeper than MAX_NESTING_DEPTH
        raise InvalidJob(TOO_DEEP) from None


def decode_pushed_bulk(payload: bytes, config: ManagerConfig) -> list[Job] | list[msgspec.Raw]:
    """Decode a PUSHB array: all jobs in one call when that is safe, else element by element.

    The one-call path needs the whole array to fit the per-job size limit (so no job can
    exceed it) and every element to be a valid job; otherwise the elements come back raw, for
    ``decode_pushed`` to give each bad one its own error while the others are accepted.
    """
    if len(payload) <= config.max_payload_bytes:
        try:
            return decode_job_array(payload)
        except (msgspec.DecodeError, RecursionError):
            pass
    try:
        return decode_jobs(payload)
    except msgspec.DecodeError as exc:
        raise InvalidJob(f"invalid JSON: {exc}") from None
    except RecursionError:  # an element too deep for msgspec even to skip over
        return split_array(payload)


# A JSON string (the unrolled form: no backtracking per character), or one structural byte.
_ARRAY_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
_OPEN, _CLOSE, _COMMA, _QUOTE = b"[{", b"]}", ord(","), ord('"')


def split_array(payload: bytes) -> list[msgspec.Raw]:
    """The raw elements of a JSON array, found by tracking brackets outside strings.

    For arrays msgspec cannot split because an element nests too deeply for its recursion:
    each element is then decoded (and refused, or accepted) on its own. The elements are not
    checked here; a broken array structure raises ``InvalidJob``. Linear in the number of
    strings and brackets, as a PUSHB line of the same size would be to decode.
    """
    data = payload.strip()
    if data[:1] != b"[" or data[-1:] != b"]":
        raise InvalidJob("invalid JSON: expected an array of jobs")
    elements: list[msgspec.Raw] = []
    depth, start = 0, 1
    for match in _ARRAY_TOKEN.finditer(data):
        byte = data[match.start()]
        if byte == _QUOTE:
            continue
        if byte in _OPEN:
            depth += 1
        elif byte in _CLOSE:
            depth -= 1
            if depth < 0 or (depth == 0 and match.end() != len(data)):
                raise InvalidJob("invalid JSON: unbalanced brackets in the array of jobs")
        if (depth == 1 and byte == _COMMA) or depth == 0:
            element = data[start : match.start()].strip()
            if element or byte == _COMMA or elements:
                elements.append(msgspec.Raw(element))
            start = match.end()
    if depth != 0:
        raise InvalidJob("invalid JSON: unbalanced brackets in the array of jobs")
    return elements


@functools.lru_cache(maxsize=1024)  # a server sees few distinct queues; PUSHB checks each job
def check_queue_name(name: str) -> None:
    if QUEUE_NAME.fullmatch(name) is None:
        raise InvalidJob(f'cannot get "{name}" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z')


def fits_depth(payload: bytes) -> bool:
    """Whether the job ``payload`` decodes to cannot nest more than ``MAX_NESTING_DEPTH``
    levels: it holds no more brackets that open an array or object than that (those inside
    strings counted too). Two byte counts, for ``prepare_job`` to skip its walk."""
    return payload.count(b"[") + payload.count(b"{") <= MAX_NESTING_DEPTH


def prepare_job(
    job: Job, config: ManagerConfig, now: str | None = None, *, shallow: bool = False
) -> float | None:
    """Validate ``job`` and fill in its defaults in place.

    Returns the time the job is due when ``at`` is in the future-or-past form (None when
    the job has no ``at``); the caller decides between queue and scheduled set. ``now`` is
    the ``created_at`` to give a job without one (``now_iso()`` when not given), so a PUSHB
    formats the time once for all its jobs. ``shallow``: the caller knows the job nests
    within the limit (``fits_depth(payload)``), which is then not walked.
    """
    if len(job.jid) < _MIN_JID_LENGTH:
        raise InvalidJob("jobs must have a reasonable jid parameter")
    if not job.jobtype:
        raise InvalidJob("jobs must have a jobtype parameter")
    if job.args is None:
        raise InvalidJob("jobs must have an args parameter")
    if not shallow and _nests_deeper(MAX_NESTING_DEPTH - 1, job.args, job.custom, job.failure):
        raise InvalidJob(TOO_DEEP)
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


def _nests_deeper(limit: int, *values: object) -> bool:
    """Whether any of ``values`` nests lists/dicts more than ``limit`` levels (itself the first).

    Level by level, and only into containers: a long list of scalars costs one C-level pass.
    """
    level: list[Any] = [value for value in values if type(value) in _CONTAINER_TYPES]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            children: Iterable[Any] = node.values() if type(node) is dict else node
            if any(map(_is_container, map(type, children))):
                below.extend(child for child in children if type(child) in _CONTAINER_TYPES)
        level, depth = below, depth + 1
    return False


def reserve_seconds(job: Job, config: ManagerConfig) -> int:
    """How long a fetch of this job reserves it: default when 0, clamped to the limits."""
    seconds = job.reserve_for or config.default_reserve_for_seconds
    return max(config.min_reserve_for_seconds, min(seconds, config.max_reserve_for_seconds))
