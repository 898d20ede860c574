"""Batches (``conveyor.store.batches``) in SQLite: the tables of ``sql/batches.sql``, moved
by ``batch_engine`` inside one savepoint of the store's shared transaction."""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.errors import StoreError
from conveyor.store import batch_engine as engine
from conveyor.store.base import Page, Reservation, SetEntry, SortedSet
from conveyor.store.batches import (
    Batches,
    BatchRecord,
    EndContext,
    Fired,
    JobEnd,
    JobMark,
    MarkResult,
    MarkState,
    NewBatch,
    NewMark,
    Outcome,
    WaitingJob,
)
from conveyor.store.endings import Settle
from conveyor.store.sqlite import damage
from conveyor.store.sqlite.damage import Damaged
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteBatches"]

_SQL = load_queries("batches.sql")
_RESERVATIONS = load_queries("reservations.sql")
_END_RESERVATION = load_queries("endings.sql")["end_returning"]
_encode = msgspec.msgpack.Encoder().encode
_batch = msgspec.msgpack.Decoder(BatchRecord).decode
_waiting = msgspec.msgpack.Decoder(WaitingJob).decode


def _mark(row: tuple[Any, ...]) -> JobMark:
    jid, state, updated_at, bid, role, expires_at = row
    return JobMark(jid, MarkState(state), updated_at, bid, role, expires_at)


class _Tables:
    """``batch_engine.Tables`` on one connection, inside a savepoint.

    One engine step touches a few batches and many marks (a PUSHB of 1,000 jobs into one
    batch): batches and marks are read once (``prefetch``) and kept here, their writes are
    collected and written with one statement each in ``flush`` (still inside the savepoint).
    Size and counter changes of the job side are applied by the caller once the step held."""

    def __init__(
        self, conn: sqlite3.Connection, now: float = 0.0, owner: SQLiteBatches | None = None
    ) -> None:
        self.conn = conn
        self.now = now
        self.owner = owner
        self.sets: list[tuple[SortedSet, SetEntry]] = []
        self.grown: dict[SortedSet, int] = {}
        self.processed = 0
        self._batches: dict[str, BatchRecord | None] = {}
        self._dirty_batches: dict[str, BatchRecord] = {}
        self._marks: dict[str, JobMark | None] = {}
        self._dirty_marks: dict[str, JobMark] = {}
        self._seq: dict[str, int] = {}
        self._waiters: dict[str, list[str]] = {}
        self._ended: set[str] | None = None
        self._counted = False
        self.undo: dict[str, BatchRecord | None] = {}
        """The owner's unwritten batch records as they were before this step, to put back
        if the step fails after its flush."""

    # -- reading ahead, writing behind

    def prefetch(self, jids: Sequence[str], end: Sequence[str] = ()) -> None:
        """Read the marks of ``jids`` and the waiters they hold in one query each, and end
        the reservations of ``end`` (the successes of this step) in one statement."""
        if len(jids) == 1:  # one PUSH or ACK: by key, without the JSON list
            self.mark(jids[0])
        else:
            wanted = json.dumps([jid for jid in jids if jid not in self._marks])
            for row in self.conn.execute(_SQL["get_marks"], (wanted, self.now)):
                self._marks[row[0]] = _mark(row)
            for jid in jids:
                self._marks.setdefault(jid, None)
        if self.owner is None or self.owner._has_waiters:
            for jid in jids:
                self._waiters[jid] = []
            for dep, waiter in self.conn.execute(_SQL["waiters_of"], (json.dumps(list(jids)),)):
                self._waiters[dep].append(waiter)
        if len(end) > 1:
            ended = self.conn.execute(_SQL["end_reservations"], (json.dumps(list(end)),))
            self._ended = {row[0] for row in ended}

    def flush(self) -> None:
        conn = self.conn
        owner = self.owner
        for batch in self._dirty_batches.values():
            if owner is not None and batch.bid in owner._persisted:
                # written with the next commit (SQLiteBatches._write_batches): many steps of
                # one batch in one commit write it once
                self.undo.setdefault(batch.bid, owner._dirty.get(batch.bid))
                owner._dirty[batch.bid] = owner._batch_cache[batch.bid] = batch  # ours alone
                continue
            record = _encode(batch)
            args = (batch.expires_at, record, batch.bid)
            if conn.execute(_SQL["update_batch"], args).rowcount == 0:
                search = f"{batch.bid} {batch.description}".lower()
                conn.execute(_SQL["insert_batch"], (batch.bid, batch.expires_at, search, record))
            if owner is not None:
                owner._batch_cache[batch.bid] = batch
                owner._persisted.add(batch.bid)
        if self._dirty_marks:
            seq = self._seq
            rows = [
                (m.jid, m.state, m.updated_at, m.bid, m.role, m.expires_at, seq.get(m.jid, 0))
                for m in self._dirty_marks.values()
            ]
            conn.executemany(_SQL["put_mark"], rows)
        self._dirty_batches, self._dirty_marks = {}, {}

    # -- the engine's view

    def batch(self, bid: str) -> BatchRecord | None:
        if bid not in self._batches:
            cache = self.owner._batch_cache if self.owner is not None else {}
            cached = cache.get(bid)
            if cached is not None:
                self._batches[bid] = copy.copy(cached)
            else:
                row = self.conn.execute(_SQL["get_batch"], (bid,)).fetchone()
                found = None if row is None else _batch(row[0])
                self._batches[bid] = found
                if found is not None and self.owner is not None:
                    cache[bid] = copy.copy(found)
                    self.owner._persisted.add(bid)
        return self._batches[bid]

    def save_batch(self, batch: BatchRecord) -> None:
        self._batches[batch.bid] = self._dirty_batches[batch.bid] = batch

    def join(self, bid: str, jid: str, seq: int) -> None:
        self._seq[jid] = seq  # written with the job's mark

    def add_child(self, parent: str, child: str) -> None:
        self.conn.execute(_SQL["add_child"], (parent, child))

    def set_propagation(self, bid: str, pending: bool) -> None:
        self.flush()
        self.conn.execute(_SQL["set_propagate"], (int(pending), bid))

    def mark(self, jid: str) -> JobMark | None:
        if jid not in self._marks:
            row = self.conn.execute(_SQL["get_mark"], (jid, self.now)).fetchone()
            self._marks[jid] = None if row is None else _mark(row)
        return self._marks[jid]

    def save_mark(self, mark: JobMark) -> None:
        self._marks[mark.jid] = self._dirty_marks[mark.jid] = mark

    def waiting(self, jid: str) -> WaitingJob | None:
        row = self.conn.execute(_SQL["get_waiting"], (jid,)).fetchone()
        return None if row is None else _waiting(row[0])

    def save_waiting(self, job: WaitingJob) -> None:
        self.conn.execute(_SQL["put_waiting"], (job.jid, _encode(job)))

    def delete_waiting(self, jid: str) -> None:
        self.conn.execute(_SQL["delete_waiting"], (jid,))

    def waiters(self, dep: str) -> list[str]:
        if self.owner is not None and not self.owner._has_waiters:
            return []
        if dep not in self._waiters:
            self._waiters[dep] = [row[0] for row in self.conn.execute(_SQL["waiters"], (dep,))]
        return list(self._waiters[dep])

    def add_waiter(self, dep: str, waiter: str) -> None:
        self.conn.execute(_SQL["add_waiter"], (dep, waiter))
        if self.owner is not None:
            self.owner._has_waiters = True
        self._waiters.pop(dep, None)

    def drop_waiters(self, dep: str) -> None:
        self.conn.execute(_SQL["drop_waiters"], (dep,))
        self._waiters[dep] = []

    def schedule(self, entry: SetEntry) -> None:
        self.sets.append((SortedSet.SCHEDULED, entry))

    def bury(self, entry: SetEntry) -> None:
        self.sets.append((SortedSet.DEAD, entry))

    def ended_by_caller(self, jids: set[str]) -> None:
        """These jids' reservations were ended (and are counted) by the caller: an ACK."""
        self._ended = jids
        self._counted = True

    def end_reservation(self, jid: str, day: str) -> bool:
        if self._ended is not None:
            if jid not in self._ended:
                return False
            self._ended.discard(jid)
        elif self.conn.execute(_RESERVATIONS["end_reservation"], (jid,)).rowcount == 0:
            return False
        if not self._counted:
            self.processed += 1
        return True


class SQLiteBatches(Batches):
    """Mixed into ``SQLiteStore``, whose set and counter helpers it uses."""

    _db: Database

    if TYPE_CHECKING:  # SQLiteStore's

        def _put_entries(
            self, conn: sqlite3.Connection, name: SortedSet, entries: list[SetEntry]
        ) -> int: ...

        def _resize(self, name: SortedSet, delta: int) -> None: ...

        def _count(self, day: str, processed: int, failures: int) -> None: ...

        def _keep_ended(
            self,
            conn: sqlite3.Connection,
            jids: Sequence[str],
            keep: Mapping[str, SetEntry],
            settle: Settle | None,
        ) -> tuple[list[Reservation], int, list[Damaged]]: ...

    _batch_cache: dict[str, BatchRecord]
    """Batch records as committed or about to be: a single server owns the file, so a
    batch's record is read once, then kept here (cleared when a write is rolled back)."""
    _has_waiters: bool
    """Whether any job waits for another: when none does, ending a job looks for no waiters."""
    _dirty: dict[str, BatchRecord]
    """Batch records changed since the last commit, written just before it."""
    _persisted: set[str]
    """Bids known to have their row (so a change may wait for the commit)."""

    def _create_batches(self) -> None:
        conn = self._db.conn
        conn.executescript(_SQL["create"])
        self._batch_cache, self._dirty, self._persisted = {}, {}, set()
        self._has_waiters = (
            conn.execute("SELECT 1 FROM mark_waiters LIMIT 1").fetchone() is not None
        )
        rolled_back, committing = self._db.after_rollback, self._db.before_commit

        def forget() -> None:
            self._batch_cache.clear()
            self._dirty.clear()
            self._persisted.clear()
            rolled_back()

        def write(conn: sqlite3.Connection) -> None:
            self._write_batches(conn)
            committing(conn)

        self._db.after_rollback = forget
        self._db.before_commit = write

    def _write_batches(self, conn: sqlite3.Connection) -> None:
        """The batch records steps changed since the last commit, once each, just before it."""
        for batch in self._dirty.values():
            record = _encode(batch)
            args = (record, batch.bid, batch.expires_at)
            if conn.execute(_SQL["update_record"], args).rowcount == 0:  # a new expiry
                conn.execute(_SQL["update_batch"], (batch.expires_at, record, batch.bid))
        self._dirty = {}

    @contextlib.contextmanager
    def _atomic(self, now: float = 0.0) -> Iterator[_Tables]:
        """One step in a savepoint; what it changed in memory is put back if it fails."""
        tables: _Tables | None = None
        try:
            with self._db.atomic() as conn:
                tables = _Tables(conn, now, self)
                yield tables
        except BaseException:
            if tables is not None:
                self._put_back(tables)
            raise

    def _put_back(self, tables: _Tables) -> None:
        """A step failed after its flush: the owner's batch records as they were before it."""
        for bid, before in tables.undo.items():
            self._batch_cache.pop(bid, None)
            if before is None:
                self._dirty.pop(bid, None)
            else:
                self._dirty[bid] = self._batch_cache[bid] = before

    def _flush_batches(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SQL["flush"]):
                conn.execute(statement)
        self._batch_cache.clear()
        self._dirty.clear()
        self._persisted.clear()

    def _step(self, tables: _Tables) -> None:
        """Write what the engine changed (still inside the savepoint)."""
        tables.flush()
        for name, entry in tables.sets:
            grown = self._put_entries(tables.conn, name, [entry])
            tables.grown[name] = tables.grown.get(name, 0) + grown

    def _after(self, tables: _Tables, day: str = "") -> None:
        """Mirror the step's changes once it held."""
        for name, grown in tables.grown.items():
            self._resize(name, grown)
        if tables.processed:
            self._count(day, tables.processed, 0)

    async def create_batch(self, batch: NewBatch) -> str | None:
        with self._atomic() as tables:
            error = engine.create(tables, batch)
            tables.flush()
            return error

    async def open_batch(self, bid: str) -> bool:
        with self._atomic() as tables:
            batch = tables.batch(bid)
            if batch is not None:
                batch.committed = False
                tables.save_batch(batch)
                tables.flush()
        return batch is not None

    async def commit_batch(self, bid: str, now: float, expires_at: float) -> Fired | None:
        with self._atomic(now) as tables:
            fired = engine.commit(tables, bid, now, expires_at)
            self._step(tables)
        self._after(tables)
        return fired

    async def adopt_batch(self, parent: str, child: str, now: float) -> str | None:
        with self._atomic(now) as tables:
            error = engine.adopt(tables, parent, child)
            tables.flush()
            return error

    async def get_batches(self, bids: Sequence[str]) -> dict[str, BatchRecord]:
        tables = _Tables(self._db.conn, 0.0, self)
        found = {bid: tables.batch(bid) for bid in dict.fromkeys(bids)}
        return {bid: batch for bid, batch in found.items() if batch is not None}

    async def list_batches(self, search: str, offset: int, limit: int) -> Page[BatchRecord]:
        conn = self._db.conn
        params = {"search": search.lower(), "limit": max(limit, 0), "offset": max(offset, 0)}
        items = [_batch(row[0]) for row in conn.execute(_SQL["list_batches"], params)]
        items = [copy.copy(self._dirty[b.bid]) if b.bid in self._dirty else b for b in items]
        (total,) = conn.execute(_SQL["count_batches"], {"search": params["search"]}).fetchone()
        return Page(items, total)

    async def batch_children(self, bid: str) -> list[str]:
        return [row[0] for row in self._db.conn.execute(_SQL["children"], (bid,))]

    async def batch_jobs(self, bid: str, offset: int, limit: int) -> Page[JobMark]:
        conn = self._db.conn
        rows = conn.execute(_SQL["batch_jobs"], (bid, max(limit, 0), max(offset, 0)))
        items = [_mark(row) for row in rows]
        (total,) = conn.execute(_SQL["count_batch_jobs"], (bid,)).fetchone()
        return Page(items, total)

    async def propagate(self, child: str, now: float) -> Fired:
        with self._atomic(now) as tables:
            fired = engine.propagate(tables, child, now)
            self._step(tables)
        self._after(tables)
        return fired

    async def pending_propagations(self, limit: int) -> list[str]:
        rows = self._db.conn.execute(_SQL["pending_propagations"], (max(limit, 0),))
        return [row[0] for row in rows]

    async def expire_batches(self, now: float, limit: int) -> int:
        conn = self._db.conn
        rows = conn.execute(_SQL["expired_batches"], (now, max(limit, 0)))
        dirty = self._dirty
        bids = [bid for (bid,) in rows if bid not in dirty or dirty[bid].expires_at <= now]
        if bids:
            with self._db.atomic() as conn:
                for bid in bids:
                    self._batch_cache.pop(bid, None)
                    self._dirty.pop(bid, None)
                    self._persisted.discard(bid)
                    conn.execute(_SQL["delete_batch_marks"], (bid,))
                    conn.execute(_SQL["delete_children"], (bid,))
                    conn.execute(_SQL["delete_batch"], (bid,))
        return len(bids)

    async def mark_jobs(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        return self.mark_jobs_now(marks, now)

    def mark_jobs_now(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        if len(marks) == 1 and marks[0].waiting is None:
            result = self._mark_now(marks[0], now)
            if result is not None:
                return {marks[0].jid: result}
        with self._atomic(now) as tables:
            deps = [dep for m in marks if m.waiting for dep in m.waiting.after]
            tables.prefetch([m.jid for m in marks] + deps)
            results = engine.mark_jobs(tables, marks, now)
            tables.flush()
            return results

    def _mark_now(self, new: NewMark, now: float) -> tuple[MarkResult, str] | None:
        """The usual PUSH of a batch or tracked job in one statement, without a savepoint:
        ``batch_engine.mark_jobs``'s answer for ``new`` when its batch (if any) is known, has
        its row and is open; the batch's counters move in memory, written with the commit
        (``_write_batches``), as the engine's steps' are. None, with nothing done, for the
        engine's way (a batch to read or to refuse, an expired mark to write over)."""
        batch = None
        if new.bid:
            batch = self._batch_cache.get(new.bid)
            if batch is None or batch.committed or new.bid not in self._persisted:
                return None
        seq = 0 if batch is None else batch.total + 1
        expires = None if new.bid else new.expires_at
        args = (new.jid, now, new.bid, expires, seq)
        if self._db.write(_SQL["add_mark"], args).rowcount == 0:  # marked already
            mark = _Tables(self._db.conn, now).mark(new.jid)
            if mark is None:
                return None  # expired, not purged yet
            waiting = mark.state == MarkState.WAITING
            return (MarkResult.WAITING if waiting else MarkResult.READY), ""
        if batch is not None:  # the cached record is ours alone: handed out only as copies
            batch.total += 1
            batch.pending += 1
            self._dirty[batch.bid] = batch
        return MarkResult.READY, ""

    async def get_marks(self, jids: Sequence[str], now: float) -> dict[str, JobMark]:
        tables = _Tables(self._db.conn, now)
        found = {jid: tables.mark(jid) for jid in dict.fromkeys(jids)}
        return {jid: mark for jid, mark in found.items() if mark is not None}

    async def unfinished_marks(self, after: str, limit: int) -> list[str]:
        rows = self._db.conn.execute(_SQL["unfinished_marks"], (after, max(limit, 0)))
        return [row[0] for row in rows]

    def _end_acked(
        self,
        jids: Sequence[str],
        ends: EndContext,
        keep: Mapping[str, SetEntry],
        settle: Settle | None,
    ) -> tuple[list[Reservation], Fired]:
        """The ACK's own step (``SQLiteEndings.ack_returning`` with ``ends``): end the
        reservations of ``jids``, keep the jobs of ``keep`` whose reservation ended in the
        completed set, store what ``settle`` asks (``SQLiteEndings._keep_ended``), and end
        the unfinished marks of their jobs, in one savepoint. The caller counts what ended."""
        if len(jids) == 1 and not keep and settle is None and not self._has_waiters:
            quick = self._ack_one(jids[0], ends)
            if quick is not None:
                return quick
        fired = Fired()
        with self._atomic(ends.now) as tables:
            conn = tables.conn
            ended, grown, damaged = self._keep_ended(conn, jids, keep, settle)
            if grown:
                done_set = SortedSet.COMPLETED
                tables.grown[done_set] = tables.grown.get(done_set, 0) + grown
            if ended:
                tables.prefetch([r.jid for r in ended])
                done = [
                    JobEnd(r.jid, Outcome.SUCCESS)
                    for r in ended
                    if (mark := tables.mark(r.jid)) is not None and mark.unfinished
                ]
                if done:
                    tables.ended_by_caller({end.jid for end in done})
                    fired = engine.end_jobs(tables, done, ends)
                    self._step(tables)
        self._after(tables)
        if damaged:
            damage.report(damaged)
        return ended, fired

    def _ack_one(self, jid: str, ends: EndContext) -> tuple[list[Reservation], Fired] | None:
        """The usual ACK of a batch or tracked job (enqueued, no job waits for any other):
        ``_end_acked`` in two statements without a savepoint, the mark moved first (one
        UPDATE, only from ``enqueued`` and only while the job holds a reservation), then the
        reservation ended; the batch's counters move in memory, written with the commit
        (``_write_batches``). When the batch may reach a milestone, or is not cached,
        ``batch_engine.settle`` fires what is due in a step of its own. Should anything fail
        after the mark moved, the whole open transaction is rolled back
        (``Database.abandon``, as a failed commit is): no commit holds the one without the
        other. None, with nothing changed, for the engine's way (a failed or waiting mark, a
        callback's, no mark, no reservation)."""
        now = ends.now
        db = self._db
        args = {"now": now, "keep": now + ends.keep_seconds, "jid": jid}
        marked = db.write(_SQL["succeed_mark"], args).fetchone()  # one statement: atomic
        if marked is None:
            return None
        quiet: BatchRecord | None = None
        try:
            row = db.conn.execute(_END_RESERVATION, (jid,)).fetchone()
            if row is None:  # the mark's UPDATE saw it: only a broken file gets here
                raise StoreError(f"the reservation of {jid} vanished while it was acknowledged")
            fired = Fired(ended=[jid], processed=1)
            bid = marked[0]
            if bid:
                quiet = self._quiet_batch(bid)
                if quiet is None:  # it may fire: the engine's rules
                    self._settle_success(bid, now, fired)
        except BaseException as exc:
            raise db.abandon(exc) from exc
        if quiet is not None:  # the cached record is ours alone: handed out only as copies
            quiet.pending -= 1
            self._dirty[quiet.bid] = quiet
        return [Reservation(*row)], fired

    def _settle_success(self, bid: str, now: float, fired: Fired) -> None:
        """One more success of an enqueued job of batch ``bid``, in a step of its own: the
        counters, and what that makes due (``batch_engine.settle``)."""
        with self._atomic(now) as tables:
            batch = tables.batch(bid)
            if batch is not None:  # the mark was enqueued: pending, not failed
                batch.pending -= 1
                engine.settle(tables, batch, now, fired)
                self._step(tables)
        self._after(tables)

    def _quiet_batch(self, bid: str) -> BatchRecord | None:
        """The cached record of ``bid`` when one more success of an enqueued job fires
        nothing in it (open, or jobs still to run: ``batch_engine.settle``)."""
        batch = self._batch_cache.get(bid)
        if batch is None or bid not in self._persisted:
            return None
        if engine.may_fire_on_success(batch):
            return None
        return batch

    async def end_jobs(self, ends: Sequence[JobEnd], ctx: EndContext) -> Fired:
        with self._atomic(ctx.now) as tables:
            jids = [end.jid for end in ends]
            tables.prefetch(jids, [e.jid for e in ends if e.outcome == Outcome.SUCCESS])
            fired = engine.end_jobs(tables, ends, ctx)
            self._step(tables)
        self._after(tables, ctx.day)
        return fired

    async def purge_marks(self, now: float, limit: int) -> int:
        with self._db.atomic() as conn:
            return conn.execute(_SQL["purge_marks"], (now, max(limit, 0))).rowcount

    async def list_waiting(self, offset: int, limit: int) -> Page[WaitingJob]:
        conn = self._db.conn
        rows = conn.execute(_SQL["list_waiting"], (max(limit, 0), max(offset, 0)))
        items = [_waiting(row[0]) for row in rows]
        return Page(items, await self.count_waiting())

    async def get_waiting(self, jids: Sequence[str]) -> dict[str, WaitingJob]:
        tables = _Tables(self._db.conn)
        found = {jid: tables.waiting(jid) for jid in dict.fromkeys(jids)}
        return {jid: job for jid, job in found.items() if job is not None}

    async def count_waiting(self) -> int:
        (count,) = self._db.conn.execute(_SQL["count_waiting"]).fetchone()
        return int(count)
