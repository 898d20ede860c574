-- Endings (conveyor.store.endings) of the SQLite store: reservations(jid, queue, wid,
-- reserved_at, expires_at, payload) of schema.sql, ended with what they held.
-- name: end_returning
DELETE FROM reservations WHERE jid = ?
RETURNING jid, queue, payload, wid, reserved_at, expires_at;
