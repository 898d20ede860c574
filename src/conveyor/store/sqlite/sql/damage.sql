-- Damaged jobs: rows of queue_jobs (queued or reserved) and set_entries whose payload no
-- longer matches its crc (CRC-32, conveyor_crc32() in SQL) are moved into
-- damaged_jobs(id, found_at, source, jid, queue, crc, payload), never delivered. The source
-- of a reserved row is 'reservations', as when reservations had a table of their own.

-- name: scan_queue_jobs
SELECT seq, jid, queue, crc, payload FROM queue_jobs
WHERE expires_at IS NULL AND conveyor_crc32(CAST(payload AS BLOB)) != crc;

-- name: scan_reservations
SELECT seq, jid, queue, crc, payload FROM queue_jobs
WHERE expires_at IS NOT NULL AND conveyor_crc32(CAST(payload AS BLOB)) != crc;

-- name: scan_set_entries
SELECT id, jid, queue, crc, payload, name FROM set_entries
WHERE conveyor_crc32(CAST(payload AS BLOB)) != crc;

-- name: drop_queue_jobs
DELETE FROM queue_jobs WHERE seq = ?;

-- name: drop_reservations
DELETE FROM queue_jobs WHERE seq = ?;

-- name: drop_reservation
-- A reservation found damaged when read for FAIL or expiry, by its jid.
DELETE FROM queue_jobs WHERE jid = ? AND expires_at IS NOT NULL;

-- name: drop_set_entries
DELETE FROM set_entries WHERE id = ?;

-- name: move_aside
INSERT INTO damaged_jobs (found_at, source, jid, queue, crc, payload) VALUES (?, ?, ?, ?, ?, ?);
