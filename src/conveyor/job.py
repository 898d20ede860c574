"""The job payload as Faktory defines it (``reference/faktory.md`` §2), encoded with msgspec.

Faktory decodes every job into a typed struct and re-encodes it, so what a worker fetches has
the canonical key order and no unknown top-level keys; ``custom`` is the place for free-form
data. We do the same, with two deliberate differences, both documented in ``docs/protocol.md``:

* numbers in ``args`` and ``custom`` are kept exactly (Go turns them into float64, so
  ``12345678901234567890`` comes back as ``12345678901234567000``);
* ``<``, ``>`` and ``&`` are not escaped as ``\\u003c`` and friends.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "DEFAULT_QUEUE",
    "DEFAULT_RETRY",
    "Job",
    "decode_job",
    "decode_job_array",
    "decode_jobs",
    "encode_job",
]

DEFAULT_QUEUE = "default"
DEFAULT_RETRY = 25


class Job(msgspec.Struct, omit_defaults=True):
    """One job. Field order is Faktory's output order; empty fields are left out.

    ``retry`` is ``None`` only between decoding and validation: the manager always sets it
    before the job is stored, so a stored or fetched job always carries ``"retry"``.
    """

    retry: int | None = None
    failure: dict[str, Any] | None = None
    custom: dict[str, Any] | None = None
    jid: str = ""
    queue: str = ""
    jobtype: str = ""
    created_at: str = ""
    enqueued_at: str = ""
    at: str = ""
    args: list[Any] | None = None
    reserve_for: int = 0
    backtrace: int = 0


_decoder = msgspec.json.Decoder(Job)
_array_decoder = msgspec.json.Decoder(list[Job])
_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()


def decode_job(data: bytes | str) -> Job:
    """Decode one job; raises ``msgspec.DecodeError`` (a ``ValueError``) on bad JSON or types."""
    return _decoder.decode(data)


def decode_job_array(data: bytes | str) -> list[Job]:
    """Decode a JSON array of jobs in one call; any bad element fails the whole array."""
    return _array_decoder.decode(data)


def decode_jobs(data: bytes | str) -> list[msgspec.Raw]:
    """Split a JSON array of jobs into raw elements, so each can be validated on its own."""
    return _list_decoder.decode(data)


def encode_job(job: Job) -> bytes:
    """Encode a job in canonical form."""
    return _encoder.encode(job)
