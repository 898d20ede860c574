-- ack: end reservations and count them as processed.
-- KEYS[1] {ns}:res   HASH jid -> reservation
-- KEYS[2] {ns}:exp   ZSET jid by expires_at
-- KEYS[3] {ns}:busy  ZSET jid by reserved_at
-- KEYS[4] {ns}:stats HASH processed, failures, p:<day>, f:<day>
-- ARGV[1] day (YYYY-MM-DD), ARGV[2..] jids. Returns how many reservations existed.
local n = 0
for i = 2, #ARGV do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('ZREM', KEYS[3], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[4], 'processed', n)
  redis.call('HINCRBY', KEYS[4], 'p:' .. ARGV[1], n)
end
return n
