"""Batches, job marks and waiting jobs: the state that moves with a job (docs/design/batches.md).

Three features keep a little state per job that must change in the same atomic step as the
job: a batch's counters (Faktory Enterprise's BATCH), a tracked job's state (TRACK), the jobs
waiting for it (``custom.after``). They share one record per job, the **mark**, written when
the job is pushed and moved by one transition when it ends (``end_jobs``).

Data model
==========

* **Batches** (``BatchRecord``): counters (``total``, ``pending`` = not yet succeeded,
  ``failed`` = latest attempt failed, dead ones included), the callback jobs and their states
  (``""`` not enqueued, ``"1"`` enqueued, ``"2"`` finished), the children's milestones. A
  batch lists its jobs in the order they joined, and its children.
* **Marks** (``JobMark``): per jid, ``state`` (``MarkState``), ``updated_at``, the ``bid`` of
  its batch, its ``role`` (``""`` a job, ``"complete"``/``"success"`` a batch's callback).
  An ACK ends the unfinished marks (enqueued, waiting, failed) of its jobs in its own step
  (``Endings.ack_returning`` with ``ends``).
* **Waiting jobs** (``WaitingJob``): jobs pushed with dependencies not yet met; each pending
  dependency's mark lists its waiters.

Rules that must hold in the same step as the change live here (the store cannot ask the
manager in the middle of a Lua script): when a batch becomes complete or successful, when
a waiting job is released or killed. ``batch_engine.py`` has them in Python for the
in-process backends; ``redis/lua/_batches.lua`` mirrors it, and one contract suite
(``tests/test_store_batches.py``) holds both to the same answers.

Every transition is idempotent per jid and outcome: a PUSH sent twice, an ACK repeated, a
script run again after a lost reply change nothing the second time. Writes are durable like
``Store.ack``'s (they join the next commit); the callers that need more await
``Store.durable()``.
"""

from __future__ import annotations

import abc
import enum
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import Page, QueuedJob, SetEntry

__all__ = [
    "BatchRecord",
    "Batches",
    "CallbackJob",
    "EndContext",
    "Fired",
    "JobEnd",
    "JobMark",
    "MarkResult",
    "MarkState",
    "NewBatch",
    "NewMark",
    "Outcome",
    "WaitingJob",
]


class MarkState(enum.StrEnum):
    ENQUEUED = "enqueued"
    WAITING = "waiting"
    FAILED = "failed"
    SUCCESS = "success"
    DEAD = "dead"


UNFINISHED = frozenset({MarkState.ENQUEUED, MarkState.WAITING, MarkState.FAILED})


class Outcome(enum.StrEnum):
    """How an attempt of a marked job ended."""

    SUCCESS = "success"
    FAILED = "failed"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class CallbackJob:
    """A batch's callback job, validated when the batch was created."""

    jid: str
    queue: str
    jobtype: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class NewBatch:
    bid: str
    created_at: float
    expires_at: float
    description: str = ""
    parent_bid: str = ""
    complete: CallbackJob | None = None
    success: CallbackJob | None = None


@dataclass(slots=True)
class BatchRecord:
    """A batch as stored. ``complete_st``/``success_st``: ``""``, ``"1"`` or ``"2"``.
    ``kids_complete``/``kids_success``: children that have not reached that milestone;
    ``m_*``: this batch reached the milestone; ``r_*``: its parent has counted it."""

    bid: str
    created_at: float
    expires_at: float
    description: str = ""
    parent_bid: str = ""
    committed: bool = False
    committed_at: float | None = None
    total: int = 0
    pending: int = 0
    failed: int = 0
    complete_st: str = ""
    success_st: str = ""
    children: int = 0
    kids_complete: int = 0
    kids_success: int = 0
    m_complete: bool = False
    m_success: bool = False
    r_complete: bool = False
    r_success: bool = False
    complete: CallbackJob | None = None
    success: CallbackJob | None = None

    def __copy__(self) -> BatchRecord:
        # copy.copy of a slotted dataclass goes through __reduce_ex__ and sets each slot:
        # 5.5x slower, and the SQLite store copies its cached record at every batch job's
        # PUSH and ACK
        return BatchRecord(*_record_fields(self))


_record_fields = operator.attrgetter(*BatchRecord.__slots__)


@dataclass(frozen=True, slots=True)
class JobMark:
    jid: str
    state: MarkState
    updated_at: float
    bid: str = ""
    role: str = ""
    expires_at: float | None = None

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED


@dataclass(frozen=True, slots=True)
class NewMark:
    """Mark ``jid`` at PUSH: tracked, in batch ``bid`` when not empty, and waiting for the
    jobs ``waiting.after`` when ``waiting`` is given."""

    jid: str
    bid: str
    expires_at: float | None
    """When an unfinished plain mark goes (a batch job's mark goes with its batch: None)."""
    waiting: WaitingJob | None = None


@dataclass(frozen=True, slots=True)
class JobEnd:
    """An attempt of a marked job ended. ``bid``: its batch, when the caller knows it (Redis
    declares the batch's key; an end whose batch was not declared is returned as ``doomed``
    and must be ended again with it)."""

    jid: str
    outcome: Outcome
    bid: str = ""
    cause: str = ""
    """For a waiting job killed by a dead dependency: the jid that died first."""


@dataclass(frozen=True, slots=True)
class WaitingJob:
    """A job waiting for ``after``; ``remaining`` of them have not succeeded yet. ``due``:
    when it may run once released (its ``at``, else 0)."""

    jid: str
    queue: str
    jobtype: str
    payload: bytes
    after: tuple[str, ...]
    remaining: int
    since: float
    due: float = 0.0
    bid: str = ""
    doomed_by: str = ""
    """Set (with ``remaining`` -1) when a dependency died and the job's batch could not be
    reached in that step: the sweep kills it (``Outcome.DEAD``, cause ``doomed_by``)."""


class MarkResult(enum.StrEnum):
    """What ``mark_jobs`` did with one job."""

    READY = "ready"
    """Marked (joined its batch): store the job as usual."""
    WAITING = "waiting"
    """Marked and stored among the waiting jobs: do not queue it."""
    DEAD = "dead"
    """Marked dead: a dependency is dead (the detail names it); the job goes to the dead set."""
    REFUSED = "refused"
    """Nothing stored: the detail says why (no such batch, a committed batch, an unknown
    dependency)."""


@dataclass(frozen=True, slots=True)
class EndContext:
    """When and how ``end_jobs`` ends: the stats ``day``, ``now``, how long a finished plain
    mark is kept, and the score of a killed job in the dead set. ``bids``, for an ACK's step
    (``Endings.ack_returning``): the batches the caller believes its jobs are in (noted at
    FETCH), which Redis declares at once, so that step needs no second run; only a hint."""

    day: str
    now: float
    keep_seconds: float
    dead_until: float
    bids: tuple[str, ...] = ()


@dataclass(slots=True)
class Fired:
    """What a transition set in motion, for the caller to finish at once (a crash in between
    is finished by the loops: the scheduled set is promoted, propagations are swept).

    * ``scheduled``: jobs put in the scheduled set by this step (callbacks, released jobs),
      to promote now when due;
    * ``ended``: jids whose marks finished (no longer unfinished);
    * ``marked``: jids whose marks this step created (callbacks);
    * ``propagate``: child batches whose parent must now count a milestone (``propagate``);
    * ``doomed``: ends of waiting jobs killed by a dead dependency whose batch this step could
      not reach: end them (``Outcome.DEAD``, with their ``bid``);
    * ``killed``: jids moved to the dead set because a dependency died;
    * ``processed``: how many reservations a success ended (counted processed)."""

    scheduled: list[SetEntry] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    propagate: list[str] = field(default_factory=list)
    doomed: list[JobEnd] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    processed: int = 0

    def add(self, other: Fired) -> None:
        self.scheduled += other.scheduled
        self.ended += other.ended
        self.marked += other.marked
        self.propagate += other.propagate
        self.doomed += other.doomed
        self.killed += other.killed
        self.processed += other.processed

    def __bool__(self) -> bool:
        return bool(
            self.scheduled
            or self.ended
            or self.marked
            or self.propagate
            or self.doomed
            or self.killed
        )


class Batches(abc.ABC):
    """The batches capability; every backend implements it (``Store`` includes it)."""

    # ----------------------------------------------------------------- batches

    @abc.abstractmethod
    async def create_batch(self, batch: NewBatch) -> str | None:
        """Store a new, open batch (and count it in its parent). Returns an error text, with
        nothing stored, when ``parent_bid`` names no batch or a committed one."""

    @abc.abstractmethod
    async def open_batch(self, bid: str) -> bool:
        """Reopen a batch (committed or not); False when there is no such batch."""

    @abc.abstractmethod
    async def commit_batch(self, bid: str, now: float, expires_at: float) -> Fired | None:
        """Commit a batch (it now expires at ``expires_at``) and fire what is due; None when
        there is no such batch."""

    @abc.abstractmethod
    async def adopt_batch(self, parent: str, child: str, now: float) -> str | None:
        """Make ``child`` a child of ``parent`` (``BATCH CHILD``); an error text, changing
        nothing, when either is missing, the parent is committed or the child has a parent."""

    @abc.abstractmethod
    async def get_batches(self, bids: Sequence[str]) -> dict[str, BatchRecord]:
        """The batches of these bids that exist."""

    @abc.abstractmethod
    async def list_batches(self, search: str, offset: int, limit: int) -> Page[BatchRecord]:
        """Batches, newest first; ``search`` keeps those whose bid or description contains
        it (case-insensitive)."""

    @abc.abstractmethod
    async def batch_children(self, bid: str) -> list[str]:
        """The bids of a batch's children."""

    @abc.abstractmethod
    async def batch_jobs(self, bid: str, offset: int, limit: int) -> Page[JobMark]:
        """The marks of a batch's jobs, in the order they joined."""

    @abc.abstractmethod
    async def propagate(self, child: str, now: float) -> Fired:
        """Count the milestones ``child`` reached in its parent, once, and fire what that
        makes due in the parent."""

    @abc.abstractmethod
    async def pending_propagations(self, limit: int) -> list[str]:
        """Children whose milestones their parent has not counted yet."""

    @abc.abstractmethod
    async def expire_batches(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` batches whose expiry passed, with their job lists and the
        marks of their jobs. Returns how many batches went."""

    # ----------------------------------------------------------------- marks

    @abc.abstractmethod
    async def mark_jobs(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        """Mark jobs being pushed, each in one atomic step with the ends of other jobs.

        A job with a ``bid`` joins its batch (``total`` and ``pending`` +1); one with
        ``waiting`` looks at its dependencies' marks: all succeeded -> ``READY``; one dead ->
        ``DEAD`` (marked dead, counted failed in its batch); some pending -> ``WAITING``
        (stored; each pending dependency lists it). ``REFUSED`` (no such batch, a committed
        one, a dependency without a mark) stores nothing. A jid already marked is left as it
        is and reported as its mark says (a PUSH sent again)."""

    def mark_jobs_now(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        """``mark_jobs`` without awaiting anything, for the PUSH fast path; only for
        ``in_process`` stores (their writes become durable with the next commit)."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    def mark_jobs_soon(
        self,
        marks: Sequence[NewMark],
        now: float,
        done: Callable[[dict[str, tuple[MarkResult, str]] | None, BaseException | None], object],
    ) -> bool:
        """``mark_jobs`` with a callback, for a store whose writes wait for I/O but need no
        task (as ``Store.enqueue_soon``): False, with nothing done, when it cannot now; else
        ``done`` gets what ``mark_jobs`` would have returned, or what it raised."""
        return False

    def mark_enqueue_soon(
        self,
        marks: Sequence[NewMark],
        now: float,
        queued: Sequence[QueuedJob],
        done: Callable[[dict[str, tuple[MarkResult, str]] | None, BaseException | None], object],
    ) -> bool:
        """``mark_jobs_soon`` that also enqueues, in the same atomic step, each of ``queued``
        (one a mark, by jid) whose mark comes out ``READY``, as ``enqueue`` would, with its
        durability: a batch job's PUSH in one step (Redis: one round trip). False, with
        nothing done, when it cannot now (the caller marks, then enqueues)."""
        return False

    @abc.abstractmethod
    async def get_marks(self, jids: Sequence[str], now: float) -> dict[str, JobMark]:
        """The live marks of these jids."""

    @abc.abstractmethod
    async def unfinished_marks(self, after: str, limit: int) -> list[str]:
        """Jids of unfinished marks greater than ``after``, in order (a server that owns its
        store rebuilds its set of marked jids from these at start)."""

    @abc.abstractmethod
    async def end_jobs(self, ends: Sequence[JobEnd], ctx: EndContext) -> Fired:
        """An attempt of each of these marked jobs ended.

        ``success`` ends the job's reservation like ``Store.ack`` (counted processed) and
        counts only when there was one; ``failed`` and ``dead`` leave the reservation to
        ``Store.fail``. The mark moves (a finished plain mark then lives ``keep_seconds``; a
        batch job's lives as long as its batch), the batch counters move, a callback's state
        goes to ``"2"`` on success, waiting jobs are released (into the scheduled set) or
        killed (into the dead set, with a ``DependencyDied`` failure), and batches that became
        complete or successful get their callbacks scheduled."""

    @abc.abstractmethod
    async def purge_marks(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` expired marks; returns how many. (A batch job's mark has
        no expiry of its own: it goes with its batch.)"""

    # ----------------------------------------------------------------- waiting jobs

    @abc.abstractmethod
    async def list_waiting(self, offset: int, limit: int) -> Page[WaitingJob]:
        """Waiting jobs, oldest first."""

    @abc.abstractmethod
    async def get_waiting(self, jids: Sequence[str]) -> dict[str, WaitingJob]: ...

    @abc.abstractmethod
    async def count_waiting(self) -> int: ...
