-- Damaged jobs: rows of queue_jobs, reservations and set_entries whose payload no longer
-- matches its crc (CRC-32, conveyor_crc32() in SQL) are moved into
-- damaged_jobs(id, found_at, source, jid, queue, crc, payload), never delivered.

-- name: scan_queue_jobs
SELECT seq, jid, queue, crc, payload FROM queue_jobs
WHERE conveyor_crc32(CAST(payload AS BLOB)) != crc;

-- name: scan_reservations
SELECT jid, jid, queue, crc, payload FROM reservations
WHERE conveyor_crc32(CAST(payload AS BLOB)) != crc;

-- name: scan_set_entries
SELECT id, jid, queue, crc, payload, name FROM set_entries
WHERE conveyor_crc32(CAST(payload AS BLOB)) != crc;

-- name: drop_queue_jobs
DELETE FROM queue_jobs WHERE seq = ?;

-- name: drop_reservations
DELETE FROM reservations WHERE jid = ?;

-- name: drop_set_entries
DELETE FROM set_entries WHERE id = ?;

-- name: move_aside
INSERT INTO damaged_jobs (found_at, source, jid, queue, crc, payload) VALUES (?, ?, ?, ?, ?, ?);
