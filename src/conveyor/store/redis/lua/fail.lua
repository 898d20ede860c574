-- fail: end a reservation, count a failure, and store the job in a sorted set (or discard it).
-- KEYS[1] {ns}:res       HASH jid -> reservation
-- KEYS[2] {ns}:exp       ZSET jid by expires_at
-- KEYS[3] {ns}:busy      ZSET jid by reserved_at
-- KEYS[4] {ns}:stats     HASH processed, failures, p:<day>, f:<day>
-- KEYS[5] {ns}:s:<set>   ZSET jid by score (target set; unused when discarding)
-- KEYS[6] {ns}:d:<set>   HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[1] jid, ARGV[2] day, ARGV[3] "1" to store / "" to discard, ARGV[4] score, ARGV[5] data
-- Returns 1, or 0 (changing nothing) when there was no reservation.
local jid = ARGV[1]
if redis.call('HDEL', KEYS[1], jid) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], jid)
redis.call('ZREM', KEYS[3], jid)
redis.call('HINCRBY', KEYS[4], 'processed', 1)
redis.call('HINCRBY', KEYS[4], 'failures', 1)
redis.call('HINCRBY', KEYS[4], 'p:' .. ARGV[2], 1)
redis.call('HINCRBY', KEYS[4], 'f:' .. ARGV[2], 1)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[4], jid)
  redis.call('HSET', KEYS[6], jid, ARGV[5])
end
return 1
