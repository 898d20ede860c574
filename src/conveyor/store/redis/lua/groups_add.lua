-- groups_add: add members to aggregating groups, in the order given, in one step.
-- KEYS[1] {ns}:gdue      ZSET  group key by due_at
-- KEYS[2] {ns}:gmeta     HASH  group key -> "size first_at last_at max_size max_delay grace seq"
-- KEYS[3] {ns}:gjid      HASH  jid -> group key
-- KEYS[4..] per group named: {ns}:gz:<key> (ZSET member jid by seq), then {ns}:gd:<key>
--           (HASH member jid -> lp(added_at) payload)
-- ARGV, 8 per member: the index in KEYS of its group's gz key, the group key, jid, added_at,
-- payload, max_size, max_delay, grace.
-- Returns, per member, the key of the group that holds its jid now and that group's meta. A
-- jid that is a member of a group already changes nothing (an add sent again is harmless).
-- due_at is groups.py's due_at().
local out = {}
for i = 1, #ARGV, 8 do
  local index, key, jid, added = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local where = redis.call('HGET', KEYS[3], jid)
  if where then
    out[#out + 1] = where
    out[#out + 1] = redis.call('HGET', KEYS[2], where)
  else
    local at = tonumber(added)
    local size, first_at, last_at, seq = 1, at, at, 1
    local old = redis.call('HGET', KEYS[2], key)
    if old then
      local m = {}
      for field in string.gmatch(old, '%S+') do m[#m + 1] = tonumber(field) end
      size, first_at, last_at, seq = m[1] + 1, m[2], math.max(m[3], at), m[7] + 1
    end
    local max_size, max_delay = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
    local grace = tonumber(ARGV[i + 7])
    redis.call('ZADD', KEYS[index], seq, jid)
    redis.call('HSET', KEYS[index + 1], jid, lp(added) .. ARGV[i + 4])
    redis.call('HSET', KEYS[3], jid, key)
    local due = math.min(first_at + max_delay, last_at + grace)
    if size >= max_size then due = first_at end
    local meta = table.concat({size, fmt(first_at), fmt(last_at), max_size, fmt(max_delay),
      fmt(grace), seq}, ' ')
    redis.call('HSET', KEYS[2], key, meta)
    redis.call('ZADD', KEYS[1], fmt(due), key)
    out[#out + 1] = key
    out[#out + 1] = meta
  end
end
return out
