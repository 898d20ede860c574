"""What the results feature stores and sends: outcomes, the completed section, job policies.

* An **outcome** (``Outcome``) is how a job ended, as the ``RESULT`` reply and the
  ``app.result()`` call see it: ``succeeded`` with its result, or ``failed`` with the error.
  It is stored as a record (space ``results``, key: the jid) when the job asked for its
  result (``custom.result_ttl``), for that long.
* A job kept after success (``custom.retain``) is stored in the ``completed`` set as its own
  payload with one more top-level member, ``"completed"`` (``Completion``): when it finished,
  on which worker, how long it ran, and its result. The job stays a valid job document, so
  the set lists, filters and searches like the others.

``result_ttl`` and ``retain`` are seconds; a job that does not say takes the server's default
(``[results]``), and 0 means "no".
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

__all__ = [
    "FAILED",
    "MAX_KEEP_SECONDS",
    "SPACE",
    "SUCCEEDED",
    "Asks",
    "Completion",
    "JobPolicy",
    "Outcome",
    "completion_of",
    "decode_outcome",
    "decode_policy",
    "encode",
    "invalid_seconds",
    "read_policy",
    "seconds_of",
    "seconds_or",
    "with_completion",
]

SPACE = "results"
"""The records space of outcomes, keyed by jid."""
MAX_KEEP_SECONDS = 10 * 366 * 86_400
"""The longest ``result_ttl`` or ``retain`` a job may ask for."""

SUCCEEDED = "succeeded"
FAILED = "failed"


class Outcome(msgspec.Struct, omit_defaults=True):
    """How a job ended. ``result`` is the handler's value as JSON (``null`` when it returned
    nothing or its worker sent none); the error fields are those of the job's last failure."""

    jid: str
    state: str
    finished_at: str = ""
    jobtype: str = ""
    queue: str = ""
    wid: str = ""
    duration: float | None = None
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    errtype: str = ""
    message: str = ""
    backtrace: list[str] = []
    retry_count: int | None = None


class Completion(msgspec.Struct, omit_defaults=True):
    """The ``"completed"`` member of a job in the completed set."""

    finished_at: str
    wid: str = ""
    duration: float | None = None
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class Asks(msgspec.Struct):
    """The two members of a job's ``custom`` the ACK path reads; the others are skipped, not
    decoded (a job's ``custom`` may be large: batch or workflow data)."""

    result_ttl: Any = None
    retain: Any = None


class JobPolicy(msgspec.Struct):
    """The parts of a job the feature reads on the ACK path (a partial decode)."""

    custom: Asks | None = None
    jobtype: str = ""


class _Kept(msgspec.Struct):
    jid: str = ""
    jobtype: str = ""
    queue: str = ""
    completed: Completion | None = None


encode = msgspec.json.Encoder().encode
_decode_outcome = msgspec.json.Decoder(Outcome).decode
decode_policy = msgspec.json.Decoder(JobPolicy).decode
"""``JobPolicy`` of a payload (``msgspec.DecodeError``, ``RecursionError`` for one that is not
a job); ``read_policy`` without the ``try``, for the ACK path that has its own."""
_decode_kept = msgspec.json.Decoder(_Kept).decode


def decode_outcome(data: bytes) -> Outcome:
    return _decode_outcome(data)


def read_policy(payload: bytes) -> JobPolicy | None:
    """The job's custom, jobtype and queue; None for a payload that is not a job."""
    try:
        return decode_policy(payload)
    except (msgspec.DecodeError, RecursionError):
        return None


def invalid_seconds(value: Any) -> bool:
    """Whether a ``custom.result_ttl`` / ``custom.retain`` value is not usable."""
    kind = value.__class__
    if kind is int or kind is float:  # the usual value, asked of each job: NaN fails too
        return not 0 <= value <= MAX_KEEP_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return not (math.isfinite(value) and 0 <= value <= MAX_KEEP_SECONDS)


def seconds_of(custom: dict[str, Any] | None, key: str, default: float) -> float:
    """``custom[key]`` when it is a usable number of seconds, else ``default``."""
    if not custom or key not in custom:
        return default
    return seconds_or(custom[key], default)


def seconds_or(value: Any, default: float) -> float:
    """``value`` when it is a usable number of seconds (None: not given), else ``default``."""
    if value is None or invalid_seconds(value):
        return default
    return float(value)


def with_completion(payload: bytes, completion: Completion) -> bytes:
    """The job's payload with its ``"completed"`` member added (a payload is a JSON object
    the manager encoded; one that does not end in ``}`` is re-encoded)."""
    member = b'"completed":' + encode(completion)
    body = payload.rstrip()
    if body.endswith(b"}") and body.lstrip().startswith(b"{"):
        inner = body[:-1].rstrip()
        return inner + (b"," if not inner.endswith(b"{") else b"") + member + b"}"
    document = msgspec.json.decode(payload)
    return encode({**(document if isinstance(document, dict) else {}), "completed": completion})


def completion_of(payload: bytes) -> Outcome | None:
    """The outcome a completed-set entry tells (None when it has no ``"completed"``)."""
    try:
        kept = _decode_kept(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    done = kept.completed
    if done is None:
        return None
    return Outcome(
        kept.jid,
        SUCCEEDED,
        done.finished_at,
        kept.jobtype,
        kept.queue,
        done.wid,
        done.duration,
        done.result if done.result is not msgspec.UNSET else msgspec.Raw(b"null"),
    )
