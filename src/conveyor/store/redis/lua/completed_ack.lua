-- completed_ack: end reservations, count them as processed, and keep each job in the completed
-- set (store/completed.py): ack.lua and set_add.lua in one atomic step.
-- KEYS[1] {ns}:op:<token>   this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:res          HASH jid -> reservation
-- KEYS[3] {ns}:exp          ZSET jid by expires_at
-- KEYS[4] {ns}:busy         ZSET jid by reserved_at
-- KEYS[5] {ns}:stats        HASH processed, failures, p:<day>, f:<day>
-- KEYS[6] {ns}:s:completed  ZSET jid by expiry
-- KEYS[7] {ns}:d:completed  HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[3] day (YYYY-MM-DD), then (jid, score, data) per job.
-- Returns how many reservations existed.
local done = replay()
if done then
  return tonumber(done)
end
local n = 0
for i = 4, #ARGV, 3 do
  local jid = ARGV[i]
  if redis.call('HDEL', KEYS[2], jid) == 1 then
    redis.call('ZREM', KEYS[3], jid)
    redis.call('ZREM', KEYS[4], jid)
    redis.call('ZADD', KEYS[6], ARGV[i + 1], jid)
    redis.call('HSET', KEYS[7], jid, ARGV[i + 2])
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[5], 'processed', n)
  redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[3], n)
end
remember(tostring(n))
return n
