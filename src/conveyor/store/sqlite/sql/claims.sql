-- The lock spaces of records (conveyor.store.sqlite.claims): rows appended in claim order,
-- read into memory at open.
--
--   claims(id, space, key, expires_at, value)    expires_at NULL = kept until deleted
--
-- name: create
-- No index: a lock is found through the in-memory mirror, by its id here; an INTEGER
-- PRIMARY KEY in insertion order makes each claim write the table's last page.
CREATE TABLE IF NOT EXISTS claims (
    id INTEGER PRIMARY KEY,
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL,
    value BLOB NOT NULL
);

-- name: count_old
-- Locks a file made before claims kept in records (?spaces: one ? per lock space).
SELECT count(*) FROM records WHERE space IN (?spaces);

-- name: move_old
INSERT INTO claims (space, key, expires_at, value)
SELECT space, key, expires_at, value FROM records WHERE space IN (?spaces) ORDER BY rowid;

-- name: drop_old
DELETE FROM records WHERE space IN (?spaces);

-- name: load
SELECT id, space, key, expires_at, value FROM claims ORDER BY id;

-- name: insert
INSERT INTO claims (id, space, key, expires_at, value) VALUES (?, ?, ?, ?, ?);

-- name: refresh
UPDATE claims SET expires_at = ? WHERE id = ?;

-- name: delete
DELETE FROM claims WHERE id = ?;

-- name: flush
DELETE FROM claims;

-- name: load_rows
-- The locks the job rows hold (schema version 4), those not expired at ``?``: a scan of the
-- rows, which reads ukey and ukey_until only (no index: one would cost every unique PUSH a
-- page of its own). The completed set holds none.
SELECT ukey, jid, ukey_until FROM queue_jobs
WHERE ukey IS NOT NULL AND (ukey_until IS NULL OR ukey_until > ?1)
UNION ALL
SELECT ukey, jid, ukey_until FROM set_entries
WHERE ukey IS NOT NULL AND (ukey_until IS NULL OR ukey_until > ?1);

-- name: clear_reserved
-- A released lock: the reservation that may still hold it (unique_until=start at FETCH).
UPDATE queue_jobs SET ukey = NULL, ukey_until = NULL
WHERE jid = ? AND expires_at IS NOT NULL AND ukey IS NOT NULL;

-- name: clear_entries
-- A released lock: the set entries that may still hold it (a job killed into the dead set).
UPDATE set_entries SET ukey = NULL, ukey_until = NULL
WHERE name IN ('scheduled', 'retries', 'dead') AND jid = ? AND ukey IS NOT NULL;
