-- records_claim: store a record unless a live record of another value holds its key.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:r:<space>   HASH  key -> lp(expires_at or "") .. value
-- KEYS[3] {ns}:rx:<space>  ZSET  key by expires_at (records that expire)
-- KEYS[4] {ns}:rspaces     SET   spaces that hold records (for purge and flush)
-- ARGV[3..]: space, key, value, expires_at ("" = never), now
-- Returns false (nil) when stored, else the value of the record in the way.
-- The token holds "0" (stored) or "1" .. the value in the way.
local done = replay()
if done then
  if done == '0' then return false end
  return string.sub(done, 2)
end
local current = redis.call('HGET', KEYS[2], ARGV[4])
if current then
  local expires, pos = read_lp(current, 1)
  local value = string.sub(current, pos)
  local live = expires == '' or tonumber(expires) > tonumber(ARGV[7])
  if live and value ~= ARGV[5] then
    remember('1' .. value)
    return value
  end
end
redis.call('HSET', KEYS[2], ARGV[4], lp(ARGV[6]) .. ARGV[5])
if ARGV[6] == '' then
  redis.call('ZREM', KEYS[3], ARGV[4])
else
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
end
redis.call('SADD', KEYS[4], ARGV[3])
remember('0')
return false
