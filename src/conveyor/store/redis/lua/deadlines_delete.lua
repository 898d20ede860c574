-- deadlines_delete: delete deadlines of one space (store/deadlines.py).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): the count, for its retries
-- KEYS[2] {ns}:dl:<space> ZSET; KEYS[3] {ns}:dv:<space> HASH.
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3..] keys. Returns how many there were.
local done = replay()
if done then
  return tonumber(done)
end
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
remember(tostring(n))
return n
