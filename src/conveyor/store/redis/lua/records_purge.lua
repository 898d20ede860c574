-- records_purge: delete up to ARGV[2] records of one space that expired by ARGV[1].
-- KEYS[1] {ns}:r:<space>  KEYS[2] {ns}:rx:<space>  KEYS[3] {ns}:rspaces
-- ARGV: now, limit, space.  Returns how many were deleted; forgets the space once it is empty.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, key in ipairs(expired) do
  redis.call('HDEL', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[3])
end
return #expired
