-- Groups (conveyor.store.groups) of the SQLite store.
--
--   agg_groups(key, size, first_at, last_at, due_at, max_size, max_delay, grace)
--   agg_members(id, key, jid, added_at, crc, payload)     arrival order: lowest id first
--
-- A group's row keeps its numbers (size, the oldest member's arrival, due_at) up to date with
-- every change, so the loop finds due groups through an index and listings read no members.
-- crc is the CRC-32 of the payload, checked before a member is used (damage.py).

-- name: create
CREATE TABLE IF NOT EXISTS agg_groups (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    due_at REAL NOT NULL,
    max_size INTEGER NOT NULL,
    max_delay REAL NOT NULL,
    grace REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agg_groups_due ON agg_groups (due_at, key);
CREATE TABLE IF NOT EXISTS agg_members (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    jid TEXT NOT NULL,
    added_at REAL NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
);
-- a jid is a member of one group at most
CREATE UNIQUE INDEX IF NOT EXISTS agg_members_jid ON agg_members (jid);
CREATE INDEX IF NOT EXISTS agg_members_order ON agg_members (key, id);

-- name: member_group
SELECT key FROM agg_members WHERE jid = ?;

-- name: add_member
-- A jid that is a member of a group already is left where it is (changes() = 0).
INSERT OR IGNORE INTO agg_members (key, jid, added_at, crc, payload) VALUES (?, ?, ?, ?, ?);

-- name: count_members
SELECT count(*) FROM agg_members WHERE key = ? AND jid IN (SELECT value FROM json_each(?));

-- name: remove_member
DELETE FROM agg_members WHERE key = ? AND jid = ?;

-- name: group_row
SELECT key, size, first_at, last_at, due_at, max_size, max_delay, grace
FROM agg_groups WHERE key = ?;

-- name: oldest_member
SELECT added_at FROM agg_members WHERE key = ? ORDER BY id LIMIT 1;

-- name: put_group
INSERT OR REPLACE INTO agg_groups
    (key, size, first_at, last_at, due_at, max_size, max_delay, grace)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: delete_group
DELETE FROM agg_groups WHERE key = ?;

-- name: due_groups
SELECT key, size, first_at, last_at, due_at, max_size, max_delay, grace
FROM agg_groups WHERE due_at <= ? ORDER BY due_at, key LIMIT ?;

-- name: next_due
SELECT min(due_at) FROM agg_groups;

-- name: list_groups
SELECT key, size, first_at, last_at, due_at, max_size, max_delay, grace
FROM agg_groups ORDER BY due_at, key LIMIT ? OFFSET ?;

-- name: counts
SELECT count(*), coalesce(sum(size), 0) FROM agg_groups;

-- name: members
SELECT id, jid, added_at, crc, payload FROM agg_members WHERE key = ? ORDER BY id LIMIT ? OFFSET ?;

-- name: find_member
SELECT key, jid, added_at, crc, payload FROM agg_members WHERE jid = ?;

-- name: flush
DELETE FROM agg_members;
DELETE FROM agg_groups;
