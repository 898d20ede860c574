-- batches_purge: delete up to ARGV[2] marks that expired by ARGV[1].
-- KEYS[1] {ns}:marks  KEYS[2] {ns}:markx. Returns how many were deleted.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, jid in ipairs(expired) do
  redis.call('HDEL', KEYS[1], jid)
  redis.call('ZREM', KEYS[2], jid)
end
return #expired
