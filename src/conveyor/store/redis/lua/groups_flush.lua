-- groups_flush: enqueue members of an aggregating group as one job, if all are still there.
-- KEYS[1] {ns}:gdue      ZSET  group key by due_at
-- KEYS[2] {ns}:gmeta     HASH  group key -> "size first_at last_at max_size max_delay grace seq"
-- KEYS[3] {ns}:gz:<key>  ZSET  member jid by arrival number (seq)
-- KEYS[4] {ns}:gd:<key>  HASH  member jid -> lp(added_at) payload
-- KEYS[5] {ns}:gjid      HASH  jid -> group key
-- KEYS[6] {ns}:queues, KEYS[7] {ns}:ready, KEYS[8] {ns}:q:<queue>
-- ARGV[1] the group key, [2] SPUBLISH|PUBLISH, [3] "<origin> ", [4] queue, [5] the job's
-- entry, [6..] jids. Removes the jids and enqueues the entry only if every jid is a member:
-- returns 1, else 0 and nothing changes. The group's numbers are worked out again from the
-- members left (due_at as groups.py's due_at(); cancel.lua does the same), or it goes.
local key = ARGV[1]
local old = redis.call('HGET', KEYS[2], key)
if not old or #ARGV < 6 then return 0 end
for i = 6, #ARGV do
  if not redis.call('ZSCORE', KEYS[3], ARGV[i]) then return 0 end
end
for i = 6, #ARGV do
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('HDEL', KEYS[5], ARGV[i])
end
local m = {}
for field in string.gmatch(old, '%S+') do m[#m + 1] = tonumber(field) end
local size = redis.call('ZCARD', KEYS[3])
if size == 0 then
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[1], key)
else
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  local first_at = tonumber((read_lp(redis.call('HGET', KEYS[4], oldest), 1)))
  local due = math.min(first_at + m[5], m[3] + m[6])
  if size >= m[4] then due = first_at end
  redis.call('HSET', KEYS[2], key, table.concat({size, fmt(first_at), fmt(m[3]), m[4],
    fmt(m[5]), fmt(m[6]), m[7]}, ' '))
  redis.call('ZADD', KEYS[1], fmt(due), key)
end
redis.call('RPUSH', KEYS[8], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[4])
redis.call(ARGV[2], KEYS[7], ARGV[3] .. ARGV[4])
return 1
