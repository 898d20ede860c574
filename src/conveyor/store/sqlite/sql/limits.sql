-- Limits (conveyor.store.limits) of the SQLite store: reads of reservations(jid, queue, wid,
-- reserved_at, expires_at, payload) of schema.sql. Slots and buckets live in memory
-- (sqlite/limits.py); the reservations they stand for are what survives a restart.

-- name: queue_reservations
-- A queue's reservations, to rebuild its throttle slots (once per queue and start).
SELECT jid, wid, reserved_at, expires_at FROM reservations WHERE queue = ?;

-- name: reserved
-- Which of these jids are still reserved: one primary-key probe each.
SELECT jid FROM reservations WHERE jid IN (SELECT value FROM json_each(?));
