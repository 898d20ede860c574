-- The working set: the reserved rows of queue_jobs(seq, queue, jid, reserve_for, crc, wid,
-- reserved_at, expires_at, payload), those with expires_at set (schema.sql).

-- name: claim_jobs
-- A FETCH: the oldest :limit queued jobs of one queue become reservations for wid, in place.
-- OR REPLACE: a jid reserved already (pushed twice) keeps only its newest reservation.
-- RETURNING order is unspecified, so the caller sorts by seq.
UPDATE OR REPLACE queue_jobs SET wid = ?, reserved_at = ?, expires_at = ? + reserve_for
WHERE seq IN (
    SELECT seq FROM queue_jobs WHERE queue = ? AND expires_at IS NULL ORDER BY seq LIMIT ?
)
RETURNING seq, jid, reserve_for, crc, payload;

-- name: insert_reservation
-- A hand-off: a job reserved for the FETCH waiting for it, never queued.
INSERT OR REPLACE INTO queue_jobs
    (queue, jid, reserve_for, crc, wid, reserved_at, expires_at, ukey, ukey_until, payload)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: end_reservation
DELETE FROM queue_jobs WHERE jid = ? AND expires_at IS NOT NULL;

-- name: get_reservation
-- These two feed the lifecycle (FAIL, expiry): crc comes along to check the payload with.
SELECT jid, queue, payload, wid, reserved_at, expires_at, crc FROM queue_jobs
WHERE jid = ? AND expires_at IS NOT NULL;

-- name: reservations_of
SELECT jid, queue, payload, wid, reserved_at, expires_at, crc FROM queue_jobs
WHERE jid IN (SELECT value FROM json_each(?)) AND expires_at IS NOT NULL;

-- name: expired_reservations
SELECT jid, queue, payload, wid, reserved_at, expires_at, crc FROM queue_jobs
WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, jid LIMIT ?;

-- name: extend_reservation
UPDATE queue_jobs SET expires_at = ? WHERE jid = ? AND expires_at IS NOT NULL;

-- name: list_reservations
SELECT jid, queue, payload, wid, reserved_at, expires_at FROM queue_jobs
WHERE expires_at IS NOT NULL ORDER BY reserved_at, jid LIMIT ? OFFSET ?;

-- name: count_reservations
SELECT count(*) FROM queue_jobs WHERE expires_at IS NOT NULL;
