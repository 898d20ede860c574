-- Counts (conveyor.store.counts) of the SQLite store.
--
--   counts(space, key, value)            integer counters
-- name: create
CREATE TABLE IF NOT EXISTS counts (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (space, key)
) WITHOUT ROWID;

-- name: add_count
INSERT INTO counts (space, key, value) VALUES (?, ?, ?)
ON CONFLICT (space, key) DO UPDATE SET value = value + excluded.value;

-- name: get_count
SELECT value FROM counts WHERE space = ? AND key = ?;

-- name: flush
DELETE FROM counts;
