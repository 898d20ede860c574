-- Batches, marks and waiting jobs (conveyor.store.batches) of the SQLite store.
--
--   batches(seq, bid, expires_at, propagate, search, record)   record: msgpack BatchRecord;
--                                  seq orders the listing, search = lower(bid || description)
--   batch_children(parent, child)
--   marks(jid, state, updated_at, bid, role, expires_at, seq)  one per marked job; a batch's
--                                  jobs are its marks by seq (the order they joined)
--   waiting(seq, jid, record)      record: msgpack WaitingJob (with its payload)
--   mark_waiters(dep, waiter)      the waiting jobs each dependency holds back
--
-- The rules run in Python (store/batch_engine.py) inside one savepoint of the shared
-- transaction, so each transition commits with the job transitions around it.
-- name: create
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    bid TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL,
    propagate INTEGER NOT NULL DEFAULT 0,
    search TEXT NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_expiry ON batches (expires_at);
CREATE INDEX IF NOT EXISTS batches_propagate ON batches (propagate) WHERE propagate = 1;
CREATE TABLE IF NOT EXISTS batch_children (
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
-- Every mark is written twice (at PUSH, at the end), so each has one index beside its key:
-- a batch's marks are listed by (bid, seq) and deleted with their batch; the others expire
-- (tracked jobs). The unfinished ones are found by a scan, once, when the server starts.
CREATE TABLE IF NOT EXISTS marks (
    jid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    bid TEXT NOT NULL,
    role TEXT NOT NULL,
    expires_at REAL,
    seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS marks_expiry ON marks (expires_at) WHERE bid = '';
CREATE INDEX IF NOT EXISTS marks_batch ON marks (bid, seq) WHERE bid != '';
CREATE TABLE IF NOT EXISTS waiting (
    seq INTEGER PRIMARY KEY,
    jid TEXT NOT NULL UNIQUE,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS mark_waiters (
    dep TEXT NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (dep, waiter)
) WITHOUT ROWID;

-- name: get_batch
SELECT record FROM batches WHERE bid = ?;

-- name: insert_batch
INSERT INTO batches (bid, expires_at, propagate, search, record) VALUES (?, ?, 0, ?, ?);

-- name: update_batch
UPDATE batches SET expires_at = ?, record = ? WHERE bid = ?;

-- name: update_record
-- A batch's record at a commit (SQLiteBatches._write_batches) when its expiry is the one
-- stored: batches_expiry is left alone (update_batch otherwise).
UPDATE batches SET record = ? WHERE bid = ? AND expires_at = ?;

-- name: set_propagate
UPDATE batches SET propagate = ? WHERE bid = ?;

-- name: pending_propagations
SELECT bid FROM batches WHERE propagate = 1 ORDER BY seq LIMIT ?;

-- name: list_batches
SELECT record FROM batches WHERE (:search = '' OR instr(search, :search) > 0)
ORDER BY seq DESC LIMIT :limit OFFSET :offset;

-- name: count_batches
SELECT count(*) FROM batches WHERE (:search = '' OR instr(search, :search) > 0);

-- name: expired_batches
SELECT bid FROM batches WHERE expires_at <= ? ORDER BY expires_at LIMIT ?;

-- name: delete_batch
DELETE FROM batches WHERE bid = ?;

-- name: delete_batch_marks
DELETE FROM marks WHERE bid = ?;

-- name: delete_children
DELETE FROM batch_children WHERE parent = ?;

-- name: batch_jobs
SELECT jid, state, updated_at, bid, role, expires_at FROM marks
WHERE bid = ? AND role = '' ORDER BY seq LIMIT ? OFFSET ?;

-- name: count_batch_jobs
SELECT count(*) FROM marks WHERE bid = ? AND role = '';

-- name: add_child
INSERT OR IGNORE INTO batch_children (parent, child) VALUES (?, ?);

-- name: children
SELECT child FROM batch_children WHERE parent = ? ORDER BY child;

-- name: get_mark
SELECT jid, state, updated_at, bid, role, expires_at FROM marks
WHERE jid = ? AND (expires_at IS NULL OR expires_at > ?);

-- name: get_marks
SELECT jid, state, updated_at, bid, role, expires_at FROM marks
WHERE jid IN (SELECT value FROM json_each(?)) AND (expires_at IS NULL OR expires_at > ?);

-- name: waiters_of
SELECT dep, waiter FROM mark_waiters WHERE dep IN (SELECT value FROM json_each(?))
ORDER BY dep, waiter;

-- name: end_reservations
-- The claimed rows of queue_jobs (schema v3; the view reservations takes no DELETE).
DELETE FROM queue_jobs
WHERE jid IN (SELECT value FROM json_each(?)) AND expires_at IS NOT NULL RETURNING jid;

-- name: put_mark
-- In place when the mark exists (its seq, the order it joined its batch, stays).
INSERT INTO marks (jid, state, updated_at, bid, role, expires_at, seq)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (jid) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at,
    expires_at = excluded.expires_at;

-- name: add_mark
-- The usual PUSH of a batch or tracked job (SQLiteBatches._mark_now), one statement: the
-- mark when the jid has none; a jid marked already keeps its mark (a PUSH sent again).
INSERT INTO marks (jid, state, updated_at, bid, role, expires_at, seq)
VALUES (?, 'enqueued', ?, ?, '', ?, ?)
ON CONFLICT (jid) DO NOTHING;

-- name: succeed_mark
-- The usual ACK of a batch or tracked job (SQLiteBatches._ack_one), one statement: an
-- enqueued job's live mark becomes a success (a finished plain mark is then kept :keep
-- seconds; a batch job's goes with its batch), when the job holds a reservation (which the
-- next statement ends). Any other mark (failed, waiting, a callback's), or none, is left
-- to batch_engine.end_jobs.
UPDATE marks SET state = 'success', updated_at = :now,
    expires_at = CASE WHEN bid = '' THEN :keep ELSE expires_at END
WHERE jid = :jid AND state = 'enqueued' AND role = ''
    AND (expires_at IS NULL OR expires_at > :now)
    AND EXISTS (
        SELECT 1 FROM queue_jobs AS q WHERE q.jid = :jid AND q.expires_at IS NOT NULL
    )
RETURNING bid;

-- name: unfinished_marks
SELECT jid FROM marks WHERE jid > ? AND state IN ('enqueued', 'waiting', 'failed')
ORDER BY jid LIMIT ?;

-- name: purge_marks
-- The marks of batch jobs go with their batch (expire_batches).
DELETE FROM marks WHERE jid IN (
    SELECT jid FROM marks WHERE bid = '' AND expires_at <= ? ORDER BY expires_at LIMIT ?
);

-- name: get_waiting
SELECT record FROM waiting WHERE jid = ?;

-- name: put_waiting
INSERT INTO waiting (jid, record) VALUES (?, ?)
ON CONFLICT (jid) DO UPDATE SET record = excluded.record;

-- name: delete_waiting
DELETE FROM waiting WHERE jid = ?;

-- name: list_waiting
SELECT record FROM waiting ORDER BY seq LIMIT ? OFFSET ?;

-- name: count_waiting
SELECT count(*) FROM waiting;

-- name: waiters
SELECT waiter FROM mark_waiters WHERE dep = ? ORDER BY waiter;

-- name: add_waiter
INSERT OR IGNORE INTO mark_waiters (dep, waiter) VALUES (?, ?);

-- name: drop_waiters
DELETE FROM mark_waiters WHERE dep = ?;

-- name: flush
DELETE FROM batches;
DELETE FROM batch_children;
DELETE FROM marks;
DELETE FROM waiting;
DELETE FROM mark_waiters;
