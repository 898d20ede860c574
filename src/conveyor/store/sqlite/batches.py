"""Batches (``conveyor.store.batches``) in SQLite: the tables of ``sql/batches.sql``, moved
by ``batch_engine`` inside one savepoint of the store's shared transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.store import batch_engine as engine
from conveyor.store.base import Page, SetEntry, SortedSet
from conveyor.store.batches import (
    UNFINISHED,
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
    WaitingJob,
)
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteBatches"]

_SQL = load_queries("batches.sql")
_RESERVATIONS = load_queries("reservations.sql")
_encode = msgspec.msgpack.Encoder().encode
_batch = msgspec.msgpack.Decoder(BatchRecord).decode
_waiting = msgspec.msgpack.Decoder(WaitingJob).decode


def _mark(row: tuple[Any, ...]) -> JobMark:
    jid, state, updated_at, bid, role, expires_at = row
    return JobMark(jid, MarkState(state), updated_at, bid, role, expires_at)


class _Tables:
    """``batch_engine.Tables`` on one connection, inside a savepoint. Size and counter
    changes of the job side are collected and applied by the caller once the step held."""

    def __init__(self, conn: sqlite3.Connection, now: float = 0.0) -> None:
        self.conn = conn
        self.now = now
        self.sets: list[tuple[SortedSet, SetEntry]] = []
        self.grown: dict[SortedSet, int] = {}
        self.processed = 0

    def batch(self, bid: str) -> BatchRecord | None:
        row = self.conn.execute(_SQL["get_batch"], (bid,)).fetchone()
        return None if row is None else _batch(row[0])

    def save_batch(self, batch: BatchRecord) -> None:
        record = _encode(batch)
        args = (batch.expires_at, record, batch.bid)
        if self.conn.execute(_SQL["update_batch"], args).rowcount == 0:
            search = f"{batch.bid} {batch.description}".lower()
            self.conn.execute(_SQL["insert_batch"], (batch.bid, batch.expires_at, search, record))

    def join(self, bid: str, jid: str) -> None:
        (last,) = self.conn.execute(
            "SELECT coalesce(max(seq), 0) FROM batch_jobs WHERE bid = ?", (bid,)
        ).fetchone()
        self.conn.execute(_SQL["join"], (bid, last + 1, jid))

    def add_child(self, parent: str, child: str) -> None:
        self.conn.execute(_SQL["add_child"], (parent, child))

    def set_propagation(self, bid: str, pending: bool) -> None:
        self.conn.execute(_SQL["set_propagate"], (int(pending), bid))

    def mark(self, jid: str) -> JobMark | None:
        row = self.conn.execute(_SQL["get_mark"], (jid, self.now)).fetchone()
        return None if row is None else _mark(row)

    def save_mark(self, mark: JobMark) -> None:
        row = (mark.jid, mark.state, mark.updated_at, mark.bid, mark.role, mark.expires_at)
        self.conn.execute(_SQL["put_mark"], row)

    def waiting(self, jid: str) -> WaitingJob | None:
        row = self.conn.execute(_SQL["get_waiting"], (jid,)).fetchone()
        return None if row is None else _waiting(row[0])

    def save_waiting(self, job: WaitingJob) -> None:
        self.conn.execute(_SQL["put_waiting"], (job.jid, _encode(job)))

    def delete_waiting(self, jid: str) -> None:
        self.conn.execute(_SQL["delete_waiting"], (jid,))

    def waiters(self, dep: str) -> list[str]:
        return [row[0] for row in self.conn.execute(_SQL["waiters"], (dep,))]

    def add_waiter(self, dep: str, waiter: str) -> None:
        self.conn.execute(_SQL["add_waiter"], (dep, waiter))

    def drop_waiters(self, dep: str) -> None:
        self.conn.execute(_SQL["drop_waiters"], (dep,))

    def schedule(self, entry: SetEntry) -> None:
        self.sets.append((SortedSet.SCHEDULED, entry))

    def bury(self, entry: SetEntry) -> None:
        self.sets.append((SortedSet.DEAD, entry))

    def end_reservation(self, jid: str, day: str) -> bool:
        if self.conn.execute(_RESERVATIONS["end_reservation"], (jid,)).rowcount == 0:
            return False
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

    def _create_batches(self) -> None:
        self._db.conn.executescript(_SQL["create"])

    def _flush_batches(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SQL["flush"]):
                conn.execute(statement)

    def _step(self, tables: _Tables) -> None:
        """Write what the engine put in the sets (still inside the savepoint)."""
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
        with self._db.atomic() as conn:
            return engine.create(_Tables(conn), batch)

    async def open_batch(self, bid: str) -> bool:
        with self._db.atomic() as conn:
            tables = _Tables(conn)
            batch = tables.batch(bid)
            if batch is not None:
                batch.committed = False
                tables.save_batch(batch)
        return batch is not None

    async def commit_batch(self, bid: str, now: float, expires_at: float) -> Fired | None:
        with self._db.atomic() as conn:
            tables = _Tables(conn, now)
            fired = engine.commit(tables, bid, now, expires_at)
            self._step(tables)
        self._after(tables)
        return fired

    async def adopt_batch(self, parent: str, child: str, now: float) -> str | None:
        with self._db.atomic() as conn:
            return engine.adopt(_Tables(conn, now), parent, child)

    async def get_batches(self, bids: Sequence[str]) -> dict[str, BatchRecord]:
        tables = _Tables(self._db.conn)
        found = {bid: tables.batch(bid) for bid in dict.fromkeys(bids)}
        return {bid: batch for bid, batch in found.items() if batch is not None}

    async def list_batches(self, search: str, offset: int, limit: int) -> Page[BatchRecord]:
        conn = self._db.conn
        params = {"search": search.lower(), "limit": max(limit, 0), "offset": max(offset, 0)}
        items = [_batch(row[0]) for row in conn.execute(_SQL["list_batches"], params)]
        (total,) = conn.execute(_SQL["count_batches"], {"search": params["search"]}).fetchone()
        return Page(items, total)

    async def batch_children(self, bid: str) -> list[str]:
        return [row[0] for row in self._db.conn.execute(_SQL["children"], (bid,))]

    async def batch_jobs(self, bid: str, offset: int, limit: int) -> Page[JobMark]:
        conn = self._db.conn
        rows = conn.execute(_SQL["batch_jobs"], (bid, max(limit, 0), max(offset, 0)))
        items = [_mark(row) for row in rows]
        (total,) = conn.execute("SELECT count(*) FROM batch_jobs WHERE bid = ?", (bid,)).fetchone()
        return Page(items, total)

    async def propagate(self, child: str, now: float) -> Fired:
        with self._db.atomic() as conn:
            tables = _Tables(conn, now)
            fired = engine.propagate(tables, child, now)
            self._step(tables)
        self._after(tables)
        return fired

    async def pending_propagations(self, limit: int) -> list[str]:
        rows = self._db.conn.execute(_SQL["pending_propagations"], (max(limit, 0),))
        return [row[0] for row in rows]

    async def expire_batches(self, now: float, limit: int) -> int:
        conn = self._db.conn
        bids = [row[0] for row in conn.execute(_SQL["expired_batches"], (now, max(limit, 0)))]
        if bids:
            with self._db.atomic() as conn:
                for bid in bids:
                    conn.execute(_SQL["delete_batch_marks"], (bid,))
                    conn.execute(_SQL["delete_batch_jobs"], (bid,))
                    conn.execute(_SQL["delete_children"], (bid,))
                    conn.execute(_SQL["delete_batch"], (bid,))
        return len(bids)

    async def mark_jobs(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        with self._db.atomic() as conn:
            return engine.mark_jobs(_Tables(conn, now), marks, now)

    async def get_marks(self, jids: Sequence[str], now: float) -> dict[str, JobMark]:
        tables = _Tables(self._db.conn, now)
        found = {jid: tables.mark(jid) for jid in dict.fromkeys(jids)}
        return {jid: mark for jid, mark in found.items() if mark is not None}

    async def unfinished_marks(self, after: str, limit: int) -> list[str]:
        rows = self._db.conn.execute(_SQL["unfinished_marks"], (after, max(limit, 0)))
        return [row[0] for row in rows]

    async def ack_unmarked(self, jids: Sequence[str], day: str) -> tuple[int, list[JobMark]]:
        held: list[JobMark] = []
        ended = 0
        with self._db.atomic() as conn:
            tables = _Tables(conn)
            for jid in jids:
                row = conn.execute(_SQL["get_mark"], (jid, 0.0)).fetchone()
                mark = None if row is None else _mark(row)
                if mark is not None and mark.state in UNFINISHED:
                    held.append(mark)
                elif tables.end_reservation(jid, day):
                    ended += 1
        if ended:
            self._count(day, ended, 0)
        return ended, held

    async def end_jobs(self, ends: Sequence[JobEnd], ctx: EndContext) -> Fired:
        with self._db.atomic() as conn:
            tables = _Tables(conn, ctx.now)
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
