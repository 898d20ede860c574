"""The store's data types: what the Store contract (``base.py``) and its capabilities take and
return -- queued jobs, sorted-set entries, reservations, failure outcomes, filters, pages,
counters, worker records -- and the durability of a write (``Durability``). No rules and no
I/O; ``conveyor.store.base`` re-exports every name."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "DURABLE",
    "WORKER_STATE_ORDER",
    "Counters",
    "Durability",
    "FailOutcome",
    "JobFilter",
    "Page",
    "QueuedJob",
    "ReadyListener",
    "Reservation",
    "SetEntry",
    "SetMove",
    "SortedSet",
    "WorkerRecord",
    "advance_worker_state",
]

T = TypeVar("T")


class SortedSet(enum.StrEnum):
    SCHEDULED = "scheduled"
    RETRIES = "retries"
    DEAD = "dead"
    COMPLETED = "completed"
    """Succeeded jobs kept for their retention (``store/completed.py``), score = expiry."""


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job to put at the tail of a queue.

    ``reserve_for`` is the reservation length in seconds the manager already computed from the
    payload (default and clamping applied), kept beside the payload so ``reserve`` can set the
    expiry atomically without parsing JSON.
    """

    queue: str
    jid: str
    payload: bytes
    reserve_for: int


@dataclass(frozen=True, slots=True)
class SetEntry:
    """One entry of a sorted set. ``queue`` and ``jobtype`` are copied out of the payload so
    backends can index and filter on them."""

    score: float
    jid: str
    payload: bytes
    queue: str = ""
    jobtype: str = ""


@dataclass(frozen=True, slots=True)
class SetMove:
    """Move ``entry`` out of its sorted set and enqueue ``job`` (usually the same job with a
    fresh ``enqueued_at``) -- only if the entry is still there."""

    entry: SetEntry
    job: QueuedJob


@dataclass(frozen=True, slots=True)
class Reservation:
    """A job handed to a worker. ``payload`` is exactly what the worker was sent."""

    jid: str
    queue: str
    payload: bytes
    wid: str
    reserved_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class FailOutcome:
    """Where a failed job goes. ``target`` None means discard (``retry`` 0)."""

    target: SortedSet | None
    score: float = 0.0
    payload: bytes = b""
    queue: str = ""
    jobtype: str = ""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing or scan keeps. Empty filter = everything.

    * ``jids``: only these jids (when set, ``jobtype`` and ``pattern`` are ignored, as Faktory's
      MUTATE does).
    * ``jobtype``: exact jobtype.
    * ``queue``: exact queue name.
    * ``pattern``: a glob (``*`` ``?`` ``[...]``, case-sensitive) matched against the whole raw
      payload text, as Faktory's MUTATE ``regexp`` (which is really a Redis MATCH glob).
    * ``text``: case-insensitive substring of the payload (args, error message, custom, ...).
    """

    jids: tuple[str, ...] = ()
    jobtype: str | None = None
    queue: str | None = None
    pattern: str | None = None
    text: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.jids or self.jobtype or self.queue or self.pattern or self.text)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing: the items and the total number matching the filter."""

    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class Counters:
    processed: int
    failures: int


@dataclass(slots=True)
class WorkerRecord:
    """A worker process as its heartbeats describe it. ``state`` is ``running``, ``quiet`` or
    ``terminate``; the manager owns the rules for changing it."""

    wid: str
    hostname: str = ""
    pid: int = 0
    labels: list[str] = field(default_factory=list)
    started_at: float = 0.0
    last_beat: float = 0.0
    rss_kb: int = 0
    state: str = "running"
    connections: int = 0


WORKER_STATE_ORDER: tuple[str, ...] = ("running", "quiet", "terminate")
"""Worker states in the only order they may change: a state never moves backwards."""


def advance_worker_state(current: str, wanted: str | None) -> str:
    """``wanted`` if it is a known state later than ``current``, else ``current`` (an unknown
    or earlier state changes nothing, as in Faktory)."""
    if wanted not in WORKER_STATE_ORDER:
        return current
    rank = WORKER_STATE_ORDER.index(current) if current in WORKER_STATE_ORDER else 0
    return wanted if WORKER_STATE_ORDER.index(wanted) > rank else current


ReadyListener = Callable[[str], None]
"""Called with a queue name whenever jobs may have become available in that queue."""


class Durability(abc.ABC):
    """The durability of a write an ``in_process`` store made in the caller's step: awaitable,
    or watched with ``when_done`` by a caller that answers without a task of its own (the
    server's PUSH: docs/design/hand-off.md)."""

    __slots__ = ()

    @abc.abstractmethod
    def __await__(self) -> Generator[Any, None, None]:
        """Return once the write is durable; raise ``StoreError`` if it was lost."""

    @abc.abstractmethod
    def when_done(self, callback: Callable[[Exception | None], None]) -> None:
        """Call ``callback`` once the write is durable (with None) or lost (with the
        ``StoreError``): at once when that is known already, else from the event loop. The
        callback must not call the store."""


class _Durable(Durability):
    """Done at once: a write that was durable when it returned."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that yields nothing

    def when_done(self, callback: Callable[[Exception | None], None]) -> None:
        callback(None)


DURABLE: Durability = _Durable()
"""What ``enqueue_now`` and ``hand_off`` return when the write is durable already (memory)."""
