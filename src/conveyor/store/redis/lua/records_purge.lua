-- records_purge: delete up to ARGV[4] records of one space that expired by ARGV[3].
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:r:<space>  KEYS[3] {ns}:rx:<space>  KEYS[4] {ns}:rspaces
-- ARGV[3..]: now, limit, space.  Returns how many were deleted; forgets the space once it is
-- empty.
local done = replay()
if done then
  return tonumber(done)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
for _, key in ipairs(expired) do
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[5])
end
remember(tostring(#expired))
return #expired
