-- Sorted sets: set_entries(id, name, jid, score, queue, jobtype, crc, payload), name being
-- 'scheduled', 'retries' or 'dead'; unique on (name, jid), ordered by (name, score, jid).

-- name: insert_entry
INSERT INTO set_entries (name, jid, score, queue, jobtype, crc, ukey, ukey_until, payload)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: delete_jid
DELETE FROM set_entries WHERE name = ? AND jid = ?;

-- name: take_entry
-- Conditional: only the entry with this jid AND score (still where the caller saw it).
DELETE FROM set_entries WHERE name = ? AND jid = ? AND score = ?
RETURNING jid, score, queue, jobtype, payload;

-- name: due_entries
-- Feeds the lifecycle (promotion into queues): id and crc come along to check the payload.
SELECT score, jid, payload, queue, jobtype, id, crc FROM set_entries
WHERE name = ? AND score <= ? ORDER BY score, jid LIMIT ?;

-- name: purge_set
DELETE FROM set_entries WHERE id IN (
    SELECT id FROM set_entries WHERE name = ? AND score <= ? ORDER BY score, jid LIMIT ?
);

-- name: clear_set
DELETE FROM set_entries WHERE name = ?;

-- name: entries_by_jid
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = ? AND jid IN (SELECT value FROM json_each(?));

-- name: page_asc
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = :name ORDER BY score, jid LIMIT :limit OFFSET :offset;

-- name: page_desc
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = :name ORDER BY score DESC, jid DESC LIMIT :limit OFFSET :offset;

-- name: filtered_page_asc
-- JobFilter without jids: each condition is off when its parameter is NULL. GLOB is
-- case-sensitive like Redis MATCH; :text is a LIKE '%needle%' (case-insensitive for ASCII,
-- and twice as fast as instr(lower(...)) because it copies nothing).
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = :name
    AND (:queue IS NULL OR queue = :queue)
    AND (:jobtype IS NULL OR jobtype = :jobtype)
    AND (:pattern IS NULL OR CAST(payload AS TEXT) GLOB :pattern)
    AND (:text IS NULL OR CAST(payload AS TEXT) LIKE :text ESCAPE '\')
ORDER BY score, jid LIMIT :limit OFFSET :offset;

-- name: filtered_page_desc
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = :name
    AND (:queue IS NULL OR queue = :queue)
    AND (:jobtype IS NULL OR jobtype = :jobtype)
    AND (:pattern IS NULL OR CAST(payload AS TEXT) GLOB :pattern)
    AND (:text IS NULL OR CAST(payload AS TEXT) LIKE :text ESCAPE '\')
ORDER BY score DESC, jid DESC LIMIT :limit OFFSET :offset;

-- name: filtered_count
SELECT count(*) FROM set_entries
WHERE name = :name
    AND (:queue IS NULL OR queue = :queue)
    AND (:jobtype IS NULL OR jobtype = :jobtype)
    AND (:pattern IS NULL OR CAST(payload AS TEXT) GLOB :pattern)
    AND (:text IS NULL OR CAST(payload AS TEXT) LIKE :text ESCAPE '\');

-- name: filtered_after_asc
-- The next page after the last (score, jid) the previous page ended on: a keyset range scan
-- instead of re-walking OFFSET rows (see SQLiteStore._PageCursor).
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = :name AND (score, jid) > (:score, :jid)
    AND (:queue IS NULL OR queue = :queue)
    AND (:jobtype IS NULL OR jobtype = :jobtype)
    AND (:pattern IS NULL OR CAST(payload AS TEXT) GLOB :pattern)
    AND (:text IS NULL OR CAST(payload AS TEXT) LIKE :text ESCAPE '\')
ORDER BY score, jid LIMIT :limit;

-- name: filtered_after_desc
SELECT score, jid, payload, queue, jobtype FROM set_entries
WHERE name = :name AND (score, jid) < (:score, :jid)
    AND (:queue IS NULL OR queue = :queue)
    AND (:jobtype IS NULL OR jobtype = :jobtype)
    AND (:pattern IS NULL OR CAST(payload AS TEXT) GLOB :pattern)
    AND (:text IS NULL OR CAST(payload AS TEXT) LIKE :text ESCAPE '\')
ORDER BY score DESC, jid DESC LIMIT :limit;
