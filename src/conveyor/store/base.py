"""The Store contract: every backend (memory, sqlite, redis) implements exactly this.

Each method is one ATOMIC lifecycle transition. No rules live here: the manager decides
*what* happens (defaults, retry/backoff, where a failed job goes, which day a counter is for,
how payloads are rewritten) and the store only does it, atomically, so that several servers
sharing one Redis can call the same methods concurrently without handing out a job twice or
moving one twice.

Data model
==========

* **Queues**: FIFO lists of ``QueuedJob`` per queue name. A queue is *known* from its first
  enqueue until it is removed. A known queue may be *paused* (persistent).
* **Sorted sets** (``SortedSet``): ``scheduled``, ``retries``, ``dead`` and ``completed``. Each
  entry has a score (float seconds since the epoch: when it is due, or for ``dead`` and
  ``completed`` when it expires), a jid and the payload. Within one set **a jid identifies one
  entry**; adding a jid already present replaces that entry.
* **Reservations** (the *working* set): jobs handed to a worker, keyed by jid, with the worker
  id and the expiry time. A reservation ends with ``ack``, ``fail`` or (via the reaper, which
  calls ``fail``) expiry.
* **Counters**: ``processed`` and ``failures`` totals plus one pair per UTC day.
* **Records** (``records.py``): small values under a key in named spaces, with an optional
  expiry, for the features (unique locks, cron tick claims, tracking, results...).
* **Batches** (``batches.py``): batches, the marks of tracked jobs and the jobs waiting for
  others, moved in the same step as the jobs they follow.
* **Limits** (``limits.py``): throttle slots and rate-limit buckets of limited queues.
* **Counts** (``counts.py``) and **deadlines** (``deadlines.py``): counters and time-ordered
  keys in named spaces (jobs expired per day; expiring jobs to sweep).
* **Groups** (``groups.py``): the aggregating set, jobs waiting to be enqueued as one; and
  the one step that cancels a job wherever it is (``cancels.py``).
* **Completions** (``completed.py``): the ACK that keeps its job in the ``completed`` set.
* **Signals** (``signals.py``): wake-ups told to every server sharing the store.
* **Workers**: the heartbeat records of worker processes (``WorkerRecord``). Several servers
  may change one record at once (a BEAT on one, a quiet signal on another), so every change to
  an existing record goes through ``update_worker``, one atomic read-modify-write.

Durability
==========

Methods that *add* jobs (``enqueue``, ``add_to_set``) and admin changes (pause, remove, mutate
moves, flush) return only after the change is durable in the backend (SQLite: committed;
Redis: acknowledged by Redis), and raise ``StoreError`` when it could not be made durable.
``reserve``, ``ack``, ``fail`` and ``extend_reservation`` may return before their change is
durable: a crash just before the commit re-delivers the job, which at-least-once delivery
allows. Backends may commit many callers' changes together.

A backend that knows it cannot make changes durable for now (SQLite after a failed commit)
raises ``StoreUnavailable`` from every changing method, ``reserve`` included, until it can
again: a job is never handed out while its reservation cannot be recorded.

Payloads are opaque bytes to the store (UTF-8 JSON produced by the manager). The store never
parses them except to filter (``JobFilter``) in listing and scanning methods.

The data types (``QueuedJob``, ``Reservation``, ``SetEntry``, ...) live in ``types.py``, which
imports nothing of the store; this module re-exports them.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence

from conveyor.store.batches import Batches
from conveyor.store.cancels import Cancels
from conveyor.store.completed import Completions
from conveyor.store.counts import Counts
from conveyor.store.deadlines import Deadlines
from conveyor.store.endings import Endings
from conveyor.store.groups import Groups
from conveyor.store.limits import Limits
from conveyor.store.records import Records
from conveyor.store.signals import Signals
from conveyor.store.types import (
    DURABLE,
    WORKER_STATE_ORDER,
    Counters,
    Durability,
    FailOutcome,
    JobFilter,
    Page,
    QueuedJob,
    ReadyListener,
    Reservation,
    SetEntry,
    SetMove,
    SortedSet,
    WorkerRecord,
    advance_worker_state,
)

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
    "Store",
    "WorkerRecord",
    "advance_worker_state",
]


class Store(
    Records,
    Limits,
    Endings,
    Counts,
    Deadlines,
    Batches,
    Cancels,
    Groups,
    Completions,
    Signals,
    abc.ABC,
):
    """The storage contract. See the module docstring for the data model and durability.

    The job lifecycle is declared here; the capabilities features build on are declared in
    modules of their own (``records.py``, ``limits.py``, ``endings.py``, ``counts.py``,
    ``deadlines.py``, ``batches.py``, ``cancels.py``, ``groups.py``, ``completed.py``,
    ``signals.py``) and included, so every backend has all of them."""

    in_process: bool = False
    """The store writes without waiting for I/O (memory, SQLite): it offers the synchronous
    ``enqueue_now`` and ``hand_off``, each returning the durability of its own write, and
    ``reserve_now`` and ``ack_now``. The server uses them to answer a PUSH, and the FETCH
    waiting for its job, in the step that read the PUSH, and a FETCH or an ACK in the step
    that read it (docs/design/hand-off.md)."""

    # ----------------------------------------------------------------- life cycle

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / create the schema. Called once before any other method."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending commits and release resources."""

    def refusing_writes(self) -> str | None:
        """Why this store refuses every write right now, or None. A store that learns of an
        outage by itself (SQLite that cannot commit: ``StoreUnavailable``) says so here for
        health checks; others find out when a call fails (None)."""
        return None

    @abc.abstractmethod
    def set_ready_listener(self, listener: ReadyListener) -> None:
        """Register the callback the store calls (in the event loop) when a queue may have
        jobs: after every enqueue and move into a queue, by this process or -- for shared
        backends -- by any other server. Spurious calls are allowed; missed calls are not."""

    # ----------------------------------------------------------------- adding jobs

    @abc.abstractmethod
    async def enqueue(self, jobs: Sequence[QueuedJob]) -> None:
        """Append the jobs to the tails of their queues (creating the queues). Durable."""

    def enqueue_now(self, jobs: Sequence[QueuedJob]) -> Awaitable[None]:
        """``enqueue`` (of at least one job) without the wait for durability; only for
        ``in_process`` stores. Returns that wait: awaiting it returns once these very writes
        are durable, or raises ``StoreError`` if they were lost (SQLite: the commit that held
        them failed) -- also when awaited only after that commit. Never inferred from the
        store's state at the time of the await."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    @abc.abstractmethod
    async def add_to_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> None:
        """Add entries to a sorted set (replacing an entry with the same jid). Durable."""

    def durable(self) -> Awaitable[None]:
        """The durability of the changes made through this store so far, for writes that do
        not wait for it themselves (records: ``records.py``). Call it right after them, in the
        same step (no ``await`` that suspends in between): what it returns is then bound to
        the very transaction that holds them, and raises ``StoreError`` if that one was lost,
        however late it is awaited. ``enqueue_now`` and ``hand_off`` return the same for
        their own writes."""
        return DURABLE

    # ----------------------------------------------------------------- working

    def takes_hand_off(self, queue: str) -> bool:
        """Whether jobs of ``queue`` may be handed off now (``hand_off``): not when it is
        paused, nor while the store cannot make changes durable. Synchronous, and only for
        ``in_process`` stores."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    def hand_off(self, jobs: Sequence[QueuedJob], wid: str, now: float) -> Awaitable[None]:
        """Reserve ``jobs`` (all of one queue, which may be unknown yet, and which
        ``takes_hand_off``) for ``wid`` without queueing them: a FETCH of ``wid`` was waiting
        for them and has been sent them already.

        The reservations are those ``reserve`` would have made. Synchronous, and only for
        ``in_process`` stores: the others never get the call. Returns the durability of these
        writes, as ``enqueue_now`` does: the PUSH that handed the jobs off awaits it, as
        ``enqueue`` would have."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    @abc.abstractmethod
    async def reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        """Pop up to ``count`` jobs, taking from the first non-paused, non-empty queue in the
        order given (then the next, while ``count`` is not reached), and record a reservation
        for each with ``expires_at = now + reserve_for``. Unknown queues are simply empty."""

    def reserve_now(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation] | None:
        """``reserve`` done in the caller's step, for a FETCH answered without a task; only
        for ``in_process`` stores. None, with nothing done, when this reservation would have
        to wait (SQLite while commits fail: it hands out only what is recorded); the caller
        then takes ``reserve``. Raises what ``reserve`` raises."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    @abc.abstractmethod
    async def ack(self, jids: Sequence[str], day: str) -> int:
        """End the reservations of these jids; each one that existed adds 1 to ``processed``
        and to the ``day`` counter. Returns how many existed."""

    def ack_now(self, jids: Sequence[str], day: str) -> int | None:
        """``ack`` done in the caller's step; only for ``in_process`` stores. None, with
        nothing done, when it would have to wait (as ``reserve_now``)."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    # The same transitions with a callback, for a store whose writes wait for I/O but need
    # no task (Redis, over a connection of its own: store/redis/soon.py). Each returns False,
    # with nothing done, when it cannot now: the caller then awaits the coroutine. Otherwise
    # ``done(result, None)`` or ``done(None, error)`` is called from the event loop, with
    # what the coroutine would have returned or raised.

    def enqueue_soon(
        self, jobs: Sequence[QueuedJob], done: Callable[[None, BaseException | None], object]
    ) -> bool:
        """``enqueue`` with a callback (see above)."""
        return False

    def reserve_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        done: Callable[[list[Reservation] | None, BaseException | None], bool],
    ) -> bool:
        """``reserve`` with a callback (see above); ``done`` returns whether the jobs were
        taken: False (the FETCH went away meanwhile) gives them back."""
        return False

    def reserve_ahead_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        done: Callable[[list[Reservation] | None, BaseException | None], bool],
    ) -> Callable[[], None] | None:
        """``reserve_soon`` for a FETCH that has not come yet (manager/ahead.py): returns
        what gives back, later, the jobs ``done`` was handed and kept (True) but that no FETCH
        took; None, with nothing sent, where the store cannot. Giving back puts each job the
        call reserved, if still reserved by it, back at the head of its queue."""
        return None

    def ack_soon(
        self,
        jids: Sequence[str],
        day: str,
        done: Callable[[int | None, BaseException | None], object],
    ) -> bool:
        """``ack`` with a callback (see above)."""
        return False

    @abc.abstractmethod
    async def fail(self, jid: str, outcome: FailOutcome, day: str) -> bool:
        """Atomically: if a reservation for ``jid`` exists, end it, count one processed and one
        failure (total and ``day``) and put ``outcome.payload`` where ``outcome`` says.
        Returns False, changing nothing, when there was no reservation."""

    @abc.abstractmethod
    async def get_reservation(self, jid: str) -> Reservation | None:
        """The reservation of ``jid``, if any."""

    @abc.abstractmethod
    async def expired_reservations(self, now: float, limit: int) -> list[Reservation]:
        """Up to ``limit`` reservations with ``expires_at <= now``, oldest first (unchanged)."""

    @abc.abstractmethod
    async def extend_reservation(self, jid: str, expires_at: float) -> bool:
        """Set a reservation's expiry (the manager checks it only ever grows). False if none."""

    @abc.abstractmethod
    async def list_reservations(self, offset: int, limit: int) -> Page[Reservation]:
        """Reservations ordered by ``reserved_at``, for the Busy page."""

    # ----------------------------------------------------------------- sorted sets

    @abc.abstractmethod
    async def due_entries(self, name: SortedSet, now: float, limit: int) -> list[SetEntry]:
        """Up to ``limit`` entries with ``score <= now``, lowest score first (unchanged)."""

    @abc.abstractmethod
    async def move_to_queue(self, name: SortedSet, moves: Sequence[SetMove]) -> int:
        """For each move whose entry (same jid *and* score) is still in the set: remove it and
        enqueue ``move.job``. Each move is atomic; returns how many happened. Two servers
        promoting the same entry therefore enqueue it once."""

    @abc.abstractmethod
    async def move_to_set(
        self, source: SortedSet, entries: Sequence[SetEntry], target: SortedSet, score: float
    ) -> int:
        """Move the entries that are still present (same jid and score) into ``target`` with
        the new score. Returns how many moved."""

    @abc.abstractmethod
    async def remove_from_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        """Delete the entries that are still present (same jid and score). Returns how many."""

    @abc.abstractmethod
    async def purge_set(self, name: SortedSet, before: float, limit: int) -> int:
        """Delete up to ``limit`` entries with ``score <= before``. Returns how many."""

    @abc.abstractmethod
    async def clear_set(self, name: SortedSet) -> int:
        """Delete every entry. Returns how many."""

    @abc.abstractmethod
    async def set_size(self, name: SortedSet) -> int: ...

    @abc.abstractmethod
    async def list_set(
        self,
        name: SortedSet,
        flt: JobFilter,
        offset: int,
        limit: int,
        *,
        descending: bool = False,
    ) -> Page[SetEntry]:
        """Entries matching ``flt`` ordered by score (then jid), one page of them."""

    @abc.abstractmethod
    async def get_set_entries(self, name: SortedSet, jids: Sequence[str]) -> list[SetEntry]:
        """The entries of these jids that are in the set (any order)."""

    # ----------------------------------------------------------------- queues

    @abc.abstractmethod
    async def queue_sizes(self) -> dict[str, int]:
        """Every known queue and its size."""

    @abc.abstractmethod
    async def queue_heads(self, names: Sequence[str]) -> dict[str, bytes | None]:
        """The oldest job (the next to be fetched) of each queue, or None when empty/unknown."""

    @abc.abstractmethod
    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        """A queue's jobs in fetch order (oldest first)."""

    @abc.abstractmethod
    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        """Delete these jids from the queue. Returns how many were deleted."""

    @abc.abstractmethod
    async def find_queued(
        self, jids: Sequence[str], queues: Sequence[str] | None = None
    ) -> list[QueuedJob]:
        """For each of ``jids``, one queued job with that jid (any order), looked for in
        ``queues`` (default: every known queue). For the dashboard's job page and the CLI's
        ``job show``, not for hot paths: backends may scan (docs/design/queued-lookup.md).

        A job that stays queued while the lookup runs is always found; one fetched meanwhile
        may or may not be (the caller looks at the reservations next)."""

    @abc.abstractmethod
    async def clear_queue(self, name: str) -> int:
        """Delete every job of a queue, keeping the queue itself (and its paused flag).
        Returns how many jobs were deleted. Durable."""

    @abc.abstractmethod
    async def paused_queues(self) -> set[str]: ...

    @abc.abstractmethod
    async def set_paused(self, names: Sequence[str], paused: bool) -> None:
        """Pause or resume known queues (unknown names are ignored). Durable."""

    @abc.abstractmethod
    async def remove_queues(self, names: Sequence[str]) -> None:
        """Forget the queues and delete their jobs (and their paused flag). Durable."""

    # ----------------------------------------------------------------- counters

    @abc.abstractmethod
    async def counters(self) -> Counters:
        """Total processed and failures."""

    @abc.abstractmethod
    async def daily_counters(self, days: Sequence[str]) -> dict[str, Counters]:
        """Processed/failures per ``YYYY-MM-DD`` day (missing days count zero)."""

    # ----------------------------------------------------------------- workers

    @abc.abstractmethod
    async def save_worker(self, record: WorkerRecord) -> None:
        """Create or replace a worker record. Replacing is a blind overwrite: to change a
        record other servers may be changing too, use ``update_worker``."""

    @abc.abstractmethod
    async def update_worker(
        self,
        wid: str,
        *,
        rss_kb: int | None = None,
        last_beat: float | None = None,
        state: str | None = None,
        connections_delta: int = 0,
        create: WorkerRecord | None = None,
    ) -> WorkerRecord | None:
        """Atomically change the record of ``wid`` and return it as changed.

        ``rss_kb`` and ``last_beat`` replace the stored values when given; ``state`` moves the
        state forward only (``advance_worker_state``); ``connections_delta`` is added to
        ``connections``. A negative delta that leaves ``connections`` at 0 or below deletes the
        record (its worker has no connection left anywhere) and returns it as it was deleted.

        With no record for ``wid``: returns None and changes nothing, unless ``create`` is
        given; then ``create`` (whose ``wid`` must be ``wid``, else ``ValueError``) is stored
        with the changes applied. So a worker's first connection on two servers at once makes
        one record with two connections, never one overwriting the other.

        Redis keeps the numbers of a changed record to 14 significant digits (0.1 ms for
        ``started_at`` and ``last_beat``)."""

    @abc.abstractmethod
    async def get_worker(self, wid: str) -> WorkerRecord | None: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerRecord]: ...

    @abc.abstractmethod
    async def delete_worker(self, wid: str, silent_before: float | None = None) -> bool:
        """Forget a worker; True if it was there. With ``silent_before``, only if its last beat
        is older, checked in the same atomic step: a BEAT that lands (on any server) between
        the reaper's listing and this call keeps the worker."""

    # ----------------------------------------------------------------- admin

    @abc.abstractmethod
    async def flush(self) -> None:
        """Delete every job, queue, set, reservation, pause flag, counter, record and group
        (not workers)."""
