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
