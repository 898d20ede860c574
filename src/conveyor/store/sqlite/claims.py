"""Records of the lock spaces (unique jobs) in SQLite: in memory, over an append-only table.

A PUSH with ``unique_for`` claims a lock (``Records.claim_record``). In the ``records`` table
that cost a PUSH an insert into three b-trees, two of them at a random page (the primary key,
a sha256 digest; the expiry index): 5.9 WAL pages and 54 us per PUSH with its job, against
2.2 pages and 22 us without (docs/design/admission.md). Here the lock is a row appended to
``claims`` (``INTEGER PRIMARY KEY`` in insertion order, no index: a claim writes the table's
last page, which the next claims of the same commit share), and this process answers every
read from a mirror: ``space -> key -> [id, value, expires_at]``. The rows are not written one
statement per claim: the changes of a transaction are written just before its ``COMMIT``
(``Database.before_commit``, as the counters are), each kind with one ``executemany``, and a
lock claimed and released within one commit is never written at all.

One server owns a SQLite file, as for throttle slots (``limits.py``), so the mirror is the
truth between commits; what must outlive a crash is the row, written in the same transaction
as the job it locks for (``Records``: the caller's durable write follows in the same step).
The mirror is read from the table at open, and again after a failed commit (the rows of the
lost transaction are gone with it: so are their locks). Expired locks are skipped by every
reader and deleted by ``purge_records`` (a heap of expiry times: no scan, no index).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from typing import Any, TypeAlias

from conveyor.store.records import Record
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["LOCK_SPACES", "Claims"]

_SQL = load_queries("claims.sql")

LOCK_SPACES = frozenset({"unique"})
"""The spaces kept here rather than in ``records``: a unique job's lock, claimed by every
PUSH with ``unique_for`` (``manager/features/unique.py``'s ``SPACE``)."""

Entry: TypeAlias = "list[Any]"
"""[id, value, expires_at]: a list, so that a refresh changes it in place."""

_COMPACT_AFTER = 1024
"""The expiry heap is rebuilt when it holds this many more entries than twice the locks (a
released lock leaves its entry behind until its expiry comes)."""


_CHECK_EVERY = 64
"""How many entries the expiry heap takes between two counts of the locks (the compaction
may come that many entries late)."""


class Claims:
    """The lock spaces of one SQLite store (``SQLiteRecords`` delegates to it)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._spaces: dict[str, dict[str, Entry]] | None = None
        self._expiries: list[tuple[float, int, str, str]] = []  # (expires_at, id, space, key)
        self._next_id = 1
        self._check_at = _COMPACT_AFTER  # the heap's size at which it is weighed again
        # what the open transaction changed, written by ``write`` before its COMMIT
        self._inserts: dict[int, tuple[int, str, str, float | None, bytes]] = {}
        self._updates: dict[int, float | None] = {}  # written rows' new expiry
        self._deletes: list[int] = []  # written rows

    def create(self) -> None:
        """The table, and the locks an older file kept in ``records`` moved into it; from
        now on the changes are written before each commit."""
        conn = self._db.conn
        conn.executescript(_SQL["create"])
        spaces = sorted(LOCK_SPACES)
        marks = ",".join("?" for _ in spaces)
        moved = conn.execute(_SQL["count_old"].replace("?spaces", marks), spaces).fetchone()[0]
        if moved:
            with conn:
                conn.execute(_SQL["move_old"].replace("?spaces", marks), spaces)
                conn.execute(_SQL["drop_old"].replace("?spaces", marks), spaces)
        self.forget()
        committing = self._db.before_commit

        def write(conn: sqlite3.Connection) -> None:
            self.write(conn)
            committing(conn)

        self._db.before_commit = write

    def forget(self) -> None:
        """Drop the mirror and the changes not written (a failed commit): read again from
        what is committed."""
        self._spaces = None
        self._expiries = []
        self._check_at = _COMPACT_AFTER
        self._inserts, self._updates, self._deletes = {}, {}, []

    def write(self, conn: sqlite3.Connection) -> None:
        """The changes of the open transaction, in it (just before its COMMIT)."""
        if self._deletes:
            conn.executemany(_SQL["delete"], [(row_id,) for row_id in self._deletes])
            self._deletes = []
        if self._inserts:
            conn.executemany(_SQL["insert"], self._inserts.values())
            self._inserts = {}
        if self._updates:
            conn.executemany(_SQL["refresh"], [(e, i) for i, e in self._updates.items()])
            self._updates = {}

    def _space(self, space: str) -> dict[str, Entry]:
        spaces = self._spaces
        if spaces is None:
            spaces = self._load()
        found = spaces.get(space)
        if found is None:
            found = spaces[space] = {}
        return found

    def _load(self) -> dict[str, dict[str, Entry]]:
        spaces: dict[str, dict[str, Entry]] = {}
        expiries: list[tuple[float, int, str, str]] = []
        last = 0
        for row_id, space, key, expires_at, value in self._db.read(_SQL["load"]):
            spaces.setdefault(space, {})[key] = [row_id, bytes(value), expires_at]
            if expires_at is not None:
                expiries.append((expires_at, row_id, space, key))
            last = row_id
        heapq.heapify(expiries)
        self._spaces, self._expiries, self._next_id = spaces, expiries, last + 1
        self._check_at = _COMPACT_AFTER
        return spaces

    def _drop(self, row_id: int) -> None:
        """The row ``row_id`` goes: never written if it was new in this transaction."""
        if self._inserts.pop(row_id, None) is None:
            self._deletes.append(row_id)
            self._updates.pop(row_id, None)

    def _insert(
        self, space: str, record: Record, old: Entry | None, entries: dict[str, Entry]
    ) -> None:
        """Add ``record`` (in place of ``old``, the entry its key had, in ``entries``, the
        mirror of ``space``)."""
        self._db.writer()  # the transaction it goes into (refused during an outage)
        if old is not None:
            self._drop(old[0])
        row_id = self._next_id
        self._next_id = row_id + 1
        self._inserts[row_id] = (row_id, space, record.key, record.expires_at, record.value)
        entries[record.key] = [row_id, record.value, record.expires_at]
        if record.expires_at is not None:
            self._expire_at(record.expires_at, row_id, space, record.key)

    def _expire_at(self, expires_at: float, row_id: int, space: str, key: str) -> None:
        expiries = self._expiries
        heapq.heappush(expiries, (expires_at, row_id, space, key))
        if len(expiries) > self._check_at:  # counted every _CHECK_EVERY entries, not each
            self._check_at = len(expiries) + _CHECK_EVERY
            held = sum(len(entries) for entries in (self._spaces or {}).values())
            if len(expiries) > 2 * held + _COMPACT_AFTER:
                self._expiries = [
                    (e[2], e[0], name, k)
                    for name, entries in (self._spaces or {}).items()
                    for k, e in entries.items()
                    if e[2] is not None
                ]
                heapq.heapify(self._expiries)

    def claim(self, space: str, record: Record, now: float) -> bytes | None:
        entries = self._space(space)
        held = entries.get(record.key)
        if held is None:
            self._insert(space, record, None, entries)
            return None
        row_id, value, expires_at = held
        if value == record.value:  # claimed again by its holder (a retried PUSH): refreshed
            self._db.writer()
            row = self._inserts.get(row_id)
            if row is None:
                self._updates[row_id] = record.expires_at
            else:
                self._inserts[row_id] = (*row[:3], record.expires_at, row[4])
            held[2] = record.expires_at
            if record.expires_at is not None:
                self._expire_at(record.expires_at, row_id, space, record.key)
            return None
        if expires_at is not None and expires_at <= now:  # expired: taken over
            self._insert(space, record, held, entries)
            return None
        return value  # type: ignore[no-any-return]

    def put(self, space: str, records: Sequence[Record]) -> None:
        entries = self._space(space)
        for record in records:
            self._insert(space, record, entries.get(record.key), entries)

    def get(self, space: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        entries = self._space(space)
        found = {}
        for key in keys:
            held = entries.get(key)
            if held is not None and (held[2] is None or held[2] > now):
                found[key] = Record(key, held[1], held[2])
        return found

    def delete(self, space: str, keys: Sequence[str], if_value: bytes | None) -> int:
        entries = self._space(space)
        chosen = []
        for key in dict.fromkeys(keys):
            held = entries.get(key)
            if held is not None and (if_value is None or held[1] == if_value):
                chosen.append(key)
        if not chosen:
            return 0
        self._db.writer()
        for key in chosen:
            self._drop(entries.pop(key)[0])
        return len(chosen)

    def page(self, space: str, now: float, after: str, limit: int) -> list[Record]:
        entries = self._space(space)
        keys = sorted(key for key in entries if key > after)
        found: list[Record] = []
        for key in keys:
            if len(found) >= limit:
                break
            _row_id, value, expires_at = entries[key]
            if expires_at is None or expires_at > now:
                found.append(Record(key, value, expires_at))
        return found

    def count(self, space: str, now: float) -> int:
        return sum(1 for e in self._space(space).values() if e[2] is None or e[2] > now)

    def purge(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` expired locks; returns how many."""
        if self._spaces is None:
            self._load()
        expiries = self._expiries
        if not expiries or expiries[0][0] > now or limit <= 0:
            return 0
        self._db.writer()  # before anything is popped (refused during an outage)
        purged = 0
        while expiries and expiries[0][0] <= now and purged < limit:
            expires_at, row_id, space, key = heapq.heappop(expiries)
            entries = self._space(space)
            held = entries.get(key)
            if held is None or held[0] != row_id or held[2] != expires_at:
                continue  # released, refreshed or replaced since (or a duplicate entry)
            del entries[key]
            self._drop(row_id)
            purged += 1
        return purged

    def flush(self) -> None:
        with self._db.atomic() as conn:
            conn.execute(_SQL["flush"])
        self._spaces = {}
        self._expiries = []
        self._check_at = _COMPACT_AFTER
        self._inserts, self._updates, self._deletes = {}, {}, []
