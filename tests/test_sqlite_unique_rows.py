"""Unique locks in the SQLite job rows (schema version 4, store/sqlite/claims.py), through the
Store methods on a real file: where a lock is written, the fallback for a claim no job row
carries, a release and a claim again within one transaction, and a version-3 file (locks in
the ``claims`` table) upgraded in place."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

from conveyor.store.base import FailOutcome, QueuedJob, SetEntry, SetMove, SortedSet
from conveyor.store.records import Record
from conveyor.store.sqlite import SQLiteStore
from conveyor.store.sqlite.schema import SCHEMA_VERSION

FAR = time.time() + 3600


def sql(path: Path, query: str) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


def payload(jid: str) -> bytes:
    return b'{"jid":"' + jid.encode() + b'","jobtype":"U","args":[],"queue":"default"}'


async def opened(path: Path) -> SQLiteStore:
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    return store


async def push_unique(store: SQLiteStore, key: str, jid: str, until: float = FAR) -> None:
    """What a unique PUSH does on SQLite: the claim, then the job, in one step."""
    assert store.claim_record_now("unique", Record(key, jid.encode(), until), time.time()) is None
    await store.enqueue([QueuedJob("default", jid, payload(jid), 60)])


async def holders(store: SQLiteStore, *keys: str) -> dict[str, bytes]:
    found = await store.get_records("unique", list(keys), time.time())
    return {key: record.value for key, record in found.items()}


async def test_the_lock_is_written_in_the_job_row_and_follows_the_job(tmp_path: Path) -> None:
    path = tmp_path / "rows.db"
    store = await opened(path)
    try:
        await push_unique(store, "k1", "j1")
        await store.durable()
        assert sql(path, "SELECT jid, ukey, ukey_until FROM queue_jobs") == [("j1", "k1", FAR)]
        assert sql(path, "SELECT count(*) FROM claims") == [(0,)]
        # failed: the retry entry carries it; back in the queue: the queue row does
        taken = await store.reserve(["default"], "w1", time.time())
        assert [r.jid for r in taken] == ["j1"]
        outcome = FailOutcome(SortedSet.RETRIES, FAR, payload("j1"), "default", "U")
        assert await store.fail("j1", outcome, "2026-01-01")
        await store.durable()
        assert sql(path, "SELECT jid, ukey FROM set_entries") == [("j1", "k1")]
        entry = (await store.due_entries(SortedSet.RETRIES, FAR + 1, 10))[0]
        job = QueuedJob("default", "j1", payload("j1"), 60)
        assert await store.move_to_queue(SortedSet.RETRIES, [SetMove(entry, job)]) == 1
        assert sql(path, "SELECT jid, ukey, ukey_until FROM queue_jobs") == [("j1", "k1", FAR)]
        # a completed job holds no lock, even while the lock is still held
        done = SetEntry(FAR, "j1", payload("j1"), "default", "U")
        await store.add_to_set(SortedSet.COMPLETED, [done])
        assert sql(path, "SELECT ukey FROM set_entries WHERE name = 'completed'") == [(None,)]
    finally:
        await store.close()
    store = await opened(path)
    try:
        assert await holders(store, "k1") == {"k1": b"j1"}
    finally:
        await store.close()


async def test_a_claim_no_job_row_carries_gets_a_row_of_its_own(tmp_path: Path) -> None:
    """A lock whose job is kept elsewhere (a batch's waiting jobs, an aggregation group) is
    written to ``claims`` when its transaction commits, and deleted with its release."""
    path = tmp_path / "fallback.db"
    store = await opened(path)
    try:
        assert store.claim_record_now("unique", Record("k", b"waiting", FAR), time.time()) is None
        await store.durable()
        assert sql(path, "SELECT key, value FROM claims") == [("k", b"waiting")]
    finally:
        await store.close()
    store = await opened(path)
    try:
        assert await holders(store, "k") == {"k": b"waiting"}
        assert await store.delete_records("unique", ["k"], if_value=b"waiting") == 1
        await store.enqueue([QueuedJob("default", "other", payload("other"), 60)])
        await store.durable()
        assert sql(path, "SELECT count(*) FROM claims") == [(0,)]
    finally:
        await store.close()


async def test_a_release_then_a_claim_again_in_one_transaction_keeps_the_new_lock(
    tmp_path: Path,
) -> None:
    """The release clears the rows of its jid; the claim again (a retried PUSH of the same
    jid) must not lose its own row's lock to that clear."""
    path = tmp_path / "again.db"
    store = await opened(path)
    try:
        await push_unique(store, "k", "j1")
        await store.durable()
        taken = await store.reserve(["default"], "w1", time.time())
        assert [r.jid for r in taken] == ["j1"]
        assert await store.delete_records("unique", ["k"], if_value=b"j1") == 1  # at FETCH
        await push_unique(store, "k", "j1", FAR + 5)  # the same jid pushed again
        await store.durable()
        rows = sql(path, "SELECT ukey, ukey_until FROM queue_jobs ORDER BY seq")
        assert rows == [(None, None), ("k", FAR + 5)]  # the reservation's lock cleared
    finally:
        await store.close()
    store = await opened(path)
    try:
        assert await holders(store, "k") == {"k": b"j1"}
    finally:
        await store.close()


# The tables of SCHEMA_VERSION 3 this test writes, as conveyor wrote them (frozen: never edit).
SCHEMA_V3 = """
CREATE TABLE queues (name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE queue_jobs (
    seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, jid TEXT NOT NULL,
    reserve_for INTEGER NOT NULL, crc INTEGER NOT NULL, wid TEXT, reserved_at REAL,
    expires_at REAL, payload BLOB NOT NULL
);
CREATE INDEX queue_jobs_fifo ON queue_jobs (queue, seq) WHERE expires_at IS NULL;
CREATE UNIQUE INDEX queue_jobs_reserved ON queue_jobs (jid) WHERE expires_at IS NOT NULL;
CREATE TABLE set_entries (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, jid TEXT NOT NULL, score REAL NOT NULL,
    queue TEXT NOT NULL, jobtype TEXT NOT NULL, crc INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE UNIQUE INDEX set_entries_jid ON set_entries (name, jid);
CREATE INDEX set_entries_score ON set_entries (name, score, jid);
CREATE TABLE claims (
    id INTEGER PRIMARY KEY, space TEXT NOT NULL, key TEXT NOT NULL, expires_at REAL,
    value BLOB NOT NULL
);
PRAGMA user_version = 3;
"""


def make_v3_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA_V3)
        conn.execute("INSERT INTO queues VALUES ('default', 0)")
        conn.executemany(
            "INSERT INTO queue_jobs (queue, jid, reserve_for, crc, payload)"
            " VALUES ('default', ?, 60, ?, ?)",
            [(jid, zlib.crc32(payload(jid)), payload(jid)) for jid in ("old1", "plain")],
        )
        conn.executemany(
            "INSERT INTO claims (space, key, expires_at, value) VALUES ('unique', ?, ?, ?)",
            [("held", FAR, b"old1"), ("expired", time.time() - 1, b"gone")],
        )
        conn.commit()


async def test_a_version_3_file_keeps_its_locks_and_writes_new_ones_in_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v3.db"
    make_v3_database(path)
    store = await opened(path)
    try:
        assert sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert SCHEMA_VERSION == 4
        for table in ("queue_jobs", "set_entries"):
            columns = [row[1] for row in sql(path, f"PRAGMA table_info({table})")]
            assert columns[-2:] == ["ukey", "ukey_until"], table
        assert await store.queue_sizes() == {"default": 2}
        assert await holders(store, "held", "expired") == {"held": b"old1"}
        await push_unique(store, "new", "new1")
        await store.durable()
        assert sql(path, "SELECT jid, ukey FROM queue_jobs WHERE ukey IS NOT NULL") == [
            ("new1", "new")
        ]
        assert sql(path, "SELECT key FROM claims ORDER BY id") == [("held",), ("expired",)]
    finally:
        await store.close()
    store = await opened(path)
    try:
        assert await holders(store, "held", "new") == {"held": b"old1", "new": b"new1"}
        # the old lock is released as before: its claims row goes
        assert await store.delete_records("unique", ["held"], if_value=b"old1") == 1
        await store.enqueue([QueuedJob("default", "more", payload("more"), 60)])
        await store.durable()
        assert sql(path, "SELECT key FROM claims") == [("expired",)]
    finally:
        await store.close()


async def test_a_claims_row_behind_a_job_rows_later_lock_is_deleted(tmp_path: Path) -> None:
    """A key held in ``claims`` by a lock that has expired and in a job row by its new holder
    (the takeover's commit lost its delete, or a file written so by hand): the job row wins,
    and the stale ``claims`` row goes with the next commit instead of being read forever."""
    path = tmp_path / "stale.db"
    store = await opened(path)
    try:
        await push_unique(store, "k", "new")
        await store.durable()
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO claims (space, key, expires_at, value) VALUES ('unique', 'k', ?, ?)",
            (time.time() - 10, b"old"),
        )
        conn.commit()
    store = await opened(path)
    try:
        assert await holders(store, "k") == {"k": b"new"}
        await store.enqueue([QueuedJob("default", "plain", payload("plain"), 60)])
        await store.durable()
        assert sql(path, "SELECT count(*) FROM claims") == [(0,)]
    finally:
        await store.close()
