-- records_put: store records, replacing whatever was under their keys.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:r:<space>  KEYS[3] {ns}:rx:<space>  KEYS[4] {ns}:rspaces  (see records_claim)
-- ARGV[3..]: space, then (key, value, expires_at or "") per record
if replay() then
  return true
end
for i = 4, #ARGV, 3 do
  local key, value, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', KEYS[2], key, lp(expires) .. value)
  if expires == '' then
    redis.call('ZREM', KEYS[3], key)
  else
    redis.call('ZADD', KEYS[3], expires, key)
  end
end
redis.call('SADD', KEYS[4], ARGV[3])
remember('1')
return true
