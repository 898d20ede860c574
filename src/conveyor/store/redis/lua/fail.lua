-- fail: end a reservation, count a failure, and store the job in a sorted set (or discard it).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:res       HASH jid -> reservation
-- KEYS[3] {ns}:exp       ZSET jid by expires_at
-- KEYS[4] {ns}:busy      ZSET jid by reserved_at
-- KEYS[5] {ns}:stats     HASH processed, failures, p:<day>, f:<day>
-- KEYS[6] {ns}:s:<set>   ZSET jid by score (target set; unused when discarding)
-- KEYS[7] {ns}:d:<set>   HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[3] jid, ARGV[4] day, ARGV[5] "1" to store / "" to discard, ARGV[6] score, ARGV[7] data
-- Returns 1, or 0 (changing nothing) when there was no reservation.
local done = replay()
if done then
  return tonumber(done)
end
local jid = ARGV[3]
if redis.call('HDEL', KEYS[2], jid) == 0 then
  remember('0')
  return 0
end
redis.call('ZREM', KEYS[3], jid)
redis.call('ZREM', KEYS[4], jid)
redis.call('HINCRBY', KEYS[5], 'processed', 1)
redis.call('HINCRBY', KEYS[5], 'failures', 1)
redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[4], 1)
redis.call('HINCRBY', KEYS[5], 'f:' .. ARGV[4], 1)
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[6], ARGV[6], jid)
  redis.call('HSET', KEYS[7], jid, ARGV[7])
end
remember('1')
return 1
