-- Endings (conveyor.store.endings) of the SQLite store: rows of queue_jobs(seq, queue, jid,
-- reserve_for, crc, wid, reserved_at, expires_at, payload) of schema.sql, reserved
-- (expires_at set) or queued (expires_at NULL), removed with what they held.
-- name: end_returning
DELETE FROM queue_jobs WHERE jid = ? AND expires_at IS NOT NULL
RETURNING jid, queue, payload, wid, reserved_at, expires_at;

-- name: end_checked
-- The ACK that stores what its jobs asked for (endings.py: _keep_ended): crc comes along,
-- as the payload is copied into what is stored.
DELETE FROM queue_jobs WHERE jid = ? AND expires_at IS NOT NULL
RETURNING jid, queue, payload, wid, reserved_at, expires_at, crc;

-- name: end_checked_many
-- end_checked for an ACKB: one statement for the whole batch (the rows come back in no
-- particular order).
DELETE FROM queue_jobs
WHERE jid IN (SELECT value FROM json_each(?)) AND expires_at IS NOT NULL
RETURNING jid, queue, payload, wid, reserved_at, expires_at, crc;

-- name: take_queued
-- Walks the queue once, as delete_queued does (queue_jobs has no index on jid).
DELETE FROM queue_jobs
WHERE queue = ? AND expires_at IS NULL AND jid IN (SELECT value FROM json_each(?))
RETURNING seq, jid, reserve_for, payload;
