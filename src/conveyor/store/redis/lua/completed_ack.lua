-- completed_ack: end reservations, count them as processed, and keep each job in the completed
-- set (store/completed.py): ack.lua and set_add.lua in one atomic step.
-- KEYS[1] {ns}:res          HASH jid -> reservation
-- KEYS[2] {ns}:exp          ZSET jid by expires_at
-- KEYS[3] {ns}:busy         ZSET jid by reserved_at
-- KEYS[4] {ns}:stats        HASH processed, failures, p:<day>, f:<day>
-- KEYS[5] {ns}:s:completed  ZSET jid by expiry
-- KEYS[6] {ns}:d:completed  HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[1] day (YYYY-MM-DD), then (jid, score, data) per job.
-- Returns how many reservations existed. A second run of the same call changes nothing (the
-- reservations are gone), so it is safe to send again after a lost reply.
local n = 0
for i = 2, #ARGV, 3 do
  local jid = ARGV[i]
  if redis.call('HDEL', KEYS[1], jid) == 1 then
    redis.call('ZREM', KEYS[2], jid)
    redis.call('ZREM', KEYS[3], jid)
    redis.call('ZADD', KEYS[5], ARGV[i + 1], jid)
    redis.call('HSET', KEYS[6], jid, ARGV[i + 2])
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[4], 'processed', n)
  redis.call('HINCRBY', KEYS[4], 'p:' .. ARGV[1], n)
end
return n
