"""Records of the lock spaces (unique jobs) in SQLite: in memory, held by the job rows.

A PUSH with ``unique_for`` claims a lock (``Records.claim_record``): its value is the job's
jid. This process answers every read from a mirror (``space -> key -> Entry``: holder,
expiry, carried by a row?) and what must outlive a crash is written with the job itself: the
INSERT that stores the job's row (``queue_jobs``, or ``set_entries`` for the scheduled, retry
and dead sets) carries the lock's key and expiry in its ``ukey`` and ``ukey_until`` columns
(``row_lock``, asked by every insert of a job row: a dict lookup by jid). A lock thus costs
no page of its own: a separate row, even appended to a table of its own, put one more b-tree
page in each group commit (about 6 us of a unique PUSH's 60; docs/design/admission.md).

Wherever the job goes (queue -> reservation -> retry or dead set, scheduled -> queue), the
row that receives it is inserted by this store, which asks ``row_lock`` again: the lock moves
with the job for as long as the mirror holds it. A release (ACK, FETCH of a
``unique_until=start`` job, a removal) clears the columns of the rows that may still carry it
(the job's reservation, its scheduled/retry/dead entries: index lookups by jid), written just
before the transaction's COMMIT (``Database.before_commit``, as the counters are); an expiry
writes nothing (the rows are read back only while ``ukey_until`` is to come).

A claim that no job row carries by the end of its transaction (a job held somewhere else: a
batch's waiting jobs, an aggregation group; ``put_records``) falls back to a row of its own
in the ``claims`` table (``INTEGER PRIMARY KEY`` in claim order, no index), as every lock did
in schema version 3; such rows are deleted when the lock is released. At open, and after a
failed commit (whose rows are gone with its locks), the mirror is read again from both: the
``claims`` table and the job rows whose lock has not expired. Expired locks are skipped by
every reader and dropped by ``purge_records`` (a heap of expiry times: no scan, no index).
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Sequence

import msgspec

from conveyor.store.records import Record
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["LOCK_SPACES", "Claims"]

_SQL = load_queries("claims.sql")

LOCK_SPACES = frozenset({"unique"})
"""The spaces kept here rather than in ``records``: a unique job's lock, claimed by every
PUSH with ``unique_for`` (``manager/features/unique.py``'s ``SPACE``); the value is the jid of
the job that holds it."""

_ROW_SPACE = "unique"
"""The lock space the job rows carry: a jid holds at most one lock there (its latest claim is
the one its rows carry)."""


class Entry(msgspec.Struct, gc=False):
    """A lock in the mirror, changed in place by a refresh. Not tracked by the collector
    (no field holds a container): a mirror of many locks costs its passes nothing."""

    id: int
    """Its row in ``claims`` (0: none)."""
    value: bytes
    expires_at: float | None
    carried: bool
    """Some job row may hold it (cleared at release)."""


NO_LOCK: tuple[None, None] = (None, None)
"""``row_lock`` of a job that holds no lock: its row's (ukey, ukey_until)."""

_COMPACT_AFTER = 1024
"""The expiry heap is rebuilt when it holds this many more entries than twice the locks (a
released lock leaves its entry behind until its expiry comes)."""


_CHECK_EVERY = 64
"""How many entries the expiry heap takes between two counts of the locks (the compaction
may come that many entries late)."""


def _jid(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class Claims:
    """The lock spaces of one SQLite store (``SQLiteRecords`` delegates to it)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._spaces: dict[str, dict[str, Entry]] | None = None
        self._expiries: list[tuple[float, int, str, str]] = []  # (expires_at, 0, space, key)
        self._next_id = 1
        self._check_at = _COMPACT_AFTER  # the heap's size at which it is weighed again
        self._rows: dict[str, Entry] = {}  # the mirror of the space job rows carry
        self._by_jid: dict[str, str] = {}  # holder's jid -> the key of its (latest) lock there
        # what the open transaction changed, written by ``write`` before its COMMIT
        self._fresh: dict[str, Entry] = {}  # key -> entry: claimed, carried by no row yet
        self._clears: set[str] = set()  # jids whose rows must no longer hold a lock
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
        self._rows, self._by_jid = {}, {}
        self._fresh, self._clears = {}, set()
        self._inserts, self._updates, self._deletes = {}, {}, []

    def row_lock(self, jid: str) -> tuple[str, float | None] | tuple[None, None]:
        """(ukey, ukey_until) of a row being inserted for the job ``jid``: the lock it holds,
        which the row now carries, else ``NO_LOCK``."""
        if self._spaces is None:
            self._load()
        key = self._by_jid.get(jid)
        if key is None:
            return NO_LOCK
        entry = self._rows[key]
        entry.carried = True
        if self._fresh:
            self._fresh.pop(key, None)
        return key, entry.expires_at

    def write(self, conn: sqlite3.Connection) -> None:
        """The changes of the open transaction, in it (just before its COMMIT)."""
        if self._fresh:
            self._fall_back()
        if self._clears:
            jids = [(jid,) for jid in self._clears]
            conn.executemany(_SQL["clear_reserved"], jids)
            conn.executemany(_SQL["clear_entries"], jids)
            self._clears = set()
        if self._deletes:
            conn.executemany(_SQL["delete"], [(row_id,) for row_id in self._deletes])
            self._deletes = []
        if self._inserts:
            conn.executemany(_SQL["insert"], self._inserts.values())
            self._inserts = {}
        if self._updates:
            conn.executemany(_SQL["refresh"], [(e, i) for i, e in self._updates.items()])
            self._updates = {}

    def _fall_back(self) -> None:
        """The claims of this transaction that no job row carries get a row in ``claims``."""
        rows = self._rows
        for key, entry in self._fresh.items():
            if entry.id or rows.get(key) is not entry:
                continue  # it has its row already (refreshed), or released since
            row_id = entry.id = self._next_id
            self._next_id = row_id + 1
            self._inserts[row_id] = (row_id, _ROW_SPACE, key, entry.expires_at, entry.value)
        self._fresh = {}

    def _space(self, space: str) -> dict[str, Entry]:
        spaces = self._spaces
        if spaces is None:
            spaces = self._load()
        found = spaces.get(space)
        if found is None:
            found = spaces[space] = {}
        return found

    def _load(self) -> dict[str, dict[str, Entry]]:
        """The mirror, from the ``claims`` rows and the job rows holding a live lock."""
        spaces: dict[str, dict[str, Entry]] = {}
        last = 0
        for row_id, space, key, expires_at, value in self._db.read(_SQL["load"]):
            spaces.setdefault(space, {})[key] = Entry(row_id, bytes(value), expires_at, False)
            last = row_id
        rows = spaces.setdefault(_ROW_SPACE, {})
        replaced = []  # claims rows of an older holder than a job row's: deleted next commit
        for key, jid, until in self._db.read(_SQL["load_rows"], (time.time(),)):
            gone = _carry(rows, key, jid, until)
            if gone:
                replaced.append(gone)
        expiries: list[tuple[float, int, str, str]] = []
        for space, entries in spaces.items():
            for key, entry in entries.items():
                if entry.expires_at is not None:
                    expiries.append((entry.expires_at, 0, space, key))
        heapq.heapify(expiries)
        self._spaces, self._expiries, self._next_id = spaces, expiries, last + 1
        self._rows = rows
        self._by_jid = {_jid(entry.value): key for key, entry in rows.items()}
        self._deletes.extend(replaced)
        self._check_at = _COMPACT_AFTER
        return spaces

    def _drop(self, row_id: int) -> None:
        """The row ``row_id`` goes: never written if it was new in this transaction."""
        if self._inserts.pop(row_id, None) is None:
            self._deletes.append(row_id)
            self._updates.pop(row_id, None)

    def _release(self, space: str, key: str, entry: Entry, rows: bool) -> None:
        """``entry`` (of ``key`` in ``space``) is no longer held: its ``claims`` row goes,
        and with ``rows`` the job rows that may carry it no longer do."""
        if entry.id:
            self._drop(entry.id)
        if space == _ROW_SPACE:
            jid = _jid(entry.value)
            if self._by_jid.get(jid) == key:
                del self._by_jid[jid]
            if rows and entry.carried:
                self._clears.add(jid)

    def _insert(
        self, space: str, record: Record, old: Entry | None, entries: dict[str, Entry]
    ) -> None:
        """Add ``record`` (in place of ``old``, the entry its key had, in ``entries``, the
        mirror of ``space``): carried by the job row inserted next for its jid, else by a
        row of its own (``_fall_back``)."""
        self._db.writer()  # the transaction it goes into (refused during an outage)
        key = record.key
        if old is not None:  # an expired lock taken over (or put over): its rows let go
            self._release(space, key, old, rows=True)
        entry = entries[key] = Entry(0, record.value, record.expires_at, False)
        if space == _ROW_SPACE:
            jid = _jid(record.value)
            if jid in self._clears:  # released then claimed again in this transaction:
                self._clears.discard(jid)  # cleared now, before a row carries the new lock
                self._db.write(_SQL["clear_reserved"], (jid,))
                self._db.write(_SQL["clear_entries"], (jid,))
            self._by_jid[jid] = key
            self._fresh[key] = entry
        else:  # a lock space no job row carries (none so far): a row of its own
            row_id = entry.id = self._next_id
            self._next_id = row_id + 1
            self._inserts[row_id] = (row_id, space, key, record.expires_at, record.value)
        if record.expires_at is not None:
            self._expire_at(record.expires_at, space, record.key)

    def _expire_at(self, expires_at: float, space: str, key: str) -> None:
        expiries = self._expiries
        heapq.heappush(expiries, (expires_at, 0, space, key))
        if len(expiries) > self._check_at:
            self._weigh()

    def _weigh(self) -> None:
        """Rebuild the expiry heap if it holds many more entries than locks (weighed every
        _CHECK_EVERY entries, not at each claim: the compaction may come that many late)."""
        expiries = self._expiries
        self._check_at = len(expiries) + _CHECK_EVERY
        held = sum(len(entries) for entries in (self._spaces or {}).values())
        if len(expiries) > 2 * held + _COMPACT_AFTER:
            self._expiries = [
                (e.expires_at, 0, name, k)
                for name, entries in (self._spaces or {}).items()
                for k, e in entries.items()
                if e.expires_at is not None
            ]
            heapq.heapify(self._expiries)

    def claim(self, space: str, record: Record, now: float) -> bytes | None:
        if space == _ROW_SPACE and self._spaces is not None:
            rows = self._rows
            key = record.key
            held = rows.get(key)
            if held is None and not self._clears:  # every unique PUSH: _insert, inline
                self._db.join()  # the transaction it goes into (refused during an outage)
                value, expires_at = record.value, record.expires_at
                entry = rows[key] = Entry(0, value, expires_at, False)
                self._by_jid[value.decode("utf-8", "surrogateescape")] = key
                self._fresh[key] = entry
                if expires_at is not None:  # _expire_at, inline
                    expiries = self._expiries
                    heapq.heappush(expiries, (expires_at, 0, space, key))
                    if len(expiries) > self._check_at:
                        self._weigh()
                return None
            entries = rows
        else:
            entries = self._space(space)
            held = entries.get(record.key)
        if held is None:
            self._insert(space, record, None, entries)
            return None
        value, expires_at = held.value, held.expires_at
        if value == record.value:  # claimed again by its holder (a retried PUSH): refreshed
            self._db.writer()
            row_id = held.id
            if row_id:
                row = self._inserts.get(row_id)
                if row is None:
                    self._updates[row_id] = record.expires_at
                else:
                    self._inserts[row_id] = (*row[:3], record.expires_at, row[4])
            elif space == _ROW_SPACE:
                self._fresh[record.key] = held  # the retried PUSH's row carries it
            held.expires_at = record.expires_at
            if record.expires_at is not None:
                self._expire_at(record.expires_at, space, record.key)
            return None
        if expires_at is not None and expires_at <= now:  # expired: taken over
            self._insert(space, record, held, entries)
            return None
        return value

    def put(self, space: str, records: Sequence[Record]) -> None:
        entries = self._space(space)
        for record in records:
            self._insert(space, record, entries.get(record.key), entries)

    def get(self, space: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        entries = self._space(space)
        found = {}
        for key in keys:
            held = entries.get(key)
            if held is not None and (held.expires_at is None or held.expires_at > now):
                found[key] = Record(key, held.value, held.expires_at)
        return found

    def delete(self, space: str, keys: Sequence[str], if_value: bytes | None) -> int:
        entries = self._space(space)
        chosen = []
        for key in dict.fromkeys(keys):
            held = entries.get(key)
            if held is not None and (if_value is None or held.value == if_value):
                chosen.append(key)
        if not chosen:
            return 0
        self._db.writer()
        for key in chosen:
            self._release(space, key, entries.pop(key), rows=True)
        return len(chosen)

    def page(self, space: str, now: float, after: str, limit: int) -> list[Record]:
        entries = self._space(space)
        keys = sorted(key for key in entries if key > after)
        found: list[Record] = []
        for key in keys:
            if len(found) >= limit:
                break
            held = entries[key]
            if held.expires_at is None or held.expires_at > now:
                found.append(Record(key, held.value, held.expires_at))
        return found

    def count(self, space: str, now: float) -> int:
        return sum(
            1 for e in self._space(space).values() if e.expires_at is None or e.expires_at > now
        )

    def purge(self, now: float, limit: int) -> int:
        """Drop up to ``limit`` expired locks; returns how many. The job rows that carry
        them keep them: the rows are read back only while their lock is to come."""
        if self._spaces is None:
            self._load()
        expiries = self._expiries
        if not expiries or expiries[0][0] > now or limit <= 0:
            return 0
        self._db.writer()  # before anything is popped (refused during an outage)
        purged = 0
        while expiries and expiries[0][0] <= now and purged < limit:
            expires_at, _tie, space, key = heapq.heappop(expiries)
            entries = self._space(space)
            held = entries.get(key)
            if held is None or held.expires_at != expires_at:
                continue  # released or refreshed since (or a duplicate entry)
            del entries[key]
            self._release(space, key, held, rows=False)
            purged += 1
        return purged

    def flush(self) -> None:
        with self._db.atomic() as conn:
            conn.execute(_SQL["flush"])
        self._rows, self._by_jid = {}, {}
        self._spaces = {_ROW_SPACE: self._rows}
        self._expiries = []
        self._check_at = _COMPACT_AFTER
        self._fresh, self._clears = {}, set()
        self._inserts, self._updates, self._deletes = {}, {}, []


def _carry(entries: dict[str, Entry], key: str, jid: str, until: float | None) -> int:
    """A job row's lock into the mirror at load; of two holders of one key (an expired lock
    taken over, a retried PUSH's two rows) the latest expiry wins. Returns the id of the
    ``claims`` row this replaced (0: none)."""
    held = entries.get(key)
    if held is not None:
        later = held.expires_at is not None and (until is None or until > held.expires_at)
        if held.value == jid.encode():
            held.carried = True
            if later:
                held.expires_at = until
            return 0
        if not later:
            return 0
    entries[key] = Entry(0, jid.encode(), until, True)
    return held.id if held is not None else 0
