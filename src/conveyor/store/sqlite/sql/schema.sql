-- Schema of the SQLite store (conveyor.store.sqlite); every other .sql file uses these tables.
--
--   queues(name, paused)                                  known queues and their pause flag
--   queue_jobs(seq, queue, jid, reserve_for, crc, payload)   FIFO per queue: lowest seq first
--   reservations(jid, queue, wid, reserved_at, expires_at, crc, payload)   the working set
--   set_entries(id, name, jid, score, queue, jobtype, crc, payload)  scheduled/retries/dead
--   counters(day, processed, failures)                    day '' holds the totals
--   damaged_jobs(id, found_at, source, jid, queue, crc, payload)   moved aside (damage.sql)
--   meta(key, value)                                      'probe': the outage probe's write
--
-- Payloads go last in each row: SQLite reads columns in order, so the small indexed columns
-- are reached without stepping over a large payload. crc is the CRC-32 of the payload,
-- written with it and checked before the payload is used (sqlite/damage.py). A database
-- upgraded from version 1 has crc after the payload (ALTER TABLE appends); queries name
-- their columns, so the order does not matter to them.
-- name: create
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS queue_jobs (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    jid TEXT NOT NULL,
    reserve_for INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
);
-- reserve pops the lowest seq of one queue: O(log n) through this index
CREATE INDEX IF NOT EXISTS queue_jobs_fifo ON queue_jobs (queue, seq);

CREATE TABLE IF NOT EXISTS reservations (
    jid TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    wid TEXT NOT NULL,
    reserved_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_expiry ON reservations (expires_at, jid);
CREATE INDEX IF NOT EXISTS reservations_age ON reservations (reserved_at, jid);

CREATE TABLE IF NOT EXISTS set_entries (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    jid TEXT NOT NULL,
    score REAL NOT NULL,
    queue TEXT NOT NULL,
    jobtype TEXT NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
);
-- within one set a jid identifies one entry
CREATE UNIQUE INDEX IF NOT EXISTS set_entries_jid ON set_entries (name, jid);
-- due-queries, purges and pages walk this index in score order
CREATE INDEX IF NOT EXISTS set_entries_score ON set_entries (name, score, jid);

CREATE TABLE IF NOT EXISTS counters (
    day TEXT PRIMARY KEY,
    processed INTEGER NOT NULL,
    failures INTEGER NOT NULL
) WITHOUT ROWID;

-- rows whose payload no longer matched its crc, kept as found for the operator
-- (docs/operations.md, "When things fail"); source: queue_jobs, reservations or
-- set_entries:<set name>
CREATE TABLE IF NOT EXISTS damaged_jobs (
    id INTEGER PRIMARY KEY,
    found_at REAL NOT NULL,
    source TEXT NOT NULL,
    jid TEXT NOT NULL,
    queue TEXT NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;

PRAGMA user_version = 2;

-- name: migrate_1_to_2
-- Version 1 had no payload checksums: the payloads found now are taken as intact.
ALTER TABLE queue_jobs ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;
UPDATE queue_jobs SET crc = conveyor_crc32(CAST(payload AS BLOB));
ALTER TABLE reservations ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;
UPDATE reservations SET crc = conveyor_crc32(CAST(payload AS BLOB));
ALTER TABLE set_entries ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;
UPDATE set_entries SET crc = conveyor_crc32(CAST(payload AS BLOB));

-- name: probe
-- While commits fail, this small real write is retried until it commits (sqlite/health.py).
INSERT INTO meta (key, value) VALUES ('probe', ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: load_queues
SELECT name, paused FROM queues;

-- name: load_queue_sizes
SELECT queue, count(*) FROM queue_jobs GROUP BY queue;

-- name: load_set_sizes
SELECT name, count(*) FROM set_entries GROUP BY name;

-- name: flush
DELETE FROM queue_jobs;
DELETE FROM queues;
DELETE FROM reservations;
DELETE FROM set_entries;
DELETE FROM counters;
