-- records_put: store records, replacing whatever was under their keys.
-- KEYS[1] {ns}:r:<space>  KEYS[2] {ns}:rx:<space>  KEYS[3] {ns}:rspaces  (see records_claim)
-- ARGV: space, then (key, value, expires_at or "") per record
for i = 2, #ARGV, 3 do
  local key, value, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', KEYS[1], key, lp(expires) .. value)
  if expires == '' then
    redis.call('ZREM', KEYS[2], key)
  else
    redis.call('ZADD', KEYS[2], expires, key)
  end
end
redis.call('SADD', KEYS[3], ARGV[1])
return true
