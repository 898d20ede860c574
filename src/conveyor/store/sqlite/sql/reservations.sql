-- The working set: reservations(jid, queue, wid, reserved_at, expires_at, crc, payload).

-- name: insert_reservation
INSERT OR REPLACE INTO reservations (jid, queue, wid, reserved_at, expires_at, crc, payload)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: end_reservation
DELETE FROM reservations WHERE jid = ?;

-- name: get_reservation
-- These two feed the lifecycle (FAIL, expiry): crc comes along to check the payload with.
SELECT jid, queue, payload, wid, reserved_at, expires_at, crc FROM reservations WHERE jid = ?;

-- name: reservations_of
SELECT jid, queue, payload, wid, reserved_at, expires_at, crc FROM reservations
WHERE jid IN (SELECT value FROM json_each(?));

-- name: expired_reservations
SELECT jid, queue, payload, wid, reserved_at, expires_at, crc FROM reservations
WHERE expires_at <= ? ORDER BY expires_at, jid LIMIT ?;

-- name: extend_reservation
UPDATE reservations SET expires_at = ? WHERE jid = ?;

-- name: list_reservations
SELECT jid, queue, payload, wid, reserved_at, expires_at FROM reservations
ORDER BY reserved_at, jid LIMIT ? OFFSET ?;

-- name: count_reservations
SELECT count(*) FROM reservations;
