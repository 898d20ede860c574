-- Queues: queues(name, paused) and the queued rows of queue_jobs(seq, queue, jid,
-- reserve_for, crc, wid, reserved_at, expires_at, payload), those with expires_at NULL (the
-- others are reservations: reservations.sql). A queue is FIFO by seq (the rowid, which only
-- grows while rows exist above it).

-- name: add_queue
INSERT OR IGNORE INTO queues (name) VALUES (?);

-- name: push_job
-- ukey, ukey_until: the job's unique lock (claims.py), NULL for a job without one
INSERT INTO queue_jobs (queue, jid, reserve_for, crc, ukey, ukey_until, payload)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: queue_head
SELECT payload FROM queue_jobs WHERE queue = ? AND expires_at IS NULL ORDER BY seq LIMIT 1;

-- name: list_queue
SELECT jid, reserve_for, payload FROM queue_jobs
WHERE queue = ? AND expires_at IS NULL ORDER BY seq LIMIT ? OFFSET ?;

-- name: delete_queued
DELETE FROM queue_jobs
WHERE queue = ? AND expires_at IS NULL AND jid IN (SELECT value FROM json_each(?));

-- name: seq_range
-- all rows, reserved ones too (O(1) at the ends of the rowid b-tree): windows filter them
SELECT min(seq), max(seq) FROM queue_jobs;

-- name: find_queued
-- One window of seq (a rowid range): no index on jid, which would cost every enqueue and
-- reserve (docs/design/sqlite.md); the caller walks the windows, yielding in between.
SELECT queue, jid, reserve_for, payload FROM queue_jobs
WHERE seq >= ? AND seq < ? AND expires_at IS NULL AND jid IN (SELECT value FROM json_each(?))
ORDER BY seq;

-- name: delete_queue_jobs
DELETE FROM queue_jobs WHERE queue = ? AND expires_at IS NULL;

-- name: delete_queue
DELETE FROM queues WHERE name = ?;

-- name: set_paused
UPDATE queues SET paused = ? WHERE name = ?;
