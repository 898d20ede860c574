"""The SQLite store: the durable default, one file, no other process.

Jobs live in SQLite, not in Python objects: a million queued jobs are a million rows, and the
process keeps only small per-queue and per-set metadata (sizes, pause flags) plus the counter
totals. Writes share one transaction per event-loop iteration (group commit, see
``db``); methods that must be durable await that commit. Worker records live in memory
only: workers reconnect and beat again after a restart.

One server process per database file: the in-memory mirrors assume nobody else writes.
Schema and queries: ``conveyor/store/sqlite/sql/*.sql``. Design notes: docs/design/sqlite.md.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.store.base import (
    Counters,
    FailOutcome,
    JobFilter,
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
from conveyor.store.filters import filter_matcher
from conveyor.store.sqlite.counts import SQLiteCounts
from conveyor.store.sqlite.db import Database, SQLiteOptions, load_queries, split_statements
from conveyor.store.sqlite.deadlines import SQLiteDeadlines
from conveyor.store.sqlite.endings import SQLiteEndings
from conveyor.store.sqlite.limits import SQLiteLimits
from conveyor.store.sqlite.records import SQLiteRecords
from conveyor.store.workers import LocalWorkers

__all__ = ["SQLiteStore"]

_SCHEMA = load_queries("schema.sql")
_QUEUES = load_queries("queues.sql")
_RESERVATIONS = load_queries("reservations.sql")
_SETS = load_queries("sets.sql")
_COUNTERS = load_queries("counters.sql")
_TOTAL = ""  # the counters row holding the totals


def _entry(row: tuple[Any, ...]) -> SetEntry:
    score, jid, payload, queue, jobtype = row
    return SetEntry(score, jid, payload, queue, jobtype)


@dataclass(frozen=True, slots=True)
class _PageCursor:
    """Where the last page of a set listing ended. A scan asking for the very next page of the
    same listing, with the set unchanged since, continues from (score, jid) through the index
    and reuses the total, instead of re-walking ``offset`` rows and re-counting: this keeps a
    MUTATE over 100,000 filtered entries linear. Any change to the set drops its cursor."""

    flt: JobFilter
    descending: bool
    next_offset: int
    score: float
    jid: str
    total: int

    def resumes(self, flt: JobFilter, descending: bool, offset: int) -> bool:
        return (flt, descending, offset) == (self.flt, self.descending, self.next_offset)


def _like_substring(text: str) -> str:
    """A LIKE pattern for ``text`` anywhere, its ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _reservation(row: tuple[Any, ...]) -> Reservation:
    jid, queue, payload, wid, reserved_at, expires_at = row
    return Reservation(jid, queue, payload, wid, reserved_at, expires_at)


class SQLiteStore(
    LocalWorkers,
    SQLiteRecords,
    SQLiteLimits,
    SQLiteEndings,
    SQLiteCounts,
    SQLiteDeadlines,
    Store,
):
    """Build with ``SQLiteStore.from_url("sqlite:///path/to/file.db")`` (see ``SQLiteOptions``)."""

    def __init__(self, options: SQLiteOptions) -> None:
        self._db = Database(options)
        self._db.before_commit = self._write_counters
        self._db.after_rollback = self._load_state
        self._sizes: dict[str, int] = {}  # every known queue -> its length
        self._paused: set[str] = set()
        self._set_sizes: dict[SortedSet, int] = dict.fromkeys(SortedSet, 0)
        self._cursors: dict[SortedSet, _PageCursor] = {}
        self._totals = [0, 0]  # processed, failures (committed + pending)
        self._pending: dict[str, list[int]] = {}  # day -> counts not yet written
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
        self._db.open(_SCHEMA["create"])
        self._create_records()
        self._create_counts()
        self._create_deadlines()
        self._load_state()

    async def close(self) -> None:
        self._db.close()

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
        conn.executemany(
            _QUEUES["push_job"], [(j.queue, j.jid, j.reserve_for, j.payload) for j in jobs]
        )
        return added

    def _grow(self, added: dict[str, int]) -> None:
        for name, count in added.items():
            self._sizes[name] = self._sizes.get(name, 0) + count
        self._notify(added)

    in_process = True

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> None:
        if jobs:
            self.enqueue_now(jobs)
            await self._db.durable()

    def enqueue_now(self, jobs: Sequence[QueuedJob]) -> None:
        if not jobs:
            return
        with self._db.atomic() as conn:
            added = self._push(conn, jobs)
        self._grow(added)

    def _put_entries(
        self, conn: sqlite3.Connection, name: SortedSet, entries: list[SetEntry]
    ) -> int:
        """Insert entries (one per jid), replacing existing ones; returns the size change."""
        replaced = conn.executemany(_SETS["delete_jid"], [(name, e.jid) for e in entries]).rowcount
        conn.executemany(
            _SETS["insert_entry"],
            [(name, e.jid, e.score, e.queue, e.jobtype, e.payload) for e in entries],
        )
        return len(entries) - replaced

    async def add_to_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> None:
        if not entries:
            return
        unique = list({entry.jid: entry for entry in entries}.values())  # the last one wins
        with self._db.atomic() as conn:
            grown = self._put_entries(conn, name, unique)
        self._resize(name, grown)
        await self._db.durable()

    async def durable(self) -> None:
        await self._db.durable()

    # ----------------------------------------------------------------- working

    def takes_hand_off(self, queue: str) -> bool:
        return queue not in self._paused

    def hand_off(self, jobs: Sequence[QueuedJob], wid: str, now: float) -> None:
        name = jobs[0].queue
        rows = [(j.jid, name, wid, now, now + j.reserve_for, j.payload) for j in jobs]
        if len(rows) == 1 and name in self._sizes:
            # one statement is atomic by itself: no savepoint (this is every idle worker's
            # PUSH -> start path)
            self._db.writer().execute(_RESERVATIONS["insert_reservation"], rows[0])
            return
        with self._db.atomic() as conn:
            if name not in self._sizes:
                conn.execute(_QUEUES["add_queue"], (name,))
            conn.executemany(_RESERVATIONS["insert_reservation"], rows)
        self._sizes.setdefault(name, 0)

    async def reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        taken: list[Reservation] = []
        popped: dict[str, int] = {}
        ready = [n for n in queues if self._sizes.get(n, 0) > 0 and n not in self._paused]
        if not ready or count <= 0:
            return taken
        with self._db.atomic() as conn:
            for name in ready:
                want = count - len(taken)
                if want <= 0:
                    break
                rows = conn.execute(_QUEUES["pop_jobs"], (name, want)).fetchall()
                rows.sort()
                popped[name] = popped.get(name, 0) + len(rows)
                taken.extend(
                    Reservation(jid, name, payload, wid, now, now + reserve_for)
                    for _seq, jid, reserve_for, payload in rows
                )
            conn.executemany(
                _RESERVATIONS["insert_reservation"],
                [(r.jid, r.queue, r.wid, r.reserved_at, r.expires_at, r.payload) for r in taken],
            )
        for name, count_popped in popped.items():
            self._sizes[name] -= count_popped
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
        if not jids:
            return 0
        conn = self._db.writer()
        ended = conn.executemany(_RESERVATIONS["end_reservation"], [(j,) for j in jids]).rowcount
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
        if outcome.target is not None:
            self._resize(outcome.target, grown)
        self._count(day, 1, 1)
        return True

    async def get_reservation(self, jid: str) -> Reservation | None:
        row = self._db.conn.execute(_RESERVATIONS["get_reservation"], (jid,)).fetchone()
        return None if row is None else _reservation(row)

    async def expired_reservations(self, now: float, limit: int) -> list[Reservation]:
        rows = self._db.conn.execute(_RESERVATIONS["expired_reservations"], (now, max(limit, 0)))
        return [_reservation(row) for row in rows]

    async def extend_reservation(self, jid: str, expires_at: float) -> bool:
        conn = self._db.writer()
        return conn.execute(_RESERVATIONS["extend_reservation"], (expires_at, jid)).rowcount > 0

    async def list_reservations(self, offset: int, limit: int) -> Page[Reservation]:
        conn = self._db.conn
        rows = conn.execute(_RESERVATIONS["list_reservations"], (max(limit, 0), max(offset, 0)))
        items = [_reservation(row) for row in rows]
        (total,) = conn.execute(_RESERVATIONS["count_reservations"]).fetchone()
        return Page(items, total)

    # ----------------------------------------------------------------- sorted sets

    async def due_entries(self, name: SortedSet, now: float, limit: int) -> list[SetEntry]:
        rows = self._db.conn.execute(_SETS["due_entries"], (name, now, max(limit, 0)))
        return [_entry(row) for row in rows]

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
        self._resize(name, -len(jobs))
        self._grow(added)
        await self._db.durable()
        return len(jobs)

    async def move_to_set(
        self, source: SortedSet, entries: Sequence[SetEntry], target: SortedSet, score: float
    ) -> int:
        with self._db.atomic() as conn:
            taken = [e for e in (self._take(conn, source, e) for e in entries) if e is not None]
            moved = [dataclasses.replace(e, score=score) for e in taken]
            grown = self._put_entries(conn, target, moved) if moved else 0
        self._resize(source, -len(taken))
        self._resize(target, grown)
        await self._db.durable()
        return len(taken)

    async def remove_from_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        with self._db.atomic() as conn:
            removed = sum(1 for e in entries if self._take(conn, name, e) is not None)
        self._resize(name, -removed)
        await self._db.durable()
        return removed

    async def purge_set(self, name: SortedSet, before: float, limit: int) -> int:
        with self._db.atomic() as conn:
            purged = conn.execute(_SETS["purge_set"], (name, before, max(limit, 0))).rowcount
        self._resize(name, -purged)
        await self._db.durable()
        return purged

    async def clear_set(self, name: SortedSet) -> int:
        with self._db.atomic() as conn:
            cleared = conn.execute(_SETS["clear_set"], (name,)).rowcount
        self._resize(name, -self._set_sizes[name])
        await self._db.durable()
        return cleared

    def _resize(self, name: SortedSet, delta: int) -> None:
        """Every change to a set goes through here: it also invalidates the set's cursor."""
        self._set_sizes[name] += delta
        self._cursors.pop(name, None)

    async def set_size(self, name: SortedSet) -> int:
        return self._set_sizes[name]

    async def list_set(
        self,
        name: SortedSet,
        flt: JobFilter,
        offset: int,
        limit: int,
        *,
        descending: bool = False,
    ) -> Page[SetEntry]:
        offset, limit = max(offset, 0), max(limit, 0)
        if flt.jids:
            return self._list_jids(name, flt, offset, limit, descending)
        return self._list_filtered(name, flt, offset, limit, descending)

    def _list_jids(
        self, name: SortedSet, flt: JobFilter, offset: int, limit: int, descending: bool
    ) -> Page[SetEntry]:
        """Few entries by jid through the unique index; the rest of the filter in Python."""
        match = filter_matcher(flt)
        rows = self._db.conn.execute(_SETS["entries_by_jid"], (name, json.dumps(list(flt.jids))))
        found = sorted(
            (e for e in map(_entry, rows) if match(e)),
            key=lambda e: (e.score, e.jid),
            reverse=descending,
        )
        return Page(found[offset : offset + limit], len(found))

    def _list_filtered(
        self, name: SortedSet, flt: JobFilter, offset: int, limit: int, descending: bool
    ) -> Page[SetEntry]:
        conn = self._db.conn
        direction = "desc" if descending else "asc"
        params: dict[str, Any] = {
            "name": name,
            "limit": limit,
            "queue": flt.queue or None,
            "jobtype": flt.jobtype or None,
            "pattern": flt.pattern or None,
            "text": _like_substring(flt.text) if flt.text else None,
        }
        cursor = self._cursors.get(name)
        if offset and cursor is not None and cursor.resumes(flt, descending, offset):
            params.update(score=cursor.score, jid=cursor.jid)
            rows = conn.execute(_SETS[f"filtered_after_{direction}"], params)
            total = cursor.total
        elif flt.is_empty:
            rows = conn.execute(_SETS[f"page_{direction}"], {**params, "offset": offset})
            total = self._set_sizes[name]
        else:
            rows = conn.execute(_SETS[f"filtered_page_{direction}"], {**params, "offset": offset})
            del params["limit"]
            (total,) = conn.execute(_SETS["filtered_count"], params).fetchone()
        items = [_entry(row) for row in rows]
        if items:
            last = items[-1]
            self._cursors[name] = _PageCursor(
                flt, descending, offset + len(items), last.score, last.jid, total
            )
        return Page(items, total)

    async def get_set_entries(self, name: SortedSet, jids: Sequence[str]) -> list[SetEntry]:
        rows = self._db.conn.execute(_SETS["entries_by_jid"], (name, json.dumps(list(jids))))
        return [_entry(row) for row in rows]

    # ----------------------------------------------------------------- queues

    async def queue_sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    async def queue_heads(self, names: Sequence[str]) -> dict[str, bytes | None]:
        heads: dict[str, bytes | None] = {}
        for name in names:
            row = None
            if self._sizes.get(name, 0) > 0:
                row = self._db.conn.execute(_QUEUES["queue_head"], (name,)).fetchone()
            heads[name] = None if row is None else row[0]
        return heads

    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        if self._sizes.get(name, 0) == 0:
            return Page([], 0)
        rows = self._db.conn.execute(_QUEUES["list_queue"], (name, max(limit, 0), max(offset, 0)))
        items = [QueuedJob(name, jid, payload, reserve_for) for jid, reserve_for, payload in rows]
        return Page(items, self._sizes[name])

    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        if self._sizes.get(name, 0) == 0 or not jids:
            return 0
        with self._db.atomic() as conn:
            deleted = conn.execute(
                _QUEUES["delete_queued"], (name, json.dumps(list(jids)))
            ).rowcount
        self._sizes[name] -= deleted
        await self._db.durable()
        return deleted

    async def paused_queues(self) -> set[str]:
        return set(self._paused)

    async def set_paused(self, names: Sequence[str], paused: bool) -> None:
        changed = [
            n for n in dict.fromkeys(names) if n in self._sizes and (n in self._paused) != paused
        ]
        if not changed:
            return
        with self._db.atomic() as conn:
            conn.executemany(_QUEUES["set_paused"], [(int(paused), n) for n in changed])
        if paused:
            self._paused.update(changed)
        else:
            self._paused.difference_update(changed)
            self._notify(changed)  # a resumed queue may have jobs for waiting fetchers
        await self._db.durable()

    async def remove_queues(self, names: Sequence[str]) -> None:
        known = [(n,) for n in dict.fromkeys(names) if n in self._sizes]
        if not known:
            return
        with self._db.atomic() as conn:
            conn.executemany(_QUEUES["delete_queue_jobs"], known)
            conn.executemany(_QUEUES["delete_queue"], known)
        for (name,) in known:
            del self._sizes[name]
            self._paused.discard(name)
        await self._db.durable()

    # ----------------------------------------------------------------- counters

    async def counters(self) -> Counters:
        return Counters(self._totals[0], self._totals[1])

    async def daily_counters(self, days: Sequence[str]) -> dict[str, Counters]:
        rows = self._db.conn.execute(_COUNTERS["get_counts"], (json.dumps(list(days)),))
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
        self._flush_records()
        self._flush_limits()
        self._flush_counts()
        self._flush_deadlines()
        self._sizes.clear()
        self._paused.clear()
        self._set_sizes = dict.fromkeys(SortedSet, 0)
        self._cursors.clear()
        self._totals = [0, 0]
        self._pending = {}
        await self._db.durable()
