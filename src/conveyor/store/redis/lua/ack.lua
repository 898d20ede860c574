-- ack: end reservations and count them as processed.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:res   HASH jid -> reservation
-- KEYS[3] {ns}:exp   ZSET jid by expires_at
-- KEYS[4] {ns}:busy  ZSET jid by reserved_at
-- KEYS[5] {ns}:stats HASH processed, failures, p:<day>, f:<day>
-- ARGV[3] day (YYYY-MM-DD), ARGV[4..] jids. Returns how many reservations existed.
local done = replay()
if done then
  return tonumber(done)
end
local n = 0
for i = 4, #ARGV do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[3], ARGV[i])
    redis.call('ZREM', KEYS[4], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[5], 'processed', n)
  redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[3], n)
end
remember(tostring(n))
return n
