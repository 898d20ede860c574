-- groups_add: add members to aggregating groups, in the order given, in one step.
-- KEYS and ARGV below are counted after this call's token (see the note under them).
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
-- This call's token is KEYS[1] (ARGV[1] its TTL, ARGV[2] the attempt: _lib.lua); K and A
-- below are the script's own keys and arguments, numbered from 1 as documented above.
local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
for i = 3, #ARGV do A[i - 2] = ARGV[i] end
local done = replay()
if done then
  return unpack_lp(done)
end
local out = {}
for i = 1, #A, 8 do
  local index, key, jid, added = tonumber(A[i]), A[i + 1], A[i + 2], A[i + 3]
  local where = redis.call('HGET', K[3], jid)
  if where then
    out[#out + 1] = where
    out[#out + 1] = redis.call('HGET', K[2], where)
  else
    local at = tonumber(added)
    local size, first_at, last_at, seq = 1, at, at, 1
    local old = redis.call('HGET', K[2], key)
    if old then
      local m = {}
      for field in string.gmatch(old, '%S+') do m[#m + 1] = tonumber(field) end
      size, first_at, last_at, seq = m[1] + 1, m[2], math.max(m[3], at), m[7] + 1
    end
    local max_size, max_delay = tonumber(A[i + 5]), tonumber(A[i + 6])
    local grace = tonumber(A[i + 7])
    redis.call('ZADD', K[index], seq, jid)
    redis.call('HSET', K[index + 1], jid, lp(added) .. A[i + 4])
    redis.call('HSET', K[3], jid, key)
    local due = math.min(first_at + max_delay, last_at + grace)
    if size >= max_size then due = first_at end
    local meta = table.concat({size, fmt(first_at), fmt(last_at), max_size, fmt(max_delay),
      fmt(grace), seq}, ' ')
    redis.call('HSET', K[2], key, meta)
    redis.call('ZADD', K[1], fmt(due), key)
    out[#out + 1] = key
    out[#out + 1] = meta
  end
end
remember(pack(out))
return out
