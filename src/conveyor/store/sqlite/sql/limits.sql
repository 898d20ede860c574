-- Limits (conveyor.store.limits) of the SQLite store.
--
--   throttle_slots(queue, jid, wid, lease)   a job of a throttled queue, reserved by wid,
--                                            holding a slot until lease (or its reservation ends)
--   rate_buckets(queue, tokens, updated_at)  a rate-limited queue's token bucket
--
-- Reservations (reservations.sql) are read, never written, here: a slot whose jid has no
-- reservation any more is free (looked for only when a queue seems full).
-- name: create
CREATE TABLE IF NOT EXISTS throttle_slots (
    queue TEXT NOT NULL,
    jid TEXT NOT NULL,
    wid TEXT NOT NULL,
    lease REAL NOT NULL,
    PRIMARY KEY (queue, jid)
) WITHOUT ROWID;
-- leases that ran out are dropped through this index
CREATE INDEX IF NOT EXISTS throttle_slots_lease ON throttle_slots (queue, lease);

CREATE TABLE IF NOT EXISTS rate_buckets (
    queue TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- name: expire_leases
DELETE FROM throttle_slots WHERE queue = ? AND lease <= ?;

-- name: prune_ended
-- Slots of jobs whose reservation ended (ACK, FAIL, expiry): one primary-key probe each.
DELETE FROM throttle_slots
WHERE queue = ? AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.jid = throttle_slots.jid);

-- name: slot_counts
SELECT count(*), coalesce(sum(wid = :wid), 0), min(lease),
       min(CASE WHEN wid = :wid THEN lease END)
FROM throttle_slots WHERE queue = :queue;

-- name: add_slot
INSERT OR REPLACE INTO throttle_slots (queue, jid, wid, lease) VALUES (?, ?, ?, ?);

-- name: release_worker
DELETE FROM throttle_slots WHERE queue = ? AND wid = ?;

-- name: live_slots
SELECT count(*) FROM throttle_slots s
WHERE queue = ? AND lease > ? AND EXISTS (SELECT 1 FROM reservations r WHERE r.jid = s.jid);

-- name: get_bucket
SELECT tokens, updated_at FROM rate_buckets WHERE queue = ?;

-- name: put_bucket
INSERT OR REPLACE INTO rate_buckets (queue, tokens, updated_at) VALUES (?, ?, ?);

-- name: flush
DELETE FROM throttle_slots;
DELETE FROM rate_buckets;
