-- groups: add a member to an aggregating group, or flush members into one queued job.
-- KEYS[1] {ns}:gdue      ZSET  group key by due_at
-- KEYS[2] {ns}:gmeta     HASH  group key -> "size first_at last_at max_size max_delay grace seq"
-- KEYS[3] {ns}:gz:<key>  ZSET  member jid by arrival number (seq)
-- KEYS[4] {ns}:gd:<key>  HASH  member jid -> lp(added_at) payload
-- KEYS[5] {ns}:gjid      HASH  jid -> group key
-- ARGV[1] mode, ARGV[2] the group key, then:
--   "add"   ARGV[3] jid, [4] added_at, [5] payload, [6] max_size, [7] max_delay, [8] grace
--           Returns the group's meta string, or {"member of", key} when the jid is a member of
--           another group already (nothing changes then; same group: nothing changes either).
--   "flush" KEYS[6] {ns}:queues, KEYS[7] {ns}:ready, KEYS[8] {ns}:q:<queue>;
--           ARGV[3] SPUBLISH|PUBLISH, [4] "<origin> ", [5] queue, [6] entry, [7..] jids
--           Removes the jids and enqueues the entry only if every jid is a member: 1, else 0.
-- A group's due_at is groups.py's due_at(); cancel.lua works a group out the same way.
local mode, key = ARGV[1], ARGV[2]

local function meta_of(raw)
  local m = {}
  for field in string.gmatch(raw, '%S+') do m[#m + 1] = tonumber(field) end
  return m  -- size, first_at, last_at, max_size, max_delay, grace, seq
end

-- Work the group's numbers out again from its members; an emptied group goes.
local function regroup(last_at, max_size, max_delay, grace, seq)
  local size = redis.call('ZCARD', KEYS[3])
  if size == 0 then
    redis.call('DEL', KEYS[3], KEYS[4])
    redis.call('HDEL', KEYS[2], key)
    redis.call('ZREM', KEYS[1], key)
    return false
  end
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  local first_at = tonumber((read_lp(redis.call('HGET', KEYS[4], oldest), 1)))
  local due = math.min(first_at + max_delay, last_at + grace)
  if size >= max_size then due = first_at end
  local meta = table.concat({size, fmt(first_at), fmt(last_at), max_size, fmt(max_delay),
    fmt(grace), seq}, ' ')
  redis.call('HSET', KEYS[2], key, meta)
  redis.call('ZADD', KEYS[1], fmt(due), key)
  return meta
end

if mode == 'add' then
  local jid = ARGV[3]
  local where = redis.call('HGET', KEYS[5], jid)
  if where then
    if where == key then return redis.call('HGET', KEYS[2], key) end
    return {'member of', where}
  end
  local old = redis.call('HGET', KEYS[2], key)
  local last_at, seq = tonumber(ARGV[4]), 1
  if old then
    local m = meta_of(old)
    last_at, seq = math.max(m[3], last_at), m[7] + 1
  end
  redis.call('ZADD', KEYS[3], seq, jid)
  redis.call('HSET', KEYS[4], jid, lp(ARGV[4]) .. ARGV[5])
  redis.call('HSET', KEYS[5], jid, key)
  return regroup(last_at, tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), seq)
end

-- flush
local old = redis.call('HGET', KEYS[2], key)
if not old or #ARGV < 7 then return 0 end
for i = 7, #ARGV do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i]) then return 0 end
end
for i = 7, #ARGV do
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('HDEL', KEYS[5], ARGV[i])
end
local m = meta_of(old)
regroup(m[3], m[4], m[5], m[6], m[7])
redis.call('RPUSH', KEYS[8], ARGV[6])
redis.call('SADD', KEYS[6], ARGV[5])
redis.call(ARGV[3], KEYS[7], ARGV[4] .. ARGV[5])
return 1
