"""Cancels: the one step that cancels a job where it waits or runs (docs/cancellation.md).

A cancel changes a job and what is known of it together: the job leaves its queue, sorted set,
group or reservation, and in the same atomic step its cancellation is recorded and counted.
So several servers cancelling, pushing and fetching over one store can never count a job
twice, lose the record of one, or cancel a job that has moved on (the manager locates the job
again and tries there).

What the step writes are **records** (``records.py``) in three spaces, read with the records
API like any other:

* ``cancelled``: ``jid -> `` the manager's description of the cancellation (opaque here),
  with the retention it chose as expiry. The job's page and a late FAIL read it.
* ``cancel-notices``: ``jid -> wid`` for a job cancelled while a worker ran it: the worker
  learns of it from there (``CANCELS``, docs/protocol.md).
* ``cancel-counts``: ``total`` and one key per UTC day (``YYYY-MM-DD``) ``-> `` how many jobs
  were cancelled, as ASCII digits, never expiring.

Harmless to run twice: a second step finds the job gone and its record there, and answers
``ALREADY`` without counting it again (on Redis the script also takes a per-call token, so a
retry after a lost reply answers what the first attempt did).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.store.records import Record

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import QueuedJob

__all__ = [
    "CANCELLED_SPACE",
    "COUNTS_SPACE",
    "NOTICES_SPACE",
    "TOTAL_KEY",
    "CancelOutcome",
    "CancelTarget",
    "Cancels",
    "decode_count",
    "encode_count",
]

CANCELLED_SPACE = "cancelled"
NOTICES_SPACE = "cancel-notices"
COUNTS_SPACE = "cancel-counts"
TOTAL_KEY = "total"
CANCEL_FROM = ("queued", "scheduled", "retries", "working", "aggregating")
"""Where a job can be cancelled (``CancelTarget.where``)."""


@dataclass(frozen=True, slots=True)
class CancelTarget:
    """A job to cancel where it was found, and what must still be true for the cancel:

    * ``queued``: waiting in ``queue``; with ``entry`` (the job as ``find_queued`` returned
      it), only that exact entry counts (Redis then removes it without a scan);
    * ``scheduled`` or ``retries``: the entry of that set with ``score``;
    * ``working``: reserved by worker ``wid``;
    * ``aggregating``: a member of the aggregating group ``group`` (``groups.py``).
    """

    jid: str
    where: str
    queue: str = ""
    score: float = 0.0
    wid: str = ""
    group: str = ""
    entry: QueuedJob | None = None

    def __post_init__(self) -> None:
        if self.where not in CANCEL_FROM:
            raise ValueError(f"cannot cancel a job from {self.where!r}")


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"
    """The job was where the target said: it is gone, recorded and counted."""
    ALREADY = "already"
    """It was not there, and a live record of its cancellation exists (an earlier call, on
    this server or another, or this very call sent again after a lost reply)."""
    MOVED = "moved"
    """It was not there and was not cancelled: it moved on meanwhile. Nothing changed."""


def encode_count(count: int) -> bytes:
    return b"%d" % count


def decode_count(value: bytes | None) -> int:
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


class Cancels(abc.ABC):
    """The cancels capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def cancel_job(
        self,
        target: CancelTarget,
        record: Record,
        notice: Record | None,
        day: str,
        now: float,
    ) -> CancelOutcome:
        """Cancel one job, atomically: if it is where ``target`` says, remove it from there
        (end its reservation, uncounted as processed or failed), store ``record`` (whose key
        is the jid) in ``cancelled`` and ``notice`` (if given) in ``cancel-notices``, and add
        1 to the ``total`` and ``day`` counts; return ``CANCELLED``. Otherwise change nothing
        and return ``ALREADY`` (``cancelled`` holds a record for the jid live at ``now``) or
        ``MOVED``. Durable, as an admin change."""
