-- Limits (conveyor.store.limits) of the SQLite store: reads of the reservations, the rows of
-- queue_jobs with expires_at set (schema.sql). Slots and buckets live in memory
-- (sqlite/limits.py); the reservations they stand for are what survives a restart.

-- name: queue_reservations
-- A queue's reservations, to rebuild its throttle slots (once per queue and start).
SELECT jid, wid, reserved_at, expires_at FROM queue_jobs
WHERE queue = ? AND expires_at IS NOT NULL;

-- name: reserved
-- Which of these jids are still reserved: one probe of queue_jobs_reserved each.
SELECT jid FROM queue_jobs
WHERE expires_at IS NOT NULL AND jid IN (SELECT value FROM json_each(?));
