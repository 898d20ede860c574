-- Endings (conveyor.store.endings) of the SQLite store: reservations(jid, queue, wid,
-- reserved_at, expires_at, payload) and queue_jobs(seq, queue, jid, reserve_for, payload) of
-- schema.sql, removed with what they held.
-- name: end_returning
DELETE FROM reservations WHERE jid = ?
RETURNING jid, queue, payload, wid, reserved_at, expires_at;

-- name: take_queued
-- Walks the queue once, as delete_queued does (queue_jobs has no index on jid).
DELETE FROM queue_jobs WHERE queue = ? AND jid IN (SELECT value FROM json_each(?))
RETURNING seq, jid, reserve_for, payload;
