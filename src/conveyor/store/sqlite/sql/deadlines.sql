-- Deadlines (conveyor.store.deadlines) of the SQLite store.
--
--   deadlines(space, key, at, value)     keys due at a time, read soonest first
-- name: create
CREATE TABLE IF NOT EXISTS deadlines (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (space, key)
) WITHOUT ROWID;
-- a sweep reads what is due through this index
CREATE INDEX IF NOT EXISTS deadlines_due ON deadlines (space, at, key);

-- name: set_deadline
INSERT OR REPLACE INTO deadlines (space, key, at, value) VALUES (?, ?, ?, ?);

-- name: due_deadlines
SELECT key, at, value FROM deadlines WHERE space = ? AND at <= ? ORDER BY at, key LIMIT ?;

-- name: delete_deadline
DELETE FROM deadlines WHERE space = ? AND key = ?;

-- name: count_deadlines
SELECT count(*) FROM deadlines WHERE space = ?;

-- name: flush
DELETE FROM deadlines;
