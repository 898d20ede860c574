"""A version-2 SQLite file (reservations in a table of their own) opened by this conveyor.

Schema version 3 keeps a reservation as its queue row, claimed in place (docs/design/sqlite.md,
"Claiming in place"). A file written by conveyor at version 2 is upgraded in place when it is
opened: every queued job keeps its place in its queue, every reservation its worker, times and
payload, and a damaged payload is still found and moved aside.
"""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from pathlib import Path

from conveyor.store.base import QueuedJob, Reservation, SortedSet
from conveyor.store.sqlite import SQLiteStore
from conveyor.store.sqlite.schema import SCHEMA_VERSION

# The schema of SCHEMA_VERSION 2, as conveyor wrote it (frozen: never edit).
SCHEMA_V2 = """
CREATE TABLE queues (name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE queue_jobs (
    seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, jid TEXT NOT NULL,
    reserve_for INTEGER NOT NULL, crc INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX queue_jobs_fifo ON queue_jobs (queue, seq);
CREATE TABLE reservations (
    jid TEXT PRIMARY KEY, queue TEXT NOT NULL, wid TEXT NOT NULL, reserved_at REAL NOT NULL,
    expires_at REAL NOT NULL, crc INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at, jid);
CREATE INDEX reservations_age ON reservations (reserved_at, jid);
CREATE TABLE set_entries (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, jid TEXT NOT NULL, score REAL NOT NULL,
    queue TEXT NOT NULL, jobtype TEXT NOT NULL, crc INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE UNIQUE INDEX set_entries_jid ON set_entries (name, jid);
CREATE INDEX set_entries_score ON set_entries (name, score, jid);
CREATE TABLE counters (
    day TEXT PRIMARY KEY, processed INTEGER NOT NULL, failures INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE damaged_jobs (
    id INTEGER PRIMARY KEY, found_at REAL NOT NULL, source TEXT NOT NULL, jid TEXT NOT NULL,
    queue TEXT NOT NULL, crc INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
PRAGMA user_version = 2;
"""


def payload(jid: str) -> bytes:
    return b'{"jid":"' + jid.encode() + b'","jobtype":"Work","args":[]}'


def make_v2_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA_V2)
        conn.executemany("INSERT INTO queues VALUES (?, ?)", [("default", 0), ("slow", 1)])
        queued = [(12, "default", "q2"), (5, "default", "q1"), (9, "slow", "q3")]
        conn.executemany(
            "INSERT INTO queue_jobs VALUES (?, ?, ?, 60, ?, ?)",
            [(seq, q, jid, zlib.crc32(payload(jid)), payload(jid)) for seq, q, jid in queued],
        )
        reserved = [("r1", "w1", 10.0, 70.0), ("r2", "w2", 20.0, 5000.0), ("r3", "w1", 30.0, 90.0)]
        conn.executemany(
            "INSERT INTO reservations VALUES (?, 'default', ?, ?, ?, ?, ?)",
            [
                (jid, w, at, until, zlib.crc32(payload(jid)), payload(jid))
                for jid, w, at, until in reserved
            ],
        )
        # r3's payload changed on disk after it was written: its checksum no longer matches
        conn.execute("UPDATE reservations SET payload = ? WHERE jid = 'r3'", (b'{"jid":"r3"}',))
        conn.execute(
            "INSERT INTO set_entries (name, jid, score, queue, jobtype, crc, payload)"
            " VALUES ('retries', 's1', 5.0, 'default', 'Work', ?, ?)",
            (zlib.crc32(payload("s1")), payload("s1")),
        )
        conn.execute("INSERT INTO counters VALUES ('', 7, 2)")
        conn.commit()


def sql(path: Path, query: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


async def test_a_version_2_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    make_v2_database(path)

    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.queue_sizes() == {"default": 2, "slow": 1}
        assert await store.paused_queues() == {"slow"}
        assert await store.get_reservation("r1") == Reservation(
            "r1", "default", payload("r1"), "w1", 10.0, 70.0
        )
        page = await store.list_reservations(0, 10)
        assert [r.jid for r in page.items] == ["r1", "r2"]
        assert page.total == 2  # r3 was moved aside at open, damaged
        assert [r.jid for r in await store.expired_reservations(100.0, 10)] == ["r1"]
        assert [e.jid for e in await store.due_entries(SortedSet.RETRIES, 10.0, 5)] == ["s1"]
        assert (await store.counters()).processed == 7

        await store.enqueue([QueuedJob("default", "q4", payload("q4"), 60)])
        taken = await store.reserve(["default"], "w3", 100.0, count=5)
        assert [(r.jid, r.expires_at) for r in taken] == [
            ("q1", 160.0),
            ("q2", 160.0),
            ("q4", 160.0),
        ]
        assert await store.ack(["r1"], "2026-01-01") == 1
        assert await store.extend_reservation("r2", 9000.0)
    finally:
        await store.close()

    assert sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 4
    assert sql(path, "SELECT type FROM sqlite_master WHERE name = 'reservations'") == [("view",)]
    columns = [row[1] for row in sql(path, "PRAGMA table_info(queue_jobs)")]
    # version 3 rebuilt the table with the payload last; version 4 appended the unique lock
    assert columns[-3:] == ["payload", "ukey", "ukey_until"]
    assert sql(path, "SELECT source, jid, payload FROM damaged_jobs") == [
        ("reservations", "r3", b'{"jid":"r3"}')
    ]

    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.queue_sizes() == {"default": 0, "slow": 1}
        page = await store.list_reservations(0, 10)
        assert [(r.jid, r.wid, r.expires_at) for r in page.items] == [
            ("r2", "w2", 9000.0),
            ("q1", "w3", 160.0),
            ("q2", "w3", 160.0),
            ("q4", "w3", 160.0),
        ]
        await store.set_paused(["slow"], False)
        assert [r.jid for r in await store.reserve(["slow"], "w4", 200.0)] == ["q3"]
        assert (await store.counters()).processed == 8
    finally:
        await store.close()
