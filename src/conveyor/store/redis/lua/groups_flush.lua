-- groups_flush: enqueue members of an aggregating group as one job, if all are still there.
-- KEYS and ARGV below are counted after this call's token (see the note under them).
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
-- This call's token is KEYS[1] (ARGV[1] its TTL, ARGV[2] the attempt: _lib.lua); K and A
-- below are the script's own keys and arguments, numbered from 1 as documented above.
local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
for i = 3, #ARGV do A[i - 2] = ARGV[i] end
local done = replay()
if done then
  return tonumber(done)
end
local key = A[1]
local old = redis.call('HGET', K[2], key)
if not old or #A < 6 then return tonumber(remember('0')) end
for i = 6, #A do
  if not redis.call('ZSCORE', K[3], A[i]) then return tonumber(remember('0')) end
end
for i = 6, #A do
  redis.call('ZREM', K[3], A[i])
  redis.call('HDEL', K[4], A[i])
  redis.call('HDEL', K[5], A[i])
end
local m = {}
for field in string.gmatch(old, '%S+') do m[#m + 1] = tonumber(field) end
local size = redis.call('ZCARD', K[3])
if size == 0 then
  redis.call('DEL', K[3], K[4])
  redis.call('HDEL', K[2], key)
  redis.call('ZREM', K[1], key)
else
  local oldest = redis.call('ZRANGE', K[3], 0, 0)[1]
  local first_at = tonumber((read_lp(redis.call('HGET', K[4], oldest), 1)))
  local due = math.min(first_at + m[5], m[3] + m[6])
  if size >= m[4] then due = first_at end
  redis.call('HSET', K[2], key, table.concat({size, fmt(first_at), fmt(m[3]), m[4],
    fmt(m[5]), fmt(m[6]), m[7]}, ' '))
  redis.call('ZADD', K[1], fmt(due), key)
end
redis.call('RPUSH', K[8], A[5])
redis.call('SADD', K[6], A[4])
redis.call(A[2], K[7], A[3] .. A[4])
remember('1')
return 1
