-- Schema of the SQLite store (conveyor.store.sqlite); every other .sql file uses these tables.
--
--   queues(name, paused)                                  known queues and their pause flag
--   queue_jobs(seq, queue, jid, reserve_for, crc, wid, reserved_at, expires_at, ukey,
--              ukey_until, payload)
--       every job of a queue, queued or reserved: queued while expires_at IS NULL (FIFO per
--       queue, lowest seq first); reserved for worker wid once a FETCH claims it (expires_at
--       set), until ACK or FAIL delete it. The view reservations shows the reserved ones.
--   set_entries(id, name, jid, score, queue, jobtype, crc, ukey, ukey_until, payload)
--       scheduled/retries/dead (and completed: endings.sql)
--   counters(day, processed, failures)                    day '' holds the totals
--   damaged_jobs(id, found_at, source, jid, queue, crc, payload)   moved aside (damage.sql)
--   meta(key, value)                                      'probe': the outage probe's write
--
-- Payloads go last in each row: SQLite reads columns in order, so the small indexed columns
-- are reached without stepping over a large payload. crc is the CRC-32 of the payload,
-- written with it and checked before the payload is used (sqlite/damage.py). A database
-- upgraded from version 1 has crc after the payload in set_entries (ALTER TABLE appends);
-- queries name their columns, so the order does not matter to them.
--
-- A FETCH claims the queue row in place (schema version 3): one UPDATE, instead of moving
-- the job into a table of reservations (a DELETE, an INSERT with a second copy of the
-- payload, and a savepoint around both); the partial indexes keep queued and reserved rows
-- apart, so neither kind of lookup walks over the other.
--
-- ukey, ukey_until (schema version 4): the unique lock the job holds, its key and expiry,
-- written in the INSERT that stores the row (store/sqlite/claims.py); NULL for the others.
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
    wid TEXT,
    reserved_at REAL,
    expires_at REAL,
    ukey TEXT,
    ukey_until REAL,
    payload BLOB NOT NULL
);
-- reserve claims the lowest queued seq of one queue: O(log n) through this index
CREATE INDEX IF NOT EXISTS queue_jobs_fifo ON queue_jobs (queue, seq) WHERE expires_at IS NULL;
-- within the reservations a jid identifies one (ACK, FAIL, extend)
CREATE UNIQUE INDEX IF NOT EXISTS queue_jobs_reserved
ON queue_jobs (jid) WHERE expires_at IS NOT NULL;
-- the reaper reads overdue reservations, the Busy page the oldest first
CREATE INDEX IF NOT EXISTS queue_jobs_expiry
ON queue_jobs (expires_at, jid) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_jobs_age
ON queue_jobs (reserved_at, jid) WHERE expires_at IS NOT NULL;

-- the reservations as a table of their own (versions 1 and 2 had one): for reading only
CREATE VIEW IF NOT EXISTS reservations AS
SELECT jid, queue, wid, reserved_at, expires_at, crc, payload FROM queue_jobs
WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS set_entries (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    jid TEXT NOT NULL,
    score REAL NOT NULL,
    queue TEXT NOT NULL,
    jobtype TEXT NOT NULL,
    crc INTEGER NOT NULL,
    ukey TEXT,
    ukey_until REAL,
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

PRAGMA user_version = 4;

-- name: migrate_1_to_2
-- Version 1 had no payload checksums: the payloads found now are taken as intact.
ALTER TABLE queue_jobs ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;
UPDATE queue_jobs SET crc = conveyor_crc32(CAST(payload AS BLOB));
ALTER TABLE reservations ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;
UPDATE reservations SET crc = conveyor_crc32(CAST(payload AS BLOB));
ALTER TABLE set_entries ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;
UPDATE set_entries SET crc = conveyor_crc32(CAST(payload AS BLOB));

-- name: migrate_2_to_3
-- Reservations become claimed rows of queue_jobs. The table is rebuilt, so that every
-- column comes before the payload (version 1 files had crc appended after it); queued jobs
-- keep their seq, reserved ones come after them (their seq orders nothing).
CREATE TABLE queue_jobs_3 (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    jid TEXT NOT NULL,
    reserve_for INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    wid TEXT,
    reserved_at REAL,
    expires_at REAL,
    payload BLOB NOT NULL
);
INSERT INTO queue_jobs_3 (seq, queue, jid, reserve_for, crc, payload)
SELECT seq, queue, jid, reserve_for, crc, payload FROM queue_jobs ORDER BY seq;
INSERT INTO queue_jobs_3 (queue, jid, reserve_for, crc, wid, reserved_at, expires_at, payload)
SELECT queue, jid, max(CAST(round(expires_at - reserved_at) AS INTEGER), 0), crc, wid,
       reserved_at, expires_at, payload
FROM reservations ORDER BY reserved_at, jid;
DROP TABLE queue_jobs;
DROP TABLE reservations;
ALTER TABLE queue_jobs_3 RENAME TO queue_jobs;

-- name: migrate_3_to_4
-- A job's unique lock moves into its own row (claims.py): NULL for the jobs that hold none.
-- ALTER TABLE appends the columns after the payload; the queries name their columns.
ALTER TABLE queue_jobs ADD COLUMN ukey TEXT;
ALTER TABLE queue_jobs ADD COLUMN ukey_until REAL;
ALTER TABLE set_entries ADD COLUMN ukey TEXT;
ALTER TABLE set_entries ADD COLUMN ukey_until REAL;

-- name: probe
-- While commits fail, this small real write is retried until it commits (sqlite/health.py).
INSERT INTO meta (key, value) VALUES ('probe', ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: load_queues
SELECT name, paused FROM queues;

-- name: load_queue_sizes
SELECT queue, count(*) FROM queue_jobs WHERE expires_at IS NULL GROUP BY queue;

-- name: load_set_sizes
SELECT name, count(*) FROM set_entries GROUP BY name;

-- name: flush
DELETE FROM queue_jobs;
DELETE FROM queues;
DELETE FROM set_entries;
DELETE FROM counters;
