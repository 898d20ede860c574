"""The SQLite store: the durable default, one file, no other process.

Jobs live in SQLite, not in Python objects: a million queued jobs are a million rows, and the
process keeps only small per-queue and per-set metadata (sizes, pause flags) plus the counter
totals. Writes share one transaction per event-loop iteration (group commit, see
``db``); methods that must be durable await the ``Commit`` of the very transaction that holds
their writes. Each payload is stored with its checksum and checked before it is used
(``damage``). Worker records live in memory only: workers reconnect and beat again after a
restart.

One server process per database file: the in-memory mirrors assume nobody else writes.
Schema and queries: ``conveyor/store/sqlite/sql/*.sql``. Design notes: docs/design/sqlite.md.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any

from conveyor.errors import StoreError
from conveyor.store.base import (
    Counters,
    Durability,
    FailOutcome,
    Page,
    QueuedJob,
    ReadyListener,
    Reservation,
    SetEntry,
    SetMove,
    SortedSet,
    Store,
    WorkerRecord,
)
from conveyor.store.signals import LocalSignals
from conveyor.store.sqlite import damage
from conveyor.store.sqlite.batches import SQLiteBatches
from conveyor.store.sqlite.cancels import SQLiteCancels
from conveyor.store.sqlite.claims import NO_LOCK
from conveyor.store.sqlite.completed import SQLiteCompletions
from conveyor.store.sqlite.counts import SQLiteCounts
from conveyor.store.sqlite.damage import Damaged, checksum, intact
from conveyor.store.sqlite.db import Database, SQLiteOptions, load_queries, split_statements
from conveyor.store.sqlite.deadlines import SQLiteDeadlines
from conveyor.store.sqlite.endings import SQLiteEndings
from conveyor.store.sqlite.groups import SQLiteGroups
from conveyor.store.sqlite.limits import SQLiteLimits
from conveyor.store.sqlite.listing import PageCursor, SetListing, entry_of
from conveyor.store.sqlite.queue_admin import SQLiteQueueAdmin
from conveyor.store.sqlite.records import SQLiteRecords
from conveyor.store.sqlite.schema import prepare
from conveyor.store.workers import LocalWorkers

__all__ = ["SQLiteStore"]

_SCHEMA = load_queries("schema.sql")
_QUEUES = load_queries("queues.sql")
_RESERVATIONS = load_queries("reservations.sql")
_CLAIM = _RESERVATIONS["claim_jobs"]
_SETS = load_queries("sets.sql")
_COUNTERS = load_queries("counters.sql")
_TOTAL = ""  # the counters row holding the totals


def _no_lock(_jid: str) -> tuple[None, None]:
    return NO_LOCK


def _reservation(row: tuple[Any, ...]) -> Reservation:
    jid, queue, payload, wid, reserved_at, expires_at = row[:6]
    return Reservation(jid, queue, payload, wid, reserved_at, expires_at)


class SQLiteStore(
    SetListing,
    SQLiteQueueAdmin,
    LocalWorkers,
    SQLiteRecords,
    SQLiteLimits,
    SQLiteEndings,
    SQLiteCounts,
    SQLiteDeadlines,
    SQLiteBatches,
    SQLiteCancels,
    SQLiteGroups,
    SQLiteCompletions,
    LocalSignals,
    Store,
):
    """Build with ``SQLiteStore.from_url("sqlite:///path/to/file.db")`` (see ``SQLiteOptions``)."""

    def __init__(self, options: SQLiteOptions) -> None:
        self._db = Database(options)
        self._db.before_commit = self._write_counters
        self._db.after_rollback = self._load_state
        self._db.after_recovery = self._recovered
        self._sizes: dict[str, int] = {}  # every known queue -> its length
        self._paused: set[str] = set()
        self._set_sizes: dict[SortedSet, int] = dict.fromkeys(SortedSet, 0)
        self._cursors: dict[SortedSet, PageCursor] = {}
        self._totals = [0, 0]  # processed, failures (committed + pending)
        self._pending: dict[str, list[int]] = {}  # day -> counts not yet written
        # (ukey, ukey_until) of a job row being inserted: the unique lock it carries (claims.py)
        self._row_lock = self._claims.row_lock
        self._workers: dict[str, WorkerRecord] = {}
        self._listener: ReadyListener | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(SQLiteOptions.from_url(url))

    @property
    def commit_count(self) -> int:
        """How many transactions were committed (group commit makes this < writes)."""
        return self._db.commits

    # ----------------------------------------------------------------- life cycle

    async def open(self) -> None:
        conn = self._db.open(prepare)
        try:
            self._create_records()
            self._create_batches()
            self._create_counts()
            self._create_deadlines()
            self._create_groups()
            damage.quarantine(conn)
            self._load_state()
        except sqlite3.Error as exc:
            self._db.close()
            path = self._db.options.path
            raise StoreError(
                f"SQLite database {path!r} cannot be read ({exc}); not starting: see"
                " 'When things fail' in docs/operations.md"
            ) from exc

    async def close(self) -> None:
        self._db.close()

    def refusing_writes(self) -> str | None:
        return self._db.health.refusal

    def _load_state(self) -> None:
        """Rebuild the in-memory mirrors from what is committed."""
        conn = self._db.conn
        self._sizes = {name: 0 for name, _paused in conn.execute(_SCHEMA["load_queues"])}
        self._paused = {name for name, paused in conn.execute(_SCHEMA["load_queues"]) if paused}
        self._sizes.update(conn.execute(_SCHEMA["load_queue_sizes"]).fetchall())
        self._set_sizes = dict.fromkeys(SortedSet, 0)
        self._cursors.clear()
        for name, size in conn.execute(_SCHEMA["load_set_sizes"]):
            self._set_sizes[SortedSet(name)] = size
        row = conn.execute(_COUNTERS["get_counts"], (json.dumps([_TOTAL]),)).fetchone()
        self._totals = [row[1], row[2]] if row else [0, 0]
        self._pending = {}
        self._forget_limits()  # throttle slots: rebuilt from the reservations as committed
        self._forget_claims()  # unique locks: read again from the claims committed

    def _recovered(self) -> None:
        """Commits work again after an outage: FETCHes waiting meanwhile may find jobs (those
        of the transactions that were rolled back are queued again)."""
        self._notify(name for name, size in self._sizes.items() if size > 0)

    def set_ready_listener(self, listener: ReadyListener) -> None:
        self._listener = listener

    def _notify(self, queues: Iterable[str]) -> None:
        if self._listener is None:
            return
        for name in dict.fromkeys(queues):
            self._listener(name)

    # ----------------------------------------------------------------- adding jobs

    def _push(self, conn: sqlite3.Connection, jobs: Sequence[QueuedJob]) -> dict[str, int]:
        """Insert jobs at the tails of their queues; returns the size change per queue."""
        added: dict[str, int] = {}
        for job in jobs:
            added[job.queue] = added.get(job.queue, 0) + 1
        new = [(name,) for name in added if name not in self._sizes]
        if new:
            conn.executemany(_QUEUES["add_queue"], new)
        row_lock = self._row_lock
        conn.executemany(
            _QUEUES["push_job"],
            [
                (j.queue, j.jid, j.reserve_for, checksum(j.payload), *row_lock(j.jid), j.payload)
                for j in jobs
            ],
        )
        return added

    def _grow(self, added: dict[str, int]) -> None:
        for name, count in added.items():
            self._sizes[name] = self._sizes.get(name, 0) + count
        self._notify(added)

    in_process = True

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> None:
        if jobs:
            await self.enqueue_now(jobs)

    def enqueue_now(self, jobs: Sequence[QueuedJob]) -> Durability:
        if len(jobs) == 1 and jobs[0].queue in self._sizes:
            # one statement is atomic by itself: no savepoint (every PUSH to a known queue)
            job = jobs[0]
            ukey, until = self._row_lock(job.jid)
            row = (job.queue, job.jid, job.reserve_for, checksum(job.payload), ukey, until,
                   job.payload)  # fmt: skip
            self._db.write(_QUEUES["push_job"], row)
            self._grow({job.queue: 1})
            return self._db.pending
        with self._db.atomic() as conn:
            added = self._push(conn, jobs)
        self._grow(added)
        return self._db.pending

    def _put_entries(
        self, conn: sqlite3.Connection, name: SortedSet, entries: list[SetEntry]
    ) -> int:
        """Insert entries (one per jid), replacing existing ones; returns the size change."""
        # a completed job holds no lock; the other sets' entries carry theirs (claims.py)
        row_lock = self._row_lock if name != SortedSet.COMPLETED else _no_lock
        rows = [
            (name, e.jid, e.score, e.queue, e.jobtype, checksum(e.payload), *row_lock(e.jid),
             e.payload)
            for e in entries
        ]  # fmt: skip
        if len(entries) == 1:  # a kept job's ACK: execute costs less than executemany of one
            replaced = conn.execute(_SETS["delete_jid"], (name, entries[0].jid)).rowcount
            conn.execute(_SETS["insert_entry"], rows[0])
            return 1 - replaced
        replaced = conn.executemany(_SETS["delete_jid"], [(name, e.jid) for e in entries]).rowcount
        conn.executemany(_SETS["insert_entry"], rows)
        return len(entries) - replaced

    def durable(self) -> Awaitable[None]:
        return self._db.latest

    async def add_to_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> None:
        if not entries:
            return
        unique = list({entry.jid: entry for entry in entries}.values())  # the last one wins
        with self._db.atomic() as conn:
            grown = self._put_entries(conn, name, unique)
        committed = self._db.pending
        self._resize(name, grown)
        await committed

    # ----------------------------------------------------------------- working

    def takes_hand_off(self, queue: str) -> bool:
        # not during an outage: the FETCH's reply would leave before its reservation is known
        # to be recorded (docs/design/hand-off.md)
        return queue not in self._paused and not self._db.careful

    def hand_off(self, jobs: Sequence[QueuedJob], wid: str, now: float) -> Durability:
        name = jobs[0].queue
        row_lock = self._row_lock
        rows = [
            (name, j.jid, j.reserve_for, checksum(j.payload), wid, now, now + j.reserve_for,
             *row_lock(j.jid), j.payload)
            for j in jobs
        ]  # fmt: skip
        if len(rows) == 1 and name in self._sizes:
            # one statement is atomic by itself: no savepoint (this is every idle worker's
            # PUSH -> start path)
            self._db.write(_RESERVATIONS["insert_reservation"], rows[0])
            return self._db.pending
        with self._db.atomic() as conn:
            if name not in self._sizes:
                conn.execute(_QUEUES["add_queue"], (name,))
            conn.executemany(_RESERVATIONS["insert_reservation"], rows)
        self._sizes.setdefault(name, 0)
        return self._db.pending

    async def reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        taken = self._reserve(queues, wid, now, count)
        if taken and self._db.careful:
            await self._db.pending  # during an outage, hand out only what is recorded
        return taken

    def reserve_now(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation] | None:
        if self._db.careful:
            return None  # reserve waits for its commit then
        return self._reserve(queues, wid, now, count)

    def _reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int
    ) -> list[Reservation]:
        self._db.check_writable()  # during an outage a FETCH is refused, never answered
        ready = [n for n in queues if self._sizes.get(n, 0) > 0 and n not in self._paused]
        if not ready or count <= 0:
            return []
        taken, _committed = self._reserve_from(ready, None, wid, now, count)
        return taken

    def _reserve_from(
        self,
        queues: Sequence[str],
        rooms: Mapping[str, int] | None,
        wid: str,
        now: float,
        count: int,
    ) -> tuple[list[Reservation], Awaitable[None]]:
        """Reserve up to ``count`` jobs from ``queues`` in turn, at most ``rooms[queue]`` from
        a queue there (``reserve_limited``: what each limit allows; ``reserve``: None), in
        this step; returns them and the commit that records them. Each queue's rows are
        claimed in place (schema version 3): one UPDATE per queue."""
        if count == 1 or len(queues) == 1:
            # One queue's claim is one statement, atomic by itself: no savepoint (a FETCH
            # takes its job from the first ready queue, whose size says it has one).
            for name in queues:
                want = count if rooms is None or name not in rooms else min(count, rooms[name])
                rows = self._db.write(_CLAIM, (wid, now, now, name, want)).fetchall()
                self._sizes[name] -= len(rows)
                found = self._claimed(name, rows, wid, now)
                if found:
                    return found, self._db.pending
            return [], self._db.pending
        taken: list[Reservation] = []
        claimed: dict[str, int] = {}
        with self._db.atomic() as conn:
            for name in queues:
                want = count - len(taken)
                if want <= 0:
                    break
                if rooms is not None and name in rooms:  # at least 1 there
                    want = min(want, rooms[name])
                rows = conn.execute(_CLAIM, (wid, now, now, name, want)).fetchall()
                claimed[name] = claimed.get(name, 0) + len(rows)
                taken.extend(self._claimed(name, rows, wid, now, conn))
        for name, number in claimed.items():
            self._sizes[name] -= number
        return taken, self._db.pending

    def _claimed(
        self,
        name: str,
        rows: list[Any],
        wid: str,
        now: float,
        conn: sqlite3.Connection | None = None,
    ) -> list[Reservation]:
        """The reservations of the rows a claim returned, in queue order. A row whose
        payload fails its checksum is moved aside instead: inside ``conn``'s savepoint when
        given, else on its own (if that fails, the row stays reserved and is moved aside when
        its reservation expires)."""
        if len(rows) > 1:
            rows.sort()
        taken: list[Reservation] = []
        damaged: list[Damaged] = []
        seqs: list[tuple[Any]] = []
        for seq, jid, reserve_for, crc, payload in rows:
            if intact(payload, crc):
                taken.append(Reservation(jid, name, payload, wid, now, now + reserve_for))
            else:
                damaged.append(Damaged("queue_jobs", jid, name, crc, payload))
                seqs.append((seq,))
        if damaged and conn is not None:
            conn.executemany(damage.DROP["queue_jobs"], seqs)
            damage.move_aside(conn, damaged)
            damage.report(damaged)
        elif damaged:
            self._move_aside(damaged, seqs, damage.DROP["queue_jobs"])
        return taken

    def _count(self, day: str, processed: int, failures: int) -> None:
        self._totals[0] += processed
        self._totals[1] += failures
        for key in (day, _TOTAL):
            pair = self._pending.setdefault(key, [0, 0])
            pair[0] += processed
            pair[1] += failures

    def _write_counters(self, conn: sqlite3.Connection) -> None:
        """Buffered counter increments, written once per commit (Database.before_commit)."""
        if self._pending:
            rows = [(day, p, f) for day, (p, f) in self._pending.items()]
            conn.executemany(_COUNTERS["add_counts"], rows)
            self._pending = {}

    async def ack(self, jids: Sequence[str], day: str) -> int:
        ended = self._ack(jids, day)
        if jids and self._db.careful:
            await self._db.pending  # during an outage, +OK only once it is recorded
        return ended

    def ack_now(self, jids: Sequence[str], day: str) -> int | None:
        if self._db.careful:
            return None  # ack waits for its commit then
        return self._ack(jids, day)

    def _ack(self, jids: Sequence[str], day: str) -> int:
        if not jids:
            return 0
        if len(jids) == 1:  # one statement is atomic by itself
            ended = self._db.write(_RESERVATIONS["end_reservation"], (jids[0],)).rowcount
        else:
            with self._db.atomic() as conn:
                rows = [(j,) for j in jids]
                ended = conn.executemany(_RESERVATIONS["end_reservation"], rows).rowcount
        if ended:
            self._count(day, ended, 0)
        return ended

    async def fail(self, jid: str, outcome: FailOutcome, day: str) -> bool:
        grown = 0
        with self._db.atomic() as conn:
            if conn.execute(_RESERVATIONS["end_reservation"], (jid,)).rowcount == 0:
                return False
            if outcome.target is not None:
                entry = SetEntry(
                    outcome.score, jid, outcome.payload, outcome.queue, outcome.jobtype
                )
                grown = self._put_entries(conn, outcome.target, [entry])
        committed = self._db.pending
        if outcome.target is not None:
            self._resize(outcome.target, grown)
        self._count(day, 1, 1)
        if self._db.careful:
            await committed  # during an outage, +OK only once it is recorded
        return True

    async def get_reservation(self, jid: str) -> Reservation | None:
        rows = self._checked_reservations(self._db.read(_RESERVATIONS["get_reservation"], (jid,)))
        return rows[0] if rows else None

    async def expired_reservations(self, now: float, limit: int) -> list[Reservation]:
        rows = self._db.read(_RESERVATIONS["expired_reservations"], (now, max(limit, 0)))
        return self._checked_reservations(rows)

    def _checked_reservations(self, rows: list[tuple[Any, ...]]) -> list[Reservation]:
        """Reservations about to be failed or expired: those whose payload changed on disk
        are moved aside instead."""
        damaged = [
            Damaged("reservations", row[0], row[1], row[6], row[2])
            for row in rows
            if not intact(row[2], row[6])
        ]
        if damaged:
            self._move_aside(damaged, [(d.jid,) for d in damaged], damage.DROP_RESERVATION)
            bad = {d.jid for d in damaged}
            rows = [row for row in rows if row[0] not in bad]
        return [_reservation(row) for row in rows]

    def _move_aside(self, found: list[Damaged], keys: list[tuple[Any]], drop: str) -> bool:
        """Move rows a read found damaged aside; False when they could not be moved (during
        an outage: they are left where they are, and skipped all the same)."""
        damage.report(found)
        if not self._db.writable:
            return False
        with self._db.atomic() as conn:
            conn.executemany(drop, keys)
            damage.move_aside(conn, found)
        return True

    async def extend_reservation(self, jid: str, expires_at: float) -> bool:
        cursor = self._db.write(_RESERVATIONS["extend_reservation"], (expires_at, jid))
        return cursor.rowcount > 0

    async def list_reservations(self, offset: int, limit: int) -> Page[Reservation]:
        rows = self._db.read(_RESERVATIONS["list_reservations"], (max(limit, 0), max(offset, 0)))
        items = [_reservation(row) for row in rows]
        ((total,),) = self._db.read(_RESERVATIONS["count_reservations"])
        return Page(items, total)

    # ----------------------------------------------------------------- sorted sets

    async def due_entries(self, name: SortedSet, now: float, limit: int) -> list[SetEntry]:
        rows = self._db.read(_SETS["due_entries"], (name, now, max(limit, 0)))
        damaged = [row for row in rows if not intact(row[2], row[6])]
        if damaged:
            found = [Damaged(f"set_entries:{name}", r[1], r[3], r[6], r[2]) for r in damaged]
            if self._move_aside(found, [(r[5],) for r in damaged], damage.DROP["set_entries"]):
                self._resize(name, -len(damaged))
            rows = [row for row in rows if intact(row[2], row[6])]
        return [entry_of(row[:5]) for row in rows]

    def _take(self, conn: sqlite3.Connection, name: SortedSet, entry: SetEntry) -> SetEntry | None:
        row = conn.execute(_SETS["take_entry"], (name, entry.jid, entry.score)).fetchone()
        if row is None:
            return None
        jid, score, queue, jobtype, payload = row
        return SetEntry(score, jid, payload, queue, jobtype)

    async def move_to_queue(self, name: SortedSet, moves: Sequence[SetMove]) -> int:
        jobs: list[QueuedJob] = []
        with self._db.atomic() as conn:
            jobs = [m.job for m in moves if self._take(conn, name, m.entry) is not None]
            added = self._push(conn, jobs) if jobs else {}
        committed = self._db.pending
        self._resize(name, -len(jobs))
        self._grow(added)
        await committed
        return len(jobs)

    async def move_to_set(
        self, source: SortedSet, entries: Sequence[SetEntry], target: SortedSet, score: float
    ) -> int:
        with self._db.atomic() as conn:
            taken = [e for e in (self._take(conn, source, e) for e in entries) if e is not None]
            moved = [dataclasses.replace(e, score=score) for e in taken]
            grown = self._put_entries(conn, target, moved) if moved else 0
        committed = self._db.pending
        self._resize(source, -len(taken))
        self._resize(target, grown)
        await committed
        return len(taken)

    async def remove_from_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        with self._db.atomic() as conn:
            removed = sum(1 for e in entries if self._take(conn, name, e) is not None)
        committed = self._db.pending
        self._resize(name, -removed)
        await committed
        return removed

    async def purge_set(self, name: SortedSet, before: float, limit: int) -> int:
        with self._db.atomic() as conn:
            purged = conn.execute(_SETS["purge_set"], (name, before, max(limit, 0))).rowcount
        committed = self._db.pending
        self._resize(name, -purged)
        await committed
        return purged

    async def clear_set(self, name: SortedSet) -> int:
        with self._db.atomic() as conn:
            cleared = conn.execute(_SETS["clear_set"], (name,)).rowcount
        committed = self._db.pending
        self._resize(name, -self._set_sizes[name])
        await committed
        return cleared

    def _resize(self, name: SortedSet, delta: int) -> None:
        """Every change to a set goes through here: it also invalidates the set's cursor."""
        self._set_sizes[name] += delta
        self._cursors.pop(name, None)

    async def set_size(self, name: SortedSet) -> int:
        return self._set_sizes[name]

    # ----------------------------------------------------------------- queues

    # ----------------------------------------------------------------- counters

    async def counters(self) -> Counters:
        return Counters(self._totals[0], self._totals[1])

    async def daily_counters(self, days: Sequence[str]) -> dict[str, Counters]:
        rows = self._db.read(_COUNTERS["get_counts"], (json.dumps(list(days)),))
        stored = {day: (processed, failures) for day, processed, failures in rows}
        result: dict[str, Counters] = {}
        for day in days:
            processed, failures = stored.get(day, (0, 0))
            pending = self._pending.get(day, (0, 0))
            result[day] = Counters(processed + pending[0], failures + pending[1])
        return result

    # ----------------------------------------------------------------- admin

    async def flush(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SCHEMA["flush"]):
                conn.execute(statement)
            self._flush_groups(conn)
        self._flush_records()
        self._flush_limits()
        self._flush_counts()
        self._flush_deadlines()
        self._flush_batches()
        committed = self._db.pending
        self._sizes.clear()
        self._paused.clear()
        self._set_sizes = dict.fromkeys(SortedSet, 0)
        self._cursors.clear()
        self._totals = [0, 0]
        self._pending = {}
        await committed
