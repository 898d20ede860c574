-- records_claim: store a record unless a live record of another value holds its key.
-- KEYS[1] {ns}:r:<space>   HASH  key -> lp(expires_at or "") .. value
-- KEYS[2] {ns}:rx:<space>  ZSET  key by expires_at (records that expire)
-- KEYS[3] {ns}:rspaces     SET   spaces that hold records (for purge and flush)
-- ARGV: space, key, value, expires_at ("" = never), now
-- Returns false (nil) when stored, else the value of the record in the way.
local current = redis.call('HGET', KEYS[1], ARGV[2])
if current then
  local expires, pos = read_lp(current, 1)
  local value = string.sub(current, pos)
  local live = expires == '' or tonumber(expires) > tonumber(ARGV[5])
  if live and value ~= ARGV[3] then
    return value
  end
end
redis.call('HSET', KEYS[1], ARGV[2], lp(ARGV[4]) .. ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
end
redis.call('SADD', KEYS[3], ARGV[1])
return false
