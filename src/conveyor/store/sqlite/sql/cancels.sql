-- Cancels (conveyor.store.cancels) of the SQLite store: the job leaves where it was, in the
-- same transaction as its record and count are written (records.sql's table). Queued and
-- reserved jobs are rows of queue_jobs, told apart by expires_at (NULL while queued).

-- name: delete_queued_one
DELETE FROM queue_jobs WHERE seq = (
    SELECT seq FROM queue_jobs WHERE queue = ? AND jid = ? AND expires_at IS NULL LIMIT 1
);

-- name: delete_queued_entry
DELETE FROM queue_jobs WHERE seq = (
    SELECT seq FROM queue_jobs
    WHERE queue = ? AND jid = ? AND reserve_for = ? AND payload = ? AND expires_at IS NULL
    LIMIT 1
);

-- name: end_reservation_of
DELETE FROM queue_jobs WHERE jid = ? AND wid = ? AND expires_at IS NOT NULL;
