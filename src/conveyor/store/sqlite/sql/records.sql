-- Records (conveyor.store.records) of the SQLite store.
--
--   records(space, key, expires_at, value)    expires_at NULL = kept until deleted
--
-- A record whose expires_at has passed is treated as absent by every query here; the janitor
-- deletes it later (purge).
-- name: create
-- A rowid table: a WITHOUT ROWID one keeps each value inside the key's b-tree, and records
-- (job results: a few hundred bytes, random jids) were 1.8x slower to insert there. A file
-- made before keeps its WITHOUT ROWID table; every query works on both.
CREATE TABLE IF NOT EXISTS records (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL,
    value BLOB NOT NULL,
    PRIMARY KEY (space, key)
);
-- the janitor finds expired records through this index
CREATE INDEX IF NOT EXISTS records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

-- name: claim
-- Insert, or take over a record that expired or already holds the same value; a live
-- record of another value is left alone (changes() = 0).
-- Parameters: space, key, expires_at, value, now.
INSERT INTO records (space, key, expires_at, value) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (space, key) DO UPDATE SET expires_at = excluded.expires_at, value = excluded.value
WHERE records.value = excluded.value
   OR (records.expires_at IS NOT NULL AND records.expires_at <= ?5);

-- name: put
INSERT OR REPLACE INTO records (space, key, expires_at, value) VALUES (?, ?, ?, ?);

-- name: get
SELECT key, value, expires_at FROM records
WHERE space = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?);

-- name: delete
DELETE FROM records WHERE space = ? AND key = ?;

-- name: delete_if
DELETE FROM records WHERE space = ? AND key = ? AND value = ?;

-- name: list
SELECT key, value, expires_at FROM records
WHERE space = ? AND key > ? AND (expires_at IS NULL OR expires_at > ?)
ORDER BY key LIMIT ?;

-- name: count
SELECT count(*) FROM records WHERE space = ? AND (expires_at IS NULL OR expires_at > ?);

-- name: purge
DELETE FROM records WHERE (space, key) IN (
    SELECT space, key FROM records WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
);

-- name: flush
DELETE FROM records;
